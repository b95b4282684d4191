from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haochaping.domain.contract import BEIJING, Channel
from haochaping.domain.ledger import (
    ALLOWED_FROM,
    FINAL,
    DeadlinePolicy,
    apply_command,
    check_deadlines,
    make_intake,
    open_from_intake,
    open_ticket,
    replay,
    ticket_id_for,
    warning_point,
)
from haochaping.domain.records import (
    Actor,
    Colour,
    CommandAction,
    LedgerCommand,
    LedgerEvent,
    LedgerEventType,
    Role,
    Ticket,
    TicketStatus,
)
from haochaping.domain.triage import Triage, TriageRules
from haochaping.domain.workdays import WorkCalendar
from tests.domain.factories import OTHER_UNIT_CODE, UNIT_CODE, review_factory, workorder_factory

A = CommandAction
S = TicketStatus
CAL = WorkCalendar.from_file()
POLICY = DeadlinePolicy.load()
TRIAGE = Triage(TriageRules.load())
T0 = datetime(2026, 11, 25, 9, 30, tzinfo=BEIJING)  # a Wednesday

SUPERVISOR = Actor(user_id="sup-1", role=Role.SUPERVISOR)
OFFICER = Actor(user_id="off-1", role=Role.UNIT_OFFICER, unit_code=UNIT_CODE)
OTHER_OFFICER = Actor(user_id="off-2", role=Role.UNIT_OFFICER, unit_code=OTHER_UNIT_CODE)
AUDITOR = Actor(user_id="aud-1", role=Role.AUDITOR)
_ids = itertools.count()


def opened(text: str = "态度不好", stars: int = 1, at: datetime = T0) -> Ticket:
    review = review_factory(stars=stars, text=text, rated_at=at.isoformat())
    triage = TRIAGE.triage_review(review)
    assert triage is not None
    event = open_ticket(
        source="review",
        source_id=review.event_id,
        opened_at=at,
        triage=triage,
        review=review,
        calendar=CAL,
        policy=POLICY,
    )
    return event.ticket


def cmd(
    ticket: Ticket,
    action: CommandAction,
    actor: Actor = SUPERVISOR,
    at: datetime | None = None,
    **payload: Any,
) -> LedgerCommand:
    return LedgerCommand(
        command_id=f"c{next(_ids)}",
        ticket_id=ticket.ticket_id,
        action=action,
        actor=actor,
        at=at or T0 + timedelta(hours=1),
        payload=payload,
    )


def run(ticket: Ticket, action: CommandAction, actor: Actor = SUPERVISOR, **payload: Any) -> LedgerEvent:
    return apply_command(ticket, cmd(ticket, action, actor, **payload))


class TestOpening:
    def test_ticket_id_is_deterministic_and_short(self) -> None:
        tid = ticket_id_for("review", "dev-1")
        assert tid == ticket_id_for("review", "dev-1")
        assert tid != ticket_id_for("workorder", "dev-1")
        assert tid.startswith("TK-") and len(tid) == 19

    def test_blue_review_ticket(self) -> None:
        ticket = opened("态度不好")
        assert ticket.version == 1
        assert ticket.status is S.NEW
        assert ticket.colour is ticket.original_colour is Colour.BLUE
        assert ticket.reasons[0].rule == "blue.attitude"
        assert ticket.callback_due == datetime(2026, 11, 26, 23, 59, 59, tzinfo=BEIJING)
        assert ticket.due == datetime(2026, 12, 16, 23, 59, 59, tzinfo=BEIJING)
        assert (ticket.unit_code, ticket.window_id, ticket.staff_id, ticket.stars) == (
            UNIT_CODE,
            "w-07",
            "s-1031",
            1,
        )
        assert ticket.calendar_warning is None

    def test_red_ticket_calls_back_within_two_hours_and_resolves_in_one_working_day(self) -> None:
        friday_evening = datetime(2026, 11, 27, 18, 0, tzinfo=BEIJING)
        ticket = opened("乱收费", at=friday_evening)
        assert ticket.colour is Colour.RED
        assert ticket.callback_due == friday_evening + timedelta(hours=2)
        assert ticket.due == datetime(2026, 11, 30, 23, 59, 59, tzinfo=BEIJING)

    def test_yellow_five_working_days(self) -> None:
        assert opened("来回跑").due == datetime(2026, 12, 2, 23, 59, 59, tzinfo=BEIJING)

    def test_deadline_into_2027_carries_the_calendar_warning(self) -> None:
        ticket = opened("态度不好", at=datetime(2026, 12, 28, 10, tzinfo=BEIJING))
        assert ticket.calendar_warning is not None
        assert "official calendar for 2027 missing" in ticket.calendar_warning

    def test_opened_event(self) -> None:
        review = review_factory(stars=1, text="乱收费")
        triage = TRIAGE.triage_review(review)
        assert triage is not None
        intake = make_intake(source="review", source_id=review.event_id, at=T0, triage=triage, review=review)
        event = open_from_intake(intake, calendar=CAL, policy=POLICY)
        assert event.type is LedgerEventType.OPENED
        assert event.event_id == f"{intake.ticket_id}:1"
        assert event.ticket_id == intake.ticket_id == ticket_id_for("review", review.event_id)
        # the same item opens the same ticket, so reprocessing opens no second one
        assert open_from_intake(intake, calendar=CAL, policy=POLICY) == event

    def test_work_order_ticket(self) -> None:
        order = workorder_factory(title="投诉", urgency="extra_urgent")
        triage = TRIAGE.triage_workorder(order)
        assert triage is not None
        event = open_ticket(
            source="workorder",
            source_id=order.order_id,
            opened_at=order.created_at,
            triage=triage,
            order=order,
            calendar=CAL,
            policy=POLICY,
        )
        assert event.ticket.channel is Channel.HOTLINE
        assert event.ticket.colour is Colour.RED
        assert event.ticket.text == "投诉: 办理营业执照等了两个小时"
        assert event.ticket_id == ticket_id_for("workorder", order.order_id)

    def test_exactly_one_item(self) -> None:
        triage = TRIAGE.triage_review(review_factory(stars=1))
        assert triage is not None
        with pytest.raises(ValueError, match="exactly one of review= and order="):
            open_ticket(
                source="review", source_id="x", opened_at=T0, triage=triage, calendar=CAL, policy=POLICY
            )


class TestLife:
    def test_whole_life_to_closed(self) -> None:
        t = opened()
        steps: list[tuple[CommandAction, Actor, dict[str, Any], LedgerEventType, TicketStatus]] = [
            (
                A.ASSIGN,
                SUPERVISOR,
                {"responsible_person": "张科长", "measures": ["约谈"]},
                LedgerEventType.ASSIGNED,
                S.ASSIGNED,
            ),
            (A.START_RECTIFYING, OFFICER, {}, LedgerEventType.RECTIFYING, S.RECTIFYING),
            (A.REPORT_RECTIFIED, OFFICER, {"note": "已培训"}, LedgerEventType.RECTIFIED, S.RECTIFIED),
            (A.RECORD_CALLBACK, OFFICER, {"satisfied": True}, LedgerEventType.CALLED_BACK, S.CALLED_BACK),
            (A.CLOSE, SUPERVISOR, {}, LedgerEventType.CLOSED, S.CLOSED),
        ]
        for version, (action, actor, payload, kind, status) in enumerate(steps, start=2):
            event = run(t, action, actor, **payload)
            assert (event.type, event.ticket.status, event.ticket.version) == (kind, status, version)
            assert event.event_id == f"{t.ticket_id}:{version}"
            t = event.ticket
        assert t.responsible_person == "张科长" and t.measures == ("约谈",)
        assert t.callback_ok is True and t.closed_at is not None

    def test_close_before_callback_is_refused_with_the_reason(self) -> None:
        t = run(run(opened(), A.ASSIGN, responsible_person="张").ticket, A.START_RECTIFYING).ticket
        event = run(t, A.CLOSE)
        assert event.type is LedgerEventType.REFUSED
        assert event.reason == "cannot close a ticket in status rectifying: it must be called back first"
        assert event.ticket == t
        assert event.event_id.endswith(f":refused:{event.command_id}")

    def test_failed_callback_reopens(self) -> None:
        t = opened()
        for action, payload in [
            (A.ASSIGN, {"responsible_person": "张"}),
            (A.START_RECTIFYING, {}),
            (A.REPORT_RECTIFIED, {}),
        ]:
            t = run(t, action, SUPERVISOR, **payload).ticket
        event = run(t, A.RECORD_CALLBACK, satisfied=False, note="还是没解决")
        assert event.type is LedgerEventType.CALLBACK_FAILED
        assert event.ticket.status is S.RECTIFYING and event.ticket.callback_ok is False
        assert event.reason == "还是没解决"

    def test_appeal_accepted_is_void_and_final(self) -> None:
        t = run(opened(), A.APPEAL, OFFICER, reason="恶意差评：评价人未办理业务").ticket
        assert t.status is S.APPEALED and t.resume_status is S.NEW
        t = run(t, A.ACCEPT_APPEAL).ticket
        assert t.status is S.VOID
        refused = run(t, A.ASSIGN, responsible_person="x")
        assert refused.reason == "cannot assign a ticket in status void: that status is final"

    def test_appeal_rejected_goes_back_where_it_was(self) -> None:
        t = run(run(opened(), A.ASSIGN, responsible_person="张").ticket, A.START_RECTIFYING).ticket
        t = run(t, A.APPEAL, OFFICER, reason="误评").ticket
        t = run(t, A.REJECT_APPEAL, reason="证据不足").ticket
        assert t.status is S.RECTIFYING and t.resume_status is None

    def test_not_fixable_needs_an_explanation_and_a_supervisor(self) -> None:
        t = run(opened(), A.ASSIGN, responsible_person="张").ticket
        missing = run(t, A.REQUEST_NOT_FIXABLE, OFFICER)
        assert missing.reason == "request_not_fixable needs payload.explanation: a non-empty text"
        t = run(t, A.REQUEST_NOT_FIXABLE, OFFICER, explanation="诉求无法律依据，已解释说明").ticket
        assert run(t, A.APPROVE_NOT_FIXABLE, OFFICER).reason == (
            "only a supervisor may approve not fixable for a ticket; off-1 is a unit officer"
        )
        back = run(t, A.REJECT_NOT_FIXABLE).ticket
        assert back.status is S.ASSIGNED
        assert run(t, A.APPROVE_NOT_FIXABLE).ticket.status is S.NOT_FIXABLE

    def test_reassign_to_another_unit_only_by_a_supervisor(self) -> None:
        t = opened()
        refused = run(
            t, A.ASSIGN, OFFICER, responsible_person="张", unit_code=OTHER_UNIT_CODE, unit_name="另一局"
        )
        assert refused.type is LedgerEventType.REFUSED
        assert "only a supervisor may hand a ticket to another unit" in (refused.reason or "")
        moved = run(
            t, A.ASSIGN, responsible_person="李", unit_code=OTHER_UNIT_CODE, unit_name="另一局"
        ).ticket
        assert (moved.unit_code, moved.unit_name) == (OTHER_UNIT_CODE, "另一局")
        # from now on, the old unit's officer may not act on it, and the new unit's may
        assert run(moved, A.START_RECTIFYING, OFFICER).type is LedgerEventType.REFUSED
        assert run(moved, A.START_RECTIFYING, OTHER_OFFICER).type is LedgerEventType.RECTIFYING


class TestAuthorisation:
    def test_auditor_may_do_nothing(self) -> None:
        event = run(opened(), A.ASSIGN, AUDITOR, responsible_person="张")
        assert event.reason == "aud-1 is an auditor: an auditor may read the ledger but not assign a ticket"

    def test_unit_officer_only_for_their_unit(self) -> None:
        event = run(opened(), A.ASSIGN, OTHER_OFFICER, responsible_person="张")
        assert event.type is LedgerEventType.REFUSED
        assert f"acts for unit {OTHER_UNIT_CODE}; this ticket belongs to unit {UNIT_CODE}" in (
            event.reason or ""
        )

    def test_command_for_another_ticket(self) -> None:
        t = opened()
        other = LedgerCommand(command_id="c", ticket_id="TK-0", action=A.ASSIGN, actor=SUPERVISOR, at=T0)
        assert apply_command(t, other).reason == f"the command is for ticket TK-0, not {t.ticket_id}"

    def test_callback_needs_a_boolean(self) -> None:
        t = opened()
        for action, payload in [
            (A.ASSIGN, {"responsible_person": "张"}),
            (A.START_RECTIFYING, {}),
            (A.REPORT_RECTIFIED, {}),
        ]:
            t = run(t, action, SUPERVISOR, **payload).ticket
        assert "payload.satisfied: true or false" in (run(t, A.RECORD_CALLBACK, satisfied="yes").reason or "")


class TestDeadlines:
    def test_warning_once_at_eighty_percent(self) -> None:
        t = opened()
        point = warning_point(t, 0.8)
        assert check_deadlines(t, point - timedelta(seconds=1), CAL, POLICY) == []
        [warned] = check_deadlines(t, point, CAL, POLICY)
        assert warned.type is LedgerEventType.WARNED and warned.ticket.warned and warned.ticket.version == 2
        assert check_deadlines(warned.ticket, point + timedelta(hours=1), CAL, POLICY) == []

    def test_overdue_blue_goes_yellow_with_a_yellow_deadline_from_now_once(self) -> None:
        t = opened()
        now = t.due + timedelta(hours=10)  # Thursday 2026-12-17 09:59
        [escalated] = check_deadlines(t, now, CAL, POLICY)
        e = escalated.ticket
        assert escalated.type is LedgerEventType.ESCALATED
        assert (e.colour, e.original_colour, e.overdue, e.warned) == (Colour.YELLOW, Colour.BLUE, True, False)
        assert e.due == datetime(2026, 12, 24, 23, 59, 59, tzinfo=BEIJING)  # 5 working days from Thursday
        assert e.escalated_due == t.due and e.due_since == now
        assert "blue → yellow" in (escalated.reason or "")
        assert check_deadlines(e, now + timedelta(minutes=1), CAL, POLICY) == []
        # the new deadline passes too: yellow → red
        [again] = check_deadlines(e, e.due + timedelta(seconds=1), CAL, POLICY)
        assert again.ticket.colour is Colour.RED

    def test_red_stays_red_and_is_reported_once(self) -> None:
        t = opened("乱收费")
        [escalated] = check_deadlines(t, t.due + timedelta(minutes=1), CAL, POLICY)
        assert escalated.ticket.colour is Colour.RED and escalated.ticket.due == t.due
        assert "already red" in (escalated.reason or "")
        assert check_deadlines(escalated.ticket, t.due + timedelta(days=3), CAL, POLICY) == []

    def test_clock_waits_for_the_supervisor_and_stops_once_rectified(self) -> None:
        appealed = run(opened(), A.APPEAL, OFFICER, reason="误评").ticket
        assert check_deadlines(appealed, appealed.due + timedelta(days=1), CAL, POLICY) == []
        back = run(appealed, A.REJECT_APPEAL).ticket
        assert (
            check_deadlines(back, back.due + timedelta(days=1), CAL, POLICY)[0].type
            is LedgerEventType.ESCALATED
        )


# ---- the state machine for any sequence of commands ---------------------------------------------

actors = st.sampled_from([SUPERVISOR, OFFICER, OTHER_OFFICER, AUDITOR])
payloads = st.fixed_dictionaries(
    {},
    optional={
        "responsible_person": st.sampled_from(["张", "", "李"]),
        "satisfied": st.sampled_from([True, False, "yes"]),
        "reason": st.sampled_from(["误评", ""]),
        "explanation": st.sampled_from(["无法律依据", ""]),
        "unit_code": st.sampled_from([UNIT_CODE, OTHER_UNIT_CODE, "bad"]),
        "unit_name": st.just("另一局"),
        "measures": st.sampled_from([["约谈"], "x", []]),
    },
)
steps: st.SearchStrategy[list[tuple[Any, Any, Any]]] = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(list(CommandAction)), actors, payloads),
        st.tuples(st.just("tick"), st.integers(0, 60 * 24 * 40), st.just({})),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(text=st.sampled_from(["态度不好", "乱收费", "来回跑"]), script=steps)
def test_any_command_sequence_keeps_the_ledger_sound(text: str, script: list[tuple[Any, Any, Any]]) -> None:
    first = opened(text)
    ticket = first
    trail = [
        LedgerEvent(
            event_id=f"{first.ticket_id}:1",
            ticket_id=first.ticket_id,
            type=LedgerEventType.OPENED,
            at=T0,
            ticket=first,
        )
    ]
    clock = T0
    for step, who, payload in script:
        if step == "tick":
            clock += timedelta(minutes=who)
            events = check_deadlines(ticket, clock, CAL, POLICY)
            assert len(events) <= 1
            for event in events:
                assert event.ticket.status is ticket.status
                assert event.ticket.version == ticket.version + 1
                if event.type is LedgerEventType.ESCALATED:
                    assert event.ticket.escalated_due == ticket.due != ticket.escalated_due
            trail += events
            ticket = events[-1].ticket if events else ticket
            continue
        before = ticket
        event = apply_command(ticket, cmd(ticket, step, who, at=clock, **payload))
        trail.append(event)
        if event.type is LedgerEventType.REFUSED:
            assert event.ticket == before and event.reason
        else:
            allowed, _ = ALLOWED_FROM[step]
            assert before.status in allowed and before.status not in FINAL
            assert who.role is not Role.AUDITOR
            assert who.role is Role.SUPERVISOR or who.unit_code == before.unit_code
            assert event.ticket.version == before.version + 1
            assert event.event_id == f"{before.ticket_id}:{event.ticket.version}"
            ticket = event.ticket
        assert ticket.colour in Colour
    # the audit trail rebuilds the live state, also when redelivered
    assert replay(trail) == {first.ticket_id: ticket}
    assert replay(trail + trail) == {first.ticket_id: ticket}


@given(script=st.lists(st.sampled_from(list(CommandAction)), max_size=20))
def test_final_statuses_never_change(script: list[CommandAction]) -> None:
    for final in FINAL:
        ticket = opened().model_copy(update={"status": final})
        for action in script:
            event = run(ticket, action, responsible_person="张", satisfied=True, reason="r", explanation="e")
            assert event.type is LedgerEventType.REFUSED
            assert event.ticket.status is final
