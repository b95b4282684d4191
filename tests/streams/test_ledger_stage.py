"""The ledger stage over batches, without a broker: opening, commands, refusals, replays, deadlines."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from haochaping.domain.contract import BEIJING
from haochaping.domain.ledger import DeadlinePolicy, make_intake
from haochaping.domain.records import CommandAction, Role
from haochaping.domain.triage import Triage, TriageRules
from haochaping.domain.workdays import WorkCalendar
from streams.batch import (
    ALERTS,
    DEADLETTER,
    LEDGER_COMMANDS,
    LEDGER_EVENTS,
    LEDGER_INTAKE,
    BatchResult,
    Incoming,
)
from streams.intake import DeadlineTick
from streams.ledger import LedgerStage
from tests.domain.factories import review_factory
from tests.streams.conftest import command

A = CommandAction
RULES = TriageRules.load()


class Table(dict[bytes, bytes]):
    """What the Faust table holds, as the stage sees it."""

    def apply(self, result: BatchResult) -> None:
        for writes in result.writes.values():
            self.update(writes)


def stage() -> LedgerStage:
    rules = TriageRules.load()
    return LedgerStage(WorkCalendar.from_file(None), DeadlinePolicy(rules.config.deadlines))


def intake_for(text: str = "工作人员态度很差", event_id: str = "ev-1", stars: int = 1) -> tuple[str, bytes]:
    review = review_factory(event_id=event_id, stars=stars, text=text)
    triaged = Triage(RULES).triage_review(review)
    assert triaged is not None
    intake = make_intake(
        source="review", source_id=review.event_id, at=review.rated_at, triage=triaged, review=review
    )
    return intake.ticket_id, intake.model_dump_json().encode()


def run(st: LedgerStage, table: Table, records: list[tuple[str, bytes]], partition: int = 1) -> BatchResult:
    batch = [Incoming(topic, partition, i, None, value) for i, (topic, value) in enumerate(records)]
    result = st.process(batch, table.get)
    table.apply(result)
    return result


def events(result: BatchResult) -> list[dict[str, Any]]:
    return [orjson.loads(o.value) for o in result.out if o.topic == LEDGER_EVENTS]


def test_an_intake_opens_one_ticket_with_its_colour_reasons_and_deadlines() -> None:
    st, table = stage(), Table()
    ticket_id, intake = intake_for("窗口人员索要好处费才给办")
    result = run(st, table, [(LEDGER_INTAKE, intake)])
    [opened] = events(result)
    assert opened["type"] == "opened"
    ticket = opened["ticket"]
    assert (ticket["ticket_id"], ticket["colour"], ticket["status"]) == (ticket_id, "red", "new")
    assert ticket["reasons"][0]["rule"] == "red.integrity"
    # red: call back within 2 hours of the review (2026-11-25 09:30), resolved within 1 working day
    assert ticket["callback_due"].startswith("2026-11-25T11:30")
    assert ticket["due"].startswith("2026-11-26")
    alerts = [orjson.loads(o.value) for o in result.out if o.topic == ALERTS]
    assert [a["kind"] for a in alerts] == ["red_ticket"]
    assert result.writes == {1: {ticket_id.encode(): table[ticket_id.encode()]}}


def test_the_same_intake_twice_opens_no_second_ticket() -> None:
    st, table = stage(), Table()
    _, intake = intake_for()
    first = run(st, table, [(LEDGER_INTAKE, intake), (LEDGER_INTAKE, intake)])
    again = run(st, table, [(LEDGER_INTAKE, intake)])
    assert [e["type"] for e in events(first)] == ["opened"]
    assert events(again) == [] and again.writes == {}


def test_a_command_stream_walks_a_ticket_through_its_whole_life() -> None:
    st, table = stage(), Table()
    tid, intake = intake_for()
    steps = [
        command(tid, A.ASSIGN, 1, responsible_person="王科长"),
        command(tid, A.START_RECTIFYING, 2),
        command(tid, A.REPORT_RECTIFIED, 3, note="已向群众解释并道歉"),
        command(tid, A.RECORD_CALLBACK, 4, satisfied=False, note="仍不满意"),
        command(tid, A.REPORT_RECTIFIED, 5, note="再次整改"),
        command(tid, A.RECORD_CALLBACK, 6, satisfied=True),
        command(tid, A.CLOSE, 7),
    ]
    result = run(
        st,
        table,
        [(LEDGER_INTAKE, intake)] + [(LEDGER_COMMANDS, c.model_dump_json().encode()) for c in steps],
    )
    trail = events(result)
    assert [e["type"] for e in trail] == [
        "opened",
        "assigned",
        "rectifying",
        "rectified",
        "callback_failed",
        "rectified",
        "called_back",
        "closed",
    ]
    assert [e["ticket"]["version"] for e in trail] == list(range(1, 9))
    assert trail[-1]["ticket"]["status"] == "closed"
    stored = orjson.loads(table[tid.encode()])
    assert stored["ticket"] == trail[-1]["ticket"]
    # one table write for the ticket, however many changes the batch made
    assert list(result.writes[1]) == [tid.encode()]


def test_an_illegal_command_is_refused_with_a_reason_and_changes_nothing() -> None:
    st, table = stage(), Table()
    tid, intake = intake_for()
    run(st, table, [(LEDGER_INTAKE, intake)])
    close = command(tid, A.CLOSE, 1)
    officer_accepts = command(tid, A.ACCEPT_APPEAL, 2, role=Role.UNIT_OFFICER)
    result = run(
        st,
        table,
        [
            (LEDGER_COMMANDS, close.model_dump_json().encode()),
            (LEDGER_COMMANDS, officer_accepts.model_dump_json().encode()),
        ],
    )
    refused = events(result)
    assert [e["type"] for e in refused] == ["refused", "refused"]
    assert refused[0]["command_id"] == close.command_id
    assert "cannot close a ticket in status new" in refused[0]["reason"]
    assert "supervisor" in refused[1]["reason"]
    assert orjson.loads(table[tid.encode()])["ticket"]["version"] == 1


def test_a_replayed_command_is_not_applied_or_refused_again() -> None:
    st, table = stage(), Table()
    tid, intake = intake_for()
    assign = command(tid, A.ASSIGN, 1, responsible_person="王科长").model_dump_json().encode()
    run(st, table, [(LEDGER_INTAKE, intake), (LEDGER_COMMANDS, assign)])
    # the worker died after writing the table and before committing: the batch comes again
    replay = run(st, table, [(LEDGER_INTAKE, intake), (LEDGER_COMMANDS, assign)])
    assert events(replay) == []
    assert replay.counts["command.replayed"] == 1


def test_a_command_for_an_unknown_ticket_goes_to_the_dead_letter_topic_with_the_ticket_id() -> None:
    st, table = stage(), Table()
    cmd = command("TK-0000000000000000", A.ASSIGN, 1, responsible_person="王科长")
    result = run(
        st, table, [(LEDGER_COMMANDS, cmd.model_dump_json().encode()), (LEDGER_COMMANDS, b"{not json")]
    )
    letters = [orjson.loads(o.value) for o in result.out if o.topic == DEADLETTER]
    assert "no ticket 'TK-0000000000000000'" in letters[0]["reason"]
    assert letters[1]["problems"] and letters[1]["source_topic"] == LEDGER_COMMANDS
    assert events(result) == []


def test_deadline_ticks_warn_then_escalate_once_each() -> None:
    st, table = stage(), Table()
    tid, intake = intake_for("态度很差")  # blue: 15 working days
    run(st, table, [(LEDGER_INTAKE, intake)])
    stored = table[tid.encode()]
    now = datetime(2026, 11, 25, 10, 0, tzinfo=BEIJING)
    assert st.tick_for(stored, now, owned={1}) is None  # nothing due yet
    late = now + timedelta(days=40)
    assert st.tick_for(stored, late, owned={0, 2}) is None  # another worker's partition
    tick = st.tick_for(stored, late, owned={1})
    assert tick is not None and DeadlineTick.model_validate_json(tick).ticket_id == tid
    first = run(st, table, [(LEDGER_INTAKE, tick), (LEDGER_INTAKE, tick)])
    [escalated] = events(first)
    assert escalated["type"] == "escalated" and escalated["ticket"]["colour"] == "yellow"
    assert [orjson.loads(o.value)["kind"] for o in first.out if o.topic == ALERTS] == ["overdue"]


@given(
    hours=st.lists(st.integers(min_value=0, max_value=24 * 60), min_size=1, max_size=12),
    text=st.sampled_from(["态度很差", "窗口要辛苦费", "跑了三趟还没办成"]),
)
def test_the_deadline_scan_finds_exactly_the_ticks_a_check_of_each_ticket_finds(
    hours: list[int], text: str
) -> None:
    """The scan's cache of unchanged tickets never hides a tick, whatever the clock does between scans."""
    st_, table = stage(), Table()
    tid, intake = intake_for(text)
    run(st_, table, [(LEDGER_INTAKE, intake)])
    start = datetime(2026, 11, 25, 10, 0, tzinfo=BEIJING)
    for h in hours:
        now = start + timedelta(hours=h)
        expected = st_.tick_for(table[tid.encode()], now, owned={1})
        found = st_.ticks_due(list(table.items()), now, owned={1})
        assert found == ([(tid.encode(), expected)] if expected is not None else [])
        if expected is not None:  # apply it, as the ledger agent would: the stored ticket changes
            run(st_, table, [(LEDGER_INTAKE, expected)])
