"""The work-order stage: ``workorders.raw`` (12345) → ``ledger.intake`` and ``ledger.commands``.

- A work order (工单) is triaged: 投诉 / 举报 open a ticket (red for 特急 ...); 表扬 counts as good and
  咨询 / 建议 make none (the rules in ``haochaping.domain.triage``). A later version of the same order
  maps to the same ticket id, so it opens nothing new.
- A call-back result (回访, recognised by its ``callback_id``) becomes a ``record_callback`` command on
  the order's ticket, published to ``ledger.commands`` like an officer's action, with the command id
  ``callback:<callback_id>`` (a resent call-back is recognised by the ledger). The citizen counts as
  satisfied when the problem is solved and the rating is 基本满意 or better; otherwise the ticket is
  reopened. The ledger refuses it (a ``refused`` event) when the ticket is not waiting for a call-back,
  and dead-letters it when the order never opened a ticket. Call-backs are not turned into ratings on
  ``reviews.accepted``: a call-back judges the handling of a complaint, not a service at a window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from haochaping.domain.contract import WorkOrder, WorkOrderCallback
from haochaping.domain.ledger import ticket_id_for
from haochaping.domain.records import Actor, CommandAction, LedgerCommand, LedgerIntake, Role
from haochaping.domain.triage import Triage, TriageRules
from streams.batch import LEDGER_COMMANDS, LEDGER_INTAKE, BatchResult, Incoming, describe_json_error

_INTAKE = TypeAdapter(LedgerIntake)
_COMMAND = TypeAdapter(LedgerCommand)
# The hotline acts as a supervisor would when it records the citizen's answer.
HOTLINE_ACTOR = Actor(user_id="12345-hotline", role=Role.SUPERVISOR)


class WorkOrderStage:
    def __init__(self, triage: Triage) -> None:
        self.triage = triage

    @classmethod
    def from_rules(cls, rules: TriageRules) -> WorkOrderStage:
        return cls(Triage(rules))

    def process(self, batch: Sequence[Incoming], lookup: Any = None) -> BatchResult:
        result = BatchResult()
        for record in batch:
            try:
                data = orjson.loads(record.value)
            except orjson.JSONDecodeError as exc:
                result.dead_letter(
                    record, stage="streams.workorders", reason=describe_json_error(record.value, exc)
                )
                continue
            is_callback = isinstance(data, dict) and "callback_id" in data
            try:
                if is_callback:
                    self._callback(WorkOrderCallback.model_validate(data), result)
                else:
                    self._order(WorkOrder.model_validate(data), result)
            except ValidationError as exc:
                what = "call-back (workorder-callback)" if is_callback else "work order (workorder)"
                result.dead_letter(
                    record,
                    stage="streams.workorders",
                    reason=f"the record is not a valid {what}; see problems and `haochaping schema`",
                    error=exc,
                )
        return result

    def _order(self, order: WorkOrder, result: BatchResult) -> None:
        triaged = self.triage.triage_workorder(order)
        if triaged is None:
            result.counts[f"no_ticket.{order.kind.value}"] += 1
            return
        ticket_id = ticket_id_for("workorder", order.order_id)
        intake = LedgerIntake(
            ticket_id=ticket_id,
            source="workorder",
            source_id=order.order_id,
            at=order.received_at or order.created_at,
            colour=triaged.colour,
            reasons=triaged.reasons,
            order=order,
        )
        result.emit(LEDGER_INTAKE, ticket_id, _INTAKE.dump_json(intake))
        result.counts[f"intake.{triaged.colour.value}"] += 1

    def _callback(self, callback: WorkOrderCallback, result: BatchResult) -> None:
        ticket_id = ticket_id_for("workorder", callback.order_id)
        satisfied = callback.resolved and callback.level.is_satisfied
        command = LedgerCommand(
            command_id=f"callback:{callback.callback_id}",
            ticket_id=ticket_id,
            action=CommandAction.RECORD_CALLBACK,
            actor=HOTLINE_ACTOR,
            at=callback.called_at,
            payload={"satisfied": satisfied, "note": callback.text or "", "stars": callback.stars},
        )
        result.emit(LEDGER_COMMANDS, ticket_id, _COMMAND.dump_json(command))
        result.counts["callback"] += 1
