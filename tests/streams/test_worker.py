"""``haochaping worker`` against the real Kafka broker: what goes in, what comes out, restarts, sharing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from haochaping.domain.ledger import ticket_id_for
from haochaping.domain.records import CommandAction
from tests.domain.factories import UNIT_CODE
from tests.streams.conftest import command, review_bytes

pytestmark = pytest.mark.integration
A = CommandAction
OTHER_UNITS = ["11330102002495621R", "11330102MB0000001X", "11330102MB0000002X", "11330102MB0000003X"]


def reviews(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    """``n`` distinct cases over several units; every 5th rating is bad and names a bribe."""
    out = []
    for i in range(start, start + n):
        unit = OTHER_UNITS[i % len(OTHER_UNITS)]
        bad = i % 5 == 0
        out.append(
            (
                unit,
                review_bytes(
                    event_id=f"ev-{i}",
                    case_no=f"C-{i}",
                    unit_code=unit,
                    stars=1 if bad else 4,
                    text="窗口要辛苦费" if bad else None,
                    device_id=f"dev-{i}",
                    window_id=f"w-{i % 7}",
                    staff_id=f"s-{i}",
                ),
            )
        )
    return out


def test_reviews_in_tickets_figures_and_dead_letters_out(
    start_worker: Callable[..., Any], produce: Callable[..., None], read_topic: Callable[..., list[Any]]
) -> None:
    start_worker()
    bad = review_bytes(
        event_id="bad-1", case_no="C-1", stars=1, text="工作人员和我吵架，还说要曝光就去找记者"
    )
    produce(
        "reviews.raw",
        [
            (UNIT_CODE, bad),
            (UNIT_CODE, bad),  # a retry of the same event
            (UNIT_CODE, review_bytes(event_id="dup-1", case_no="C-1", stars=5)),  # a second vote
            (UNIT_CODE, review_bytes(event_id="fu-1", case_no="C-1", stars=4, follow_up=True)),
            (UNIT_CODE, review_bytes(event_id="good-1", case_no="C-2", stars=5)),
            (UNIT_CODE, b"\xff not json"),
            (UNIT_CODE, review_bytes(event_id="bad-stars", case_no="C-3", stars=0)),
        ],
    )
    accepted = read_topic("reviews.accepted", until=lambda r: len(r) >= 3, timeout=30)
    assert sorted(r["event_id"] for r in accepted) == ["bad-1", "fu-1", "good-1"]

    [opened] = read_topic("ledger.events", until=lambda r: len(r) >= 1)
    ticket = opened["ticket"]
    assert opened["type"] == "opened" and ticket["ticket_id"] == ticket_id_for("review", "bad-1")
    assert ticket["colour"] == "red"
    assert [r["rule"] for r in ticket["reasons"]][:2] == ["red.conflict", "red.media"]
    assert ticket["callback_due"].startswith("2026-11-25T11:30") and ticket["due"].startswith("2026-11-26")

    minutes = read_topic("satisfaction.minute", until=lambda r: sum(sum(m["counts"]) for m in r) >= 3)
    total = [0] * 5
    for m in minutes:
        total = [a + b for a, b in zip(total, m["counts"], strict=True)]
    assert total == [1, 0, 0, 1, 1]

    letters = read_topic("deadletter", until=lambda r: len(r) >= 2)
    assert len(letters) == 2
    assert "not valid JSON" in letters[0]["reason"]
    assert letters[1]["problems"][0]["pointer"] == "/stars"
    alerts = read_topic("alerts", until=lambda r: len(r) >= 1)
    assert [a["kind"] for a in alerts] == ["red_ticket"]

    # the ticket's whole life, then an illegal command
    tid = ticket["ticket_id"]
    life = [
        command(tid, A.ASSIGN, 1, responsible_person="王科长"),
        command(tid, A.START_RECTIFYING, 2),
        command(tid, A.REPORT_RECTIFIED, 3, note="已整改"),
        command(tid, A.RECORD_CALLBACK, 4, satisfied=True),
        command(tid, A.CLOSE, 5),
        command(tid, A.ASSIGN, 6, responsible_person="李科员"),
    ]
    produce("ledger.commands", [(tid, c.model_dump_json().encode()) for c in life])
    trail = read_topic("ledger.events", until=lambda r: len(r) >= 7)
    assert [e["type"] for e in trail] == [
        "opened",
        "assigned",
        "rectifying",
        "rectified",
        "called_back",
        "closed",
        "refused",
    ]
    assert trail[-1]["command_id"] == life[-1].command_id
    assert "status closed" in trail[-1]["reason"] and trail[-1]["ticket"]["status"] == "closed"


def _ledger(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    tickets: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["type"] != "refused":
            held = tickets.get(e["ticket_id"])
            if held is None or held["version"] < e["ticket"]["version"]:
                tickets[e["ticket_id"]] = e["ticket"]
    return tickets


def test_a_restarted_worker_resumes_with_its_ledger_exact(
    start_worker: Callable[..., Any], produce: Callable[..., None], read_topic: Callable[..., list[Any]]
) -> None:
    first = start_worker("w1")
    produce("reviews.raw", reviews(300))
    read_topic("ledger.events", until=lambda r: len(r) >= 60)
    tids = sorted(ticket_id_for("review", f"ev-{i}") for i in range(0, 300, 5))
    produce(
        "ledger.commands",
        [(t, command(t, A.ASSIGN, 1, responsible_person="王科长").model_dump_json().encode()) for t in tids],
    )
    read_topic("ledger.events", until=lambda r: len(r) >= 120)
    first.stop()

    start_worker("w2")
    # the same intake again (a replay) and the next command: nothing opens twice, nothing is refused
    produce("reviews.raw", reviews(300))
    produce(
        "ledger.commands",
        [(t, command(t, A.ASSIGN, 1, responsible_person="王科长").model_dump_json().encode()) for t in tids],
    )
    produce(
        "ledger.commands", [(t, command(t, A.START_RECTIFYING, 2).model_dump_json().encode()) for t in tids]
    )
    events = read_topic("ledger.events", until=lambda r: len(r) >= 180, timeout=60)
    counts = Counter(e["type"] for e in events)
    assert counts == {"opened": 60, "assigned": 60, "rectifying": 60}
    ledger = _ledger(events)
    assert sorted(ledger) == tids
    assert {t["status"] for t in ledger.values()} == {"rectifying"}
    assert {t["version"] for t in ledger.values()} == {3}
    accepted = read_topic("reviews.accepted", until=lambda r: len(r) >= 300)
    assert len({r["event_id"] for r in accepted}) == 300


def test_two_workers_share_the_partitions_and_the_totals_stay_exact(
    start_worker: Callable[..., Any], produce: Callable[..., None], read_topic: Callable[..., list[Any]]
) -> None:
    start_worker("w1")
    start_worker("w2")
    produce("reviews.raw", reviews(2000))
    minutes = read_topic(
        "satisfaction.minute",
        until=lambda r: sum(sum(m["counts"]) + sum(m["fraud_counts"]) for m in r) >= 2000,
        timeout=60,
    )
    counts = [0] * 5
    for m in minutes:
        counts = [a + b + c for a, b, c in zip(counts, m["counts"], m["fraud_counts"], strict=True)]
    assert counts == [400, 0, 0, 1600, 0]
    events = read_topic("ledger.events", until=lambda r: len(r) >= 400, timeout=60)
    assert len(events) == 400 and len({e["ticket_id"] for e in events}) == 400
