"""The problem ledger (问题台账): opening tickets, the state machine of their life, deadlines.

Pure functions from (ticket, input) to a :class:`LedgerEvent` that carries the ticket after the
change. The stream keeps the latest ticket per id and appends every event to ``ledger.events``;
:func:`replay` rebuilds the ledger from that trail.

The life of a ticket::

    new ─assign→ assigned ─start_rectifying→ rectifying ─report_rectified→ rectified
    rectified ─record_callback(satisfied)→ called_back ─close (supervisor)→ closed (销号)
    rectified ─record_callback(not satisfied)→ rectifying          (CALLBACK_FAILED: reopened)
    new / assigned / rectifying ─appeal→ appealed ─accept_appeal→ void
                                                  ─reject_appeal→ back to where it was
    assigned / rectifying ─request_not_fixable→ not_fixable_requested ─approve_not_fixable→ not_fixable
                                                                     ─reject_not_fixable→ back
    assign again while assigned: re-assigns (another person, or a supervisor changes the unit).

closed, void and not_fixable are final. Who may act: an auditor may do nothing; a unit officer acts
only on tickets of their own unit and cannot change the unit; accept / reject an appeal, approve /
reject a not-fixable request and close need a supervisor.

Deadlines (:func:`check_deadlines`) run while the unit has work to do (new, assigned, rectifying).
While an appeal or a not-fixable request waits for a supervisor the ticket is not escalated; when
the request is rejected the original deadline applies again. 预警 (WARNED) comes once per deadline,
when ``warning_share`` of the calendar time from its start to the deadline has passed. An overdue
ticket is ESCALATED once per deadline: up one colour with a new resolution deadline for the new
colour counted from the moment of escalation (the unit gets the time of the more urgent colour, not
more); a red ticket stays red, keeps its deadline and is reported once. A deadline passed before any
warning escalates without a late warning.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from haochaping.domain.config import DeadlinesConfig, load_config
from haochaping.domain.contract import UNIT_PATTERN, Channel, Review, WorkOrder
from haochaping.domain.records import (
    Colour,
    CommandAction,
    LedgerCommand,
    LedgerEvent,
    LedgerEventType,
    LedgerIntake,
    Role,
    Ticket,
    TicketStatus,
)
from haochaping.domain.records import CommandAction as A
from haochaping.domain.records import TicketStatus as S
from haochaping.domain.triage import TriageResult, more_urgent
from haochaping.domain.workdays import Deadline, WorkCalendar

SYSTEM = "system"
FINAL: frozenset[TicketStatus] = frozenset({S.CLOSED, S.VOID, S.NOT_FIXABLE})
# The unit has work to do: the deadline clock runs.
CLOCK_RUNNING: frozenset[TicketStatus] = frozenset({S.NEW, S.ASSIGNED, S.RECTIFYING})
SUPERVISOR_ONLY: frozenset[CommandAction] = frozenset(
    {A.ACCEPT_APPEAL, A.REJECT_APPEAL, A.APPROVE_NOT_FIXABLE, A.REJECT_NOT_FIXABLE, A.CLOSE}
)

# action -> statuses it is allowed from, and what the reader is told when it is not
ALLOWED_FROM: dict[CommandAction, tuple[frozenset[TicketStatus], str]] = {
    A.ASSIGN: (frozenset({S.NEW, S.ASSIGNED}), "only a new or assigned ticket can be assigned"),
    A.START_RECTIFYING: (frozenset({S.ASSIGNED}), "it must be assigned (交办) first"),
    A.REPORT_RECTIFIED: (frozenset({S.RECTIFYING}), "rectification must have started first"),
    A.RECORD_CALLBACK: (frozenset({S.RECTIFIED}), "it must be reported rectified first"),
    A.APPEAL: (
        frozenset({S.NEW, S.ASSIGNED, S.RECTIFYING}),
        "an appeal is possible only before it is rectified",
    ),
    A.ACCEPT_APPEAL: (frozenset({S.APPEALED}), "there is no appeal to decide"),
    A.REJECT_APPEAL: (frozenset({S.APPEALED}), "there is no appeal to decide"),
    A.REQUEST_NOT_FIXABLE: (
        frozenset({S.ASSIGNED, S.RECTIFYING}),
        "only an assigned ticket or one being rectified can be declared not fixable",
    ),
    A.APPROVE_NOT_FIXABLE: (
        frozenset({S.NOT_FIXABLE_REQUESTED}),
        "there is no not-fixable request to decide",
    ),
    A.REJECT_NOT_FIXABLE: (frozenset({S.NOT_FIXABLE_REQUESTED}), "there is no not-fixable request to decide"),
    A.CLOSE: (frozenset({S.CALLED_BACK}), "it must be called back first"),
}

_VERB = {
    A.ASSIGN: "assign",
    A.START_RECTIFYING: "start rectifying",
    A.REPORT_RECTIFIED: "report as rectified",
    A.RECORD_CALLBACK: "record a call-back on",
    A.APPEAL: "appeal",
    A.ACCEPT_APPEAL: "accept the appeal of",
    A.REJECT_APPEAL: "reject the appeal of",
    A.REQUEST_NOT_FIXABLE: "declare not fixable",
    A.APPROVE_NOT_FIXABLE: "approve not fixable for",
    A.REJECT_NOT_FIXABLE: "reject not fixable for",
    A.CLOSE: "close",
}
_UNIT = re.compile(UNIT_PATTERN)


def ticket_id_for(source: str, source_id: str) -> str:
    """Deterministic and short: the same review or work order always gets the same ticket id."""
    digest = hashlib.blake2b(f"{source}\x1f{source_id}".encode(), digest_size=8).hexdigest()
    return f"TK-{digest}"


@dataclass(frozen=True)
class DeadlinePolicy:
    """Deadlines per colour (call-back and resolution) and the 预警 share; see ``rules.yaml``."""

    deadlines: DeadlinesConfig = field(default_factory=DeadlinesConfig)

    @classmethod
    def load(cls, path: Path | None = None) -> DeadlinePolicy:
        return cls(load_config(path).deadlines)

    @property
    def warning_share(self) -> float:
        return self.deadlines.warning_share

    def callback_due(self, colour: Colour, start: datetime, calendar: WorkCalendar) -> Deadline:
        spec = self.deadlines.for_colour(colour)
        if spec.callback_hours is not None:
            return calendar.add_hours(start, spec.callback_hours)
        assert spec.callback_working_days is not None  # the config validator guarantees one of the two
        return calendar.add_working_days(start, spec.callback_working_days)

    def resolution_due(self, colour: Colour, start: datetime, calendar: WorkCalendar) -> Deadline:
        return calendar.add_working_days(start, self.deadlines.for_colour(colour).resolution_working_days)


def make_intake(
    *,
    source: Literal["review", "workorder"],
    source_id: str,
    at: datetime,
    triage: TriageResult,
    review: Review | None = None,
    order: WorkOrder | None = None,
) -> LedgerIntake:
    """The ``ledger.intake`` record for a triaged item, keyed by its ticket id."""
    return LedgerIntake(
        ticket_id=ticket_id_for(source, source_id),
        source=source,
        source_id=source_id,
        at=at,
        colour=triage.colour,
        reasons=triage.reasons,
        review=review,
        order=order,
    )


def open_ticket(
    *,
    source: Literal["review", "workorder"],
    source_id: str,
    opened_at: datetime,
    triage: TriageResult,
    review: Review | None = None,
    order: WorkOrder | None = None,
    calendar: WorkCalendar,
    policy: DeadlinePolicy,
) -> LedgerEvent:
    """The OPENED event (version 1) of the ticket for one triaged review or work order."""
    if (review is None) == (order is None):
        raise ValueError("open_ticket needs exactly one of review= and order=")
    if (source == "review") != (review is not None):
        raise ValueError(f"source {source!r} does not match the item given (review= or order=)")
    colour = triage.colour
    callback = policy.callback_due(colour, opened_at, calendar)
    resolution = policy.resolution_due(colour, opened_at, calendar)
    ticket_id = ticket_id_for(source, source_id)
    common: dict[str, Any] = {
        "ticket_id": ticket_id,
        "version": 1,
        "source": source,
        "source_id": source_id,
        "opened_at": opened_at,
        "colour": colour,
        "original_colour": colour,
        "reasons": triage.reasons,
        "callback_due": callback.at,
        "due": resolution.at,
        "calendar_warning": resolution.warning or callback.warning,
    }
    if review is not None:
        ticket = Ticket(
            **common,
            region_code=review.region_code,
            hall_id=review.hall_id,
            window_id=review.window_id,
            staff_id=review.staff_id,
            item_code=review.item_code,
            channel=review.channel,
            stars=review.stars,
            case_no=review.case_no,
            text=review.text,
            real_name=review.real_name,
            unit_code=review.unit_code,
            unit_name=review.unit_name,
        )
    else:
        assert order is not None
        text = f"{order.title}: {order.text}" if order.title else order.text
        ticket = Ticket(
            **common,
            region_code=order.region_code,
            item_code=order.item_code,
            channel=Channel.HOTLINE,
            case_no=order.case_no,
            text=text,
            real_name=order.real_name,
            unit_code=order.unit_code,
            unit_name=order.unit_name,
        )
    return LedgerEvent(
        event_id=f"{ticket_id}:1",
        ticket_id=ticket_id,
        type=LedgerEventType.OPENED,
        at=opened_at,
        actor=SYSTEM,
        ticket=ticket,
    )


def open_from_intake(intake: LedgerIntake, *, calendar: WorkCalendar, policy: DeadlinePolicy) -> LedgerEvent:
    return open_ticket(
        source=intake.source,
        source_id=intake.source_id,
        opened_at=intake.at,
        triage=TriageResult(intake.colour, intake.reasons),
        review=intake.review,
        order=intake.order,
        calendar=calendar,
        policy=policy,
    )


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _refuse(ticket: Ticket, command: LedgerCommand, reason: str) -> LedgerEvent:
    return LedgerEvent(
        event_id=f"{ticket.ticket_id}:refused:{command.command_id}",
        ticket_id=ticket.ticket_id,
        type=LedgerEventType.REFUSED,
        at=command.at,
        actor=command.actor.user_id,
        command_id=command.command_id,
        reason=reason,
        ticket=ticket,
    )


def _text(payload: dict[str, Any], key: str, *, required: bool, action: CommandAction) -> str | None:
    value = payload.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _Refused(f"{action.value} needs payload.{key}: a non-empty text")
        return None
    if not isinstance(value, str):
        raise _Refused(f"payload.{key} must be text, got {type(value).__name__}")
    return value.strip()


def _measures(payload: dict[str, Any]) -> tuple[str, ...] | None:
    value = payload.get("measures")
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(m, str) and m.strip() for m in value):
        raise _Refused("payload.measures must be a list of non-empty texts (整改措施)")
    return tuple(m.strip() for m in value)


def _authorise(ticket: Ticket, command: LedgerCommand) -> None:
    actor = command.actor
    verb = _VERB[command.action]
    if actor.role is Role.AUDITOR:
        raise _Refused(
            f"{actor.user_id} is an auditor: an auditor may read the ledger but not {verb} a ticket"
        )
    if actor.role is Role.UNIT_OFFICER:
        if command.action in SUPERVISOR_ONLY:
            raise _Refused(f"only a supervisor may {verb} a ticket; {actor.user_id} is a unit officer")
        if actor.unit_code != ticket.unit_code:
            raise _Refused(
                f"{actor.user_id} acts for unit {actor.unit_code or '(none)'}; "
                f"this ticket belongs to unit {ticket.unit_code} ({ticket.unit_name})"
            )


def _transition(ticket: Ticket, command: LedgerCommand) -> tuple[LedgerEventType, dict[str, Any], str | None]:
    """The event type, the changes to the ticket and the event's reason, or _Refused."""
    action, payload = command.action, command.payload
    if action is A.ASSIGN:
        person = _text(payload, "responsible_person", required=True, action=action)
        changes: dict[str, Any] = {"status": S.ASSIGNED, "responsible_person": person}
        unit_code = _text(payload, "unit_code", required=False, action=action)
        if unit_code is not None and unit_code != ticket.unit_code:
            if command.actor.role is not Role.SUPERVISOR:
                raise _Refused(
                    "only a supervisor may hand a ticket to another unit (谁办理谁负责 is the default)"
                )
            if not _UNIT.match(unit_code):
                raise _Refused(
                    f"payload.unit_code {unit_code!r} is not a 统一社会信用代码 (18 characters, digits and capitals)"
                )
            unit_name = _text(payload, "unit_name", required=True, action=action)
            changes.update(unit_code=unit_code, unit_name=unit_name)
        measures = _measures(payload)
        if measures is not None:
            changes["measures"] = measures
        return LedgerEventType.ASSIGNED, changes, None
    if action is A.START_RECTIFYING:
        changes = {"status": S.RECTIFYING}
        measures = _measures(payload)
        if measures is not None:
            changes["measures"] = measures
        return LedgerEventType.RECTIFYING, changes, _text(payload, "note", required=False, action=action)
    if action is A.REPORT_RECTIFIED:
        return (
            LedgerEventType.RECTIFIED,
            {"status": S.RECTIFIED},
            _text(payload, "note", required=False, action=action),
        )
    if action is A.RECORD_CALLBACK:
        satisfied = payload.get("satisfied")
        if not isinstance(satisfied, bool):
            raise _Refused("record_callback needs payload.satisfied: true or false (the citizen's answer)")
        note = _text(payload, "note", required=False, action=action)
        if satisfied:
            return LedgerEventType.CALLED_BACK, {"status": S.CALLED_BACK, "callback_ok": True}, note
        return LedgerEventType.CALLBACK_FAILED, {"status": S.RECTIFYING, "callback_ok": False}, note
    if action is A.APPEAL:
        reason = _text(payload, "reason", required=True, action=action)
        return LedgerEventType.APPEALED, {"status": S.APPEALED, "resume_status": ticket.status}, reason
    if action is A.ACCEPT_APPEAL:
        return (
            LedgerEventType.APPEAL_ACCEPTED,
            {"status": S.VOID, "resume_status": None},
            _text(payload, "reason", required=False, action=action),
        )
    if action is A.REQUEST_NOT_FIXABLE:
        explanation = _text(payload, "explanation", required=True, action=action)
        return (
            LedgerEventType.NOT_FIXABLE_REQUESTED,
            {"status": S.NOT_FIXABLE_REQUESTED, "resume_status": ticket.status},
            explanation,
        )
    if action is A.APPROVE_NOT_FIXABLE:
        return (
            LedgerEventType.NOT_FIXABLE_APPROVED,
            {"status": S.NOT_FIXABLE, "resume_status": None},
            _text(payload, "reason", required=False, action=action),
        )
    if action in (A.REJECT_APPEAL, A.REJECT_NOT_FIXABLE):
        back = ticket.resume_status or S.ASSIGNED
        kind = (
            LedgerEventType.APPEAL_REJECTED
            if action is A.REJECT_APPEAL
            else LedgerEventType.NOT_FIXABLE_REJECTED
        )
        return (
            kind,
            {"status": back, "resume_status": None},
            _text(payload, "reason", required=False, action=action),
        )
    if action is A.CLOSE:
        return (
            LedgerEventType.CLOSED,
            {"status": S.CLOSED, "closed_at": command.at},
            _text(payload, "note", required=False, action=action),
        )
    raise _Refused(f"unknown action {action!r}")  # pragma: no cover - the enum is closed


def apply_command(ticket: Ticket, command: LedgerCommand) -> LedgerEvent:
    """The applied change (version + 1) or a REFUSED event saying why; never raises for a bad command."""
    try:
        if command.ticket_id != ticket.ticket_id:
            raise _Refused(f"the command is for ticket {command.ticket_id}, not {ticket.ticket_id}")
        verb = _VERB[command.action]
        if ticket.status in FINAL:
            raise _Refused(f"cannot {verb} a ticket in status {ticket.status.value}: that status is final")
        _authorise(ticket, command)
        allowed, hint = ALLOWED_FROM[command.action]
        if ticket.status not in allowed:
            raise _Refused(f"cannot {verb} a ticket in status {ticket.status.value}: {hint}")
        kind, changes, reason = _transition(ticket, command)
    except _Refused as refused:
        return _refuse(ticket, command, refused.reason)
    version = ticket.version + 1
    after = ticket.model_copy(update={**changes, "version": version})
    return LedgerEvent(
        event_id=f"{ticket.ticket_id}:{version}",
        ticket_id=ticket.ticket_id,
        type=kind,
        at=command.at,
        actor=command.actor.user_id,
        command_id=command.command_id,
        reason=reason,
        ticket=after,
    )


def warning_point(ticket: Ticket, share: float) -> datetime:
    """When 预警 is due: ``share`` of the calendar time from the deadline's start to the deadline."""
    since = ticket.due_since or ticket.opened_at
    return since + (ticket.due - since) * share


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def check_deadlines(
    ticket: Ticket, now: datetime, calendar: WorkCalendar, policy: DeadlinePolicy
) -> list[LedgerEvent]:
    """WARNED or ESCALATED events due at ``now`` (at most one); empty when nothing is due."""
    if ticket.status not in CLOCK_RUNNING:
        return []
    version = ticket.version + 1
    if now > ticket.due and ticket.escalated_due != ticket.due:
        new_colour = more_urgent(ticket.colour)
        changes: dict[str, Any] = {"overdue": True, "escalated_due": ticket.due, "version": version}
        if new_colour is not ticket.colour:
            deadline = policy.resolution_due(new_colour, now, calendar)
            changes.update(colour=new_colour, due=deadline.at, due_since=now, warned=False)
            if deadline.warning:
                changes["calendar_warning"] = deadline.warning
            reason = (
                f"overdue since {_stamp(ticket.due)}: {ticket.colour.value} → {new_colour.value}, "
                f"new deadline {_stamp(deadline.at)}"
            )
        else:
            reason = f"overdue since {_stamp(ticket.due)}: already red, reported (通报)"
        kind = LedgerEventType.ESCALATED
    elif (
        not ticket.warned
        and ticket.escalated_due != ticket.due  # a deadline already escalated is past warning
        and now >= warning_point(ticket, policy.warning_share)
    ):
        changes = {"warned": True, "version": version}
        reason = f"预警: {round(policy.warning_share * 100)}% of the time used; due {_stamp(ticket.due)}"
        kind = LedgerEventType.WARNED
    else:
        return []
    return [
        LedgerEvent(
            event_id=f"{ticket.ticket_id}:{version}",
            ticket_id=ticket.ticket_id,
            type=kind,
            at=now,
            actor=SYSTEM,
            reason=reason,
            ticket=ticket.model_copy(update=changes),
        )
    ]


def apply_event(ledger: dict[str, Ticket], event: LedgerEvent) -> bool:
    """Takes the event's ticket when it is newer than the one held; False for a refusal or a repeat."""
    if event.type is LedgerEventType.REFUSED:
        return False
    held = ledger.get(event.ticket_id)
    if held is not None and held.version >= event.ticket.version:
        return False
    ledger[event.ticket_id] = event.ticket
    return True


def replay(events: Iterable[LedgerEvent]) -> dict[str, Ticket]:
    """The ledger rebuilt from the audit trail; redelivered or repeated events change nothing."""
    ledger: dict[str, Ticket] = {}
    for event in events:
        apply_event(ledger, event)
    return ledger
