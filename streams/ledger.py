"""The ledger stage: ``ledger.intake`` + ``ledger.commands`` → the ticket table and ``ledger.events``.

Both sources are keyed by ticket id with the same partition count, so one worker owns a ticket alone
and the ticket table (key: ticket id) is written only from the partition of the records that change
it. The state machine, the deadlines and the working-day clock are ``haochaping.domain.ledger`` and
``haochaping.domain.workdays``; this module only orders the work of a batch and keeps the table.

Table value (JSON): ``{"p": partition, "ticket": Ticket, "applied": [command ids]}``. ``applied`` holds
the ids of the commands already decided for the ticket (the last :data:`APPLIED_KEPT`), so a batch
replayed after a crash between writing the table and committing offsets neither applies a command
twice nor refuses it the second time. ``p`` lets the deadline timer pick the tickets of the
partitions this worker owns.

Every change leaves one event on ``ledger.events`` (the audit trail); a refused command leaves a
``refused`` event with the reason and the unchanged ticket. Alerts: a new red ticket (急事急办), a
ticket near its deadline (预警) and an overdue one (escalated one colour).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from haochaping.domain.config import DomainConfig
from haochaping.domain.ledger import (
    CLOCK_RUNNING,
    DeadlinePolicy,
    apply_command,
    check_deadlines,
    open_from_intake,
    warning_point,
)
from haochaping.domain.records import (
    Alert,
    AlertKind,
    Colour,
    LedgerCommand,
    LedgerEvent,
    LedgerEventType,
    Ticket,
)
from haochaping.domain.workdays import WorkCalendar
from haochaping.settings import Settings
from streams.batch import ALERTS, LEDGER_COMMANDS, LEDGER_EVENTS, BatchResult, Incoming, describe_json_error
from streams.intake import DeadlineTick, parse_intake

APPLIED_KEPT = 200
_EVENT = TypeAdapter(LedgerEvent)
_ALERT = TypeAdapter(Alert)
_TICK = TypeAdapter(DeadlineTick)
_TICKET_JSON = TypeAdapter(Ticket).dump_json
_ALERT_FOR = {
    LedgerEventType.WARNED: AlertKind.WARNING,
    LedgerEventType.ESCALATED: AlertKind.OVERDUE,
}


class _State:
    __slots__ = ("applied", "partition", "ticket")

    def __init__(self, partition: int, ticket: Ticket, applied: list[str]) -> None:
        self.partition = partition
        self.ticket = ticket
        self.applied = applied

    @classmethod
    def decode(cls, raw: bytes) -> _State:
        data = orjson.loads(raw)
        return cls(data["p"], Ticket.model_validate(data["ticket"]), list(data.get("applied", ())))

    def encode(self) -> bytes:
        # The JSON of {"p": ..., "ticket": ticket.model_dump(mode="json"), "applied": [...]}, with the
        # ticket written by pydantic straight to JSON: going through Python dicts cost three times as much.
        return b"".join(
            (
                b'{"p":',
                str(self.partition).encode(),
                b',"ticket":',
                _TICKET_JSON(self.ticket),
                b',"applied":',
                orjson.dumps(self.applied[-APPLIED_KEPT:]),
                b"}",
            )
        )


def _earliest_check(ticket: Ticket, policy: DeadlinePolicy) -> datetime | None:
    """No ``check_deadlines`` finds anything for ``ticket`` before this moment (None: never, as stored).

    Mirrors the conditions of ``haochaping.domain.ledger.check_deadlines``: the clock must run, a
    deadline is escalated once, and 预警 comes at the warning point. It only has to be early, never
    late: the check itself still decides.
    """
    if ticket.status not in CLOCK_RUNNING or ticket.escalated_due == ticket.due:
        return None
    if ticket.warned:
        return ticket.due
    return min(ticket.due, warning_point(ticket, policy.warning_share))


class LedgerStage:
    def __init__(self, calendar: WorkCalendar, policy: DeadlinePolicy) -> None:
        self.calendar = calendar
        self.policy = policy
        self._earliest: dict[bytes, tuple[int, datetime | None]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, config: DomainConfig) -> LedgerStage:
        calendar = WorkCalendar.from_file(settings.streams.calendar_overrides_file)
        return cls(calendar, DeadlinePolicy(config.deadlines))

    def process(self, batch: Sequence[Incoming], lookup: Any) -> BatchResult:
        result = BatchResult()
        states: dict[str, _State | None] = {}

        def state_of(ticket_id: str) -> _State | None:
            if ticket_id not in states:
                raw = lookup(ticket_id.encode())
                states[ticket_id] = _State.decode(raw) if raw is not None else None
            return states[ticket_id]

        changed: dict[str, _State] = {}
        for record in batch:
            if record.topic == LEDGER_COMMANDS:
                self._command(record, result, state_of, changed)
            else:
                self._intake(record, result, state_of, states, changed)
        for ticket_id, state in changed.items():
            result.write(state.partition, ticket_id.encode(), state.encode())
        return result

    # -- intake ----------------------------------------------------------------------------------

    def _intake(
        self,
        record: Incoming,
        result: BatchResult,
        state_of: Any,
        states: dict[str, _State | None],
        changed: dict[str, _State],
    ) -> None:
        try:
            item = parse_intake(record.value)
        except (ValueError, ValidationError) as exc:
            reason = (
                "the record is not a valid ledger intake (LedgerIntake or DeadlineTick)"
                if isinstance(exc, ValidationError)
                else describe_json_error(record.value, exc)
            )
            result.dead_letter(record, stage="streams.ledger", reason=reason, error=exc)
            return
        state = state_of(item.ticket_id)
        if isinstance(item, DeadlineTick):
            if state is None:
                result.counts["tick.unknown_ticket"] += 1
                return
            events = check_deadlines(state.ticket, item.now, self.calendar, self.policy)
            for event in events:
                self._emit(event, result)
                state.ticket = event.ticket
            if events:
                changed[item.ticket_id] = state
            return
        if state is not None:
            result.counts["intake.already_open"] += 1
            return
        event = open_from_intake(item, calendar=self.calendar, policy=self.policy)
        new = _State(record.partition, event.ticket, [])
        states[item.ticket_id] = new
        changed[item.ticket_id] = new
        self._emit(event, result)
        result.counts[f"opened.{event.ticket.colour.value}"] += 1
        if event.ticket.colour is Colour.RED:
            self._alert(event, AlertKind.RED_TICKET, result)

    # -- commands --------------------------------------------------------------------------------

    def _command(
        self, record: Incoming, result: BatchResult, state_of: Any, changed: dict[str, _State]
    ) -> None:
        try:
            command = LedgerCommand.model_validate_json(record.value)
        except ValidationError as exc:
            result.dead_letter(
                record,
                stage="streams.ledger",
                reason="the record is not a valid ledger command (see problems)",
                error=exc,
            )
            return
        state = state_of(command.ticket_id)
        if state is None:
            result.dead_letter(
                record,
                stage="streams.ledger",
                reason=f"no ticket {command.ticket_id!r} on the ledger: check the ticket id of command {command.command_id}",
            )
            return
        if command.command_id in state.applied:
            result.counts["command.replayed"] += 1
            return
        event = apply_command(state.ticket, command)
        state.applied.append(command.command_id)
        state.ticket = event.ticket
        changed[command.ticket_id] = state
        self._emit(event, result)

    # -- deadlines -------------------------------------------------------------------------------

    def ticks_due(
        self, items: Iterable[tuple[bytes, bytes]], now: datetime, owned: Collection[int]
    ) -> list[tuple[bytes, bytes]]:
        """``(ticket key, DeadlineTick)`` for every stored ticket owned here that has a check due.

        The scan runs every few seconds over the whole table, and decoding every stored ticket each
        time cost more than the checks. A value that has not changed since the last scan is the same
        bytes in the table, so for each one the scan keeps only its partition and the earliest moment
        a check could find something (:func:`_earliest_check`); a ticket is decoded again when its
        value changes or that moment has come, and the domain's ``check_deadlines`` decides as before.
        Only the values of this scan are kept, so the cache never outgrows the table (a few hundred
        bytes per ticket, not the decoded ticket).
        """
        kept: dict[bytes, tuple[int, datetime | None]] = {}
        out: list[tuple[bytes, bytes]] = []
        previous = self._earliest
        for key, raw in items:
            cached = previous.get(raw)
            if cached is None:
                state = _State.decode(raw)
                cached = (state.partition, _earliest_check(state.ticket, self.policy))
            kept[raw] = cached
            partition, earliest = cached
            if partition in owned and earliest is not None and now >= earliest:
                tick = self._tick(_State.decode(raw), now, owned)
                if tick is not None:
                    out.append((key, tick))
        self._earliest = kept
        return out

    def tick_for(self, raw: bytes, now: datetime, owned: Collection[int]) -> bytes | None:
        """A DeadlineTick for the ticket stored as ``raw`` if it is owned here and a check is due."""
        return self._tick(_State.decode(raw), now, owned)

    def _tick(self, state: _State, now: datetime, owned: Collection[int]) -> bytes | None:
        if state.partition not in owned:
            return None
        if not check_deadlines(state.ticket, now, self.calendar, self.policy):
            return None
        return _TICK.dump_json(DeadlineTick(ticket_id=state.ticket.ticket_id, now=now))

    # -- output ----------------------------------------------------------------------------------

    def _emit(self, event: LedgerEvent, result: BatchResult) -> None:
        result.emit(LEDGER_EVENTS, event.ticket_id, _EVENT.dump_json(event))
        result.counts[f"event.{event.type.value}"] += 1
        kind = _ALERT_FOR.get(event.type)
        if kind is not None:
            self._alert(event, kind, result)

    def _alert(self, event: LedgerEvent, kind: AlertKind, result: BatchResult) -> None:
        ticket = event.ticket
        alert = Alert(
            alert_id=f"{kind.value}:{event.event_id}",
            kind=kind,
            at=event.at,
            unit_code=ticket.unit_code,
            ticket_id=ticket.ticket_id,
            colour=ticket.colour,
            detail=event.reason or f"{kind.value}: ticket {ticket.ticket_id} ({ticket.colour.value})",
        )
        result.emit(ALERTS, ticket.unit_code, _ALERT.dump_json(alert))
        result.counts[f"alert.{kind.value}"] += 1
