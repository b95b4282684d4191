"""Records that flow between the parts after ingest: what streams writes and sinks / api read.

These are the internal contracts of the pipeline (the external one, what senders send, is
``contract.py``). All are JSON on Kafka (orjson), datetimes ISO 8601 with offset.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from haochaping.domain.contract import Channel, Review, WorkOrder


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FraudFlag(enum.StrEnum):
    """Reasons a rating is kept but left out of the official figures."""

    DEVICE_BURST = "device_burst"  # many top ratings from one device within minutes
    STAFF_BURST = "staff_burst"  # many top ratings for one staff member within minutes
    RATER_SPREE = "rater_spree"  # one rater rating many cases within minutes


class AcceptedReview(Review):
    """``reviews.accepted`` (key: unit code): a validated, deduplicated review with its fraud flags."""

    fraud_flags: tuple[FraudFlag, ...] = ()

    @property
    def official(self) -> bool:
        """Counts in the official 满意率 / 差评率 / score."""
        return not self.fraud_flags


class Colour(enum.StrEnum):
    """三色分级 by urgency and difficulty."""

    RED = "red"  # 红: 急事急办 / 特事特办
    YELLOW = "yellow"  # 黄: 联办, needs coordination or a change of process
    BLUE = "blue"  # 蓝: 常办, everyday matters


class TicketStatus(enum.StrEnum):
    """A ticket's life on the problem ledger (问题台账)."""

    NEW = "new"  # 新建
    ASSIGNED = "assigned"  # 已交办
    RECTIFYING = "rectifying"  # 整改中
    RECTIFIED = "rectified"  # 已整改
    CALLED_BACK = "called_back"  # 已回访
    CLOSED = "closed"  # 已销号
    APPEALED = "appealed"  # 申诉中
    VOID = "void"  # 无效差评 (appeal accepted)
    NOT_FIXABLE_REQUESTED = "not_fixable_requested"  # 申请无法整改 (explained)
    NOT_FIXABLE = "not_fixable"  # 无法整改 (approved)


class TriageReason(_Record):
    rule: str  # rule id from the rules file, e.g. "red.integrity"
    colour: Colour
    terms: tuple[str, ...] = ()  # matched terms, as written in the rules file


class Ticket(_Record):
    """The current state of one ticket: the problem, who answers for it, what is done by when."""

    ticket_id: str
    version: int  # increases by one with every applied change
    source: Literal["review", "workorder"]
    source_id: str  # review event id or work-order id
    opened_at: datetime
    # 问题清单
    colour: Colour
    original_colour: Colour
    reasons: tuple[TriageReason, ...]
    region_code: str
    hall_id: str | None = None
    window_id: str | None = None
    staff_id: str | None = None
    item_code: str | None = None
    channel: Channel | None = None
    stars: int | None = None
    case_no: str | None = None
    text: str | None = None
    real_name: bool = False
    # 责任清单 (谁办理谁负责: the unit that handled the case, overridable on assignment)
    unit_code: str
    unit_name: str
    responsible_person: str | None = None
    # 任务清单
    measures: tuple[str, ...] = ()
    callback_due: datetime
    due: datetime
    status: TicketStatus = TicketStatus.NEW
    warned: bool = False
    overdue: bool = False
    callback_ok: bool | None = None
    closed_at: datetime | None = None
    calendar_warning: str | None = None  # set when a deadline ran past the official calendar
    # Where a rejected appeal or a rejected not-fixable request returns the ticket to.
    resume_status: TicketStatus | None = None
    # The deadline whose passing was last escalated: a deadline is escalated once, never twice.
    escalated_due: datetime | None = None
    # When the time to ``due`` started (the escalation that set it); None: at ``opened_at``.
    due_since: datetime | None = None


class LedgerIntake(_Record):
    """``ledger.intake`` (key: ticket id): a triaged review or work order that opens a ticket.

    ``ticket_id`` is ``ledger.ticket_id_for(source, source_id)``, so a reprocessed item lands on the
    same key and opens no second ticket. Exactly one of ``review`` / ``order`` is set.
    """

    ticket_id: str
    source: Literal["review", "workorder"]
    source_id: str
    at: datetime  # when the item was triaged: the ticket's opening time
    colour: Colour
    reasons: tuple[TriageReason, ...]
    review: Review | None = None
    order: WorkOrder | None = None


class LedgerEventType(enum.StrEnum):
    OPENED = "opened"
    ASSIGNED = "assigned"
    RECTIFYING = "rectifying"
    RECTIFIED = "rectified"
    CALLED_BACK = "called_back"
    CALLBACK_FAILED = "callback_failed"  # reopens the ticket
    CLOSED = "closed"
    APPEALED = "appealed"
    APPEAL_ACCEPTED = "appeal_accepted"
    APPEAL_REJECTED = "appeal_rejected"
    NOT_FIXABLE_REQUESTED = "not_fixable_requested"
    NOT_FIXABLE_APPROVED = "not_fixable_approved"
    NOT_FIXABLE_REJECTED = "not_fixable_rejected"
    WARNED = "warned"  # 预警: near its deadline
    ESCALATED = "escalated"  # overdue: up one colour, reported
    REFUSED = "refused"  # a command that the state machine did not allow; the ticket is unchanged


class LedgerEvent(_Record):
    """``ledger.events`` (key: ticket id): the append-only audit trail; enough to rebuild the ledger."""

    event_id: str  # unique: f"{ticket_id}:{version}" for changes, f"{ticket_id}:refused:{command_id}"
    ticket_id: str
    type: LedgerEventType
    at: datetime
    actor: str | None = None  # user id of the officer / supervisor, or "system"
    command_id: str | None = None  # the command that caused it, so the API can wait for its outcome
    reason: str | None = None  # why refused / why escalated / the appeal's reason, in words
    ticket: Ticket  # the ticket after the event (unchanged for REFUSED)


class CommandAction(enum.StrEnum):
    ASSIGN = "assign"  # 交办: payload {responsible_person, unit_code?, unit_name?, measures?}
    START_RECTIFYING = "start_rectifying"
    REPORT_RECTIFIED = "report_rectified"  # payload {note}
    RECORD_CALLBACK = "record_callback"  # 回访: payload {satisfied: bool, note}
    APPEAL = "appeal"  # 申诉: payload {reason}
    ACCEPT_APPEAL = "accept_appeal"
    REJECT_APPEAL = "reject_appeal"
    REQUEST_NOT_FIXABLE = "request_not_fixable"  # payload {explanation}
    APPROVE_NOT_FIXABLE = "approve_not_fixable"
    REJECT_NOT_FIXABLE = "reject_not_fixable"
    CLOSE = "close"  # 销号


class Role(enum.StrEnum):
    SUPERVISOR = "supervisor"
    UNIT_OFFICER = "unit_officer"
    AUDITOR = "auditor"


class Actor(_Record):
    user_id: str
    role: Role
    unit_code: str | None = None  # for unit officers: the one unit they act for


class LedgerCommand(_Record):
    """``ledger.commands`` (key: ticket id): an officer's or supervisor's action, published by the API."""

    command_id: str
    ticket_id: str
    action: CommandAction
    actor: Actor
    at: datetime
    payload: dict[str, Any] = Field(default_factory=dict)


class MinuteCounts(_Record):
    """``satisfaction.minute`` (key: the dimension tuple): counts per level within one minute.

    Emitted per processed batch as deltas (several records may share a minute and dimensions; add
    them up). Index i of ``counts`` is the number of ratings with i+1 stars.
    """

    minute: datetime
    region_code: str
    hall_id: str | None
    unit_code: str
    window_id: str | None
    staff_id: str | None
    item_code: str
    channel: Channel
    counts: tuple[int, int, int, int, int]
    fraud_counts: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)


class AlertKind(enum.StrEnum):
    WARNING = "warning"  # 预警: a ticket near its deadline
    OVERDUE = "overdue"  # 超期: escalated one colour
    SPIKE = "spike"  # a unit's bad-review rate jumped above its own baseline
    FRAUD = "fraud"  # a burst of top ratings / a rater spree
    RED_TICKET = "red_ticket"  # a new red ticket: 急事急办


class Alert(_Record):
    """``alerts`` (key: unit code)."""

    alert_id: str
    kind: AlertKind
    at: datetime
    unit_code: str
    ticket_id: str | None = None
    colour: Colour | None = None
    detail: str  # in words, for the board


class DeadLetter(_Record):
    """``deadletter``: what could not be processed, with the reason and the original bytes."""

    at: datetime
    stage: str  # e.g. "ingest.sms", "streams.validate"
    source_topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    reason: str
    problems: tuple[dict[str, str], ...] = ()  # Problem.as_dict() items, when validation failed
    original_b64: str  # the original bytes, base64
