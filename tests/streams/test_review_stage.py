"""The review stage over batches, without a broker: validation, 一次一评, follow-ups, triage, minutes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from haochaping.domain.contract import BEIJING, Review
from haochaping.domain.ledger import ticket_id_for
from haochaping.domain.records import AcceptedReview, FraudFlag
from haochaping.domain.triage import TriageRules
from streams.batch import (
    DEADLETTER,
    LEDGER_INTAKE,
    REVIEWS_ACCEPTED,
    REVIEWS_RAW,
    SATISFACTION_MINUTE,
    BatchResult,
)
from streams.reviews import BeijingMinutes, ReviewStage, accepted_json
from tests.streams.conftest import incoming, review_bytes


class Table(dict[bytes, bytes]):
    def apply(self, result: BatchResult) -> None:
        for writes in result.writes.values():
            self.update(writes)


def run(stage: ReviewStage, table: Table, values: list[bytes]) -> BatchResult:
    result = stage.process(incoming(REVIEWS_RAW, values), table.get)
    table.apply(result)
    return result


def out(result: BatchResult, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(o.value) for o in result.out if o.topic == topic]


def new_stage() -> ReviewStage:
    return ReviewStage.from_rules(TriageRules.load())


def test_a_good_review_is_accepted_counted_and_makes_no_ticket() -> None:
    result = run(new_stage(), Table(), [review_bytes(stars=4)])
    [accepted] = out(result, REVIEWS_ACCEPTED)
    assert accepted["event_id"] == "dev-0042-20261125-000137" and accepted["fraud_flags"] == []
    [minute] = out(result, SATISFACTION_MINUTE)
    assert minute["minute"] == "2026-11-25T09:30:00+08:00"
    assert minute["counts"] == [0, 0, 0, 1, 0] and minute["window_id"] == "w-07"
    assert out(result, LEDGER_INTAKE) == []


def test_a_bad_review_opens_an_intake_keyed_by_its_ticket_id_with_colour_and_reasons() -> None:
    result = run(new_stage(), Table(), [review_bytes(event_id="e-1", stars=1, text="窗口人员和我吵架还推搡")])
    [intake] = [o for o in result.out if o.topic == LEDGER_INTAKE]
    body = orjson.loads(intake.value)
    assert intake.key == ticket_id_for("review", "e-1").encode()
    assert body["colour"] == "red"
    assert body["reasons"][0]["rule"] == "red.conflict"
    assert set(body["reasons"][0]["terms"]) >= {"吵架", "推搡"}


def test_traditional_and_full_width_words_triage_like_simplified_ones() -> None:
    result = run(
        new_stage(), Table(), [review_bytes(event_id="e-2", stars=2, text="窗口索要ＨＯＮＧ包，還要辛苦費")]
    )
    [intake] = out(result, LEDGER_INTAKE)
    assert intake["colour"] == "red" and "辛苦费" in intake["reasons"][0]["terms"]


def test_one_rating_per_case_and_stage_retries_vanish_and_second_votes_are_dropped() -> None:
    stage, table = new_stage(), Table()
    first = review_bytes(event_id="e-1", stars=5)
    retry = first
    second_vote = review_bytes(event_id="e-2", stars=1)
    other_stage = review_bytes(event_id="e-3", stars=4, stage="approve")
    a = run(stage, table, [first, retry])
    b = run(stage, table, [retry, second_vote, other_stage])
    assert [r["event_id"] for r in out(a, REVIEWS_ACCEPTED) + out(b, REVIEWS_ACCEPTED)] == ["e-1", "e-3"]
    assert a.counts["dropped.retry"] == 1 and b.counts["dropped.retry"] == 1
    assert b.counts["dropped.duplicate"] == 1
    assert out(b, LEDGER_INTAKE) == []  # a dropped bad vote makes no ticket
    assert sum(sum(m["counts"]) for m in out(a, SATISFACTION_MINUTE) + out(b, SATISFACTION_MINUTE)) == 2


def test_a_follow_up_is_accepted_once_and_only_after_a_bad_first_rating() -> None:
    stage, table = new_stage(), Table()
    bad = review_bytes(event_id="e-1", stars=1, case_no="C-1")
    follow = review_bytes(event_id="e-2", stars=4, case_no="C-1", follow_up=True)
    follow_again = review_bytes(event_id="e-3", stars=5, case_no="C-1", follow_up=True)
    good = review_bytes(event_id="e-4", stars=5, case_no="C-2")
    follow_good = review_bytes(event_id="e-5", stars=5, case_no="C-2", follow_up=True)
    orphan = review_bytes(event_id="e-6", stars=5, case_no="C-3", follow_up=True)
    result = run(stage, table, [bad, follow, follow_again, good, follow_good, orphan])
    assert [r["event_id"] for r in out(result, REVIEWS_ACCEPTED)] == ["e-1", "e-2", "e-4"]
    assert result.counts["dropped.duplicate"] == 1
    assert result.counts["dropped.follow_up_without_bad_review"] == 2


def test_poison_records_go_to_the_dead_letter_topic_with_reason_problems_and_original_bytes() -> None:
    broken = b'{"event_id": "x", '
    invalid = review_bytes(stars=9, unit_code="not-a-unit")
    result = run(new_stage(), Table(), [broken, invalid, b"[1, 2]"])
    letters = out(result, DEADLETTER)
    assert len(letters) == 3
    assert "not valid JSON" in letters[0]["reason"]
    assert base64.b64decode(letters[0]["original_b64"]) == broken
    assert (letters[1]["source_topic"], letters[1]["partition"], letters[1]["offset"]) == (REVIEWS_RAW, 0, 1)
    pointers = {p["pointer"] for p in letters[1]["problems"]}
    assert pointers == {"/stars", "/unit_code"}
    assert any("统一社会信用代码" in p["message"] for p in letters[1]["problems"])
    assert letters[2]["stage"] == "streams.validate"
    assert out(result, REVIEWS_ACCEPTED) == []


def test_minute_records_add_up_per_dimension_within_a_batch() -> None:
    values = [
        review_bytes(
            event_id=f"e-{i}", case_no=f"C-{i}", stars=1 + i % 5, rated_at=f"2026-11-25T09:3{i % 2}:10+08:00"
        )
        for i in range(10)
    ]
    result = run(new_stage(), Table(), values)
    minutes = out(result, SATISFACTION_MINUTE)
    assert len(minutes) == 2
    by_minute = {m["minute"][11:16]: m["counts"] for m in minutes}
    assert by_minute == {"09:30": [1, 1, 1, 1, 1], "09:31": [1, 1, 1, 1, 1]}
    assert sum(sum(c) for c in by_minute.values()) == 10


def test_a_burst_of_top_ratings_from_one_device_is_flagged_and_counted_apart() -> None:
    values = [
        review_bytes(event_id=f"e-{i}", case_no=f"C-{i}", stars=5, rated_at=f"2026-11-25T09:30:{i:02d}+08:00")
        for i in range(12)
    ]
    result = run(new_stage(), Table(), values)
    accepted = out(result, REVIEWS_ACCEPTED)
    flagged = [r for r in accepted if r["fraud_flags"]]
    assert len(accepted) == 12 and len(flagged) >= 4
    assert "device_burst" in flagged[-1]["fraud_flags"]
    [minute] = out(result, SATISFACTION_MINUTE)
    assert minute["counts"][4] + minute["fraud_counts"][4] == 12
    assert minute["fraud_counts"][4] == len(flagged)


@given(
    flags=st.lists(st.sampled_from(list(FraudFlag)), unique=True, max_size=3),
    text=st.one_of(st.none(), st.text(max_size=20)),
    follow_up=st.booleans(),
)
def test_the_accepted_record_is_exactly_what_accepted_review_gives(
    flags: list[FraudFlag], text: str | None, follow_up: bool
) -> None:
    review = Review.model_validate_json(review_bytes(text=text, follow_up=follow_up))
    expected = AcceptedReview(**dict(review), fraud_flags=tuple(flags))
    assert AcceptedReview.model_validate_json(accepted_json(review, tuple(flags))) == expected


@given(
    at=st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.timezones()
    ).filter(lambda at: at.utcoffset() is not None)
)
# China's summer time (1986-1991) and Beijing's local mean time (before 1901, +08:05:43)
@example(at=datetime(1988, 7, 1, 12, 30, 59, tzinfo=UTC))
@example(at=datetime(1900, 6, 1, 23, 59, 30, tzinfo=UTC))
@example(at=datetime(2026, 11, 25, 15, 59, 59, 999999, tzinfo=UTC))
@example(at=datetime(9000, 1, 1, 0, 0, 59, 999999, tzinfo=UTC))  # a float timestamp is too coarse here
def test_the_remembered_minute_and_day_are_those_of_beijing_time(at: datetime) -> None:
    minutes = BeijingMinutes(kept=3)
    local = at.astimezone(BEIJING)
    expected = (local.replace(second=0, microsecond=0), local.date(), f"{local.date():%Y%m%d}")
    first = minutes.of(at, at.timestamp())
    assert first == expected and first[0].isoformat() == expected[0].isoformat()
    assert minutes.of(at, at.timestamp()) == expected  # from the cache now
