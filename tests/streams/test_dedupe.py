"""The dedupe horizon without a broker: stored values, the purge's selection, its schedule, the stage."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from haochaping.domain.contract import BEIJING, Review
from haochaping.domain.triage import TriageRules
from streams.batch import REVIEWS_ACCEPTED, REVIEWS_RAW
from streams.dedupe import (
    PurgeSchedule,
    day_text,
    decode_value,
    encode_value,
    encode_with_day_text,
    plan_purge,
)
from streams.reviews import ReviewStage, dedup_table_key
from streams.state import partition_items
from tests.streams.conftest import incoming, review_bytes
from tests.streams.test_review_stage import Table, out

TODAY = date(2026, 11, 25)


def test_values_carry_the_day_and_old_values_read_as_no_day() -> None:
    raw = encode_value("dev-1.x:2", 2, date(2026, 1, 9))
    assert raw == b"dev-1.x:2|2|20260109"
    held = decode_value(raw)
    assert (held.event_id, held.stars, held.day) == ("dev-1.x:2", 2, date(2026, 1, 9))
    legacy = decode_value(b"dev-1|5")
    assert (legacy.event_id, legacy.stars, legacy.day) == ("dev-1", 5, None)


def test_the_purge_deletes_keys_beyond_the_horizon_keeps_the_rest_and_stamps_old_values() -> None:
    items = [
        (b"a", encode_value("e-a", 5, TODAY - timedelta(days=401))),  # one day beyond
        (b"b", encode_value("e-b", 1, TODAY - timedelta(days=400))),  # exactly the horizon: kept
        (b"c", encode_value("e-c", 3, TODAY)),
        (b"d", b"e-d|4"),  # written before the day was stored
        (b"e", encode_value("e-e", 2, TODAY - timedelta(days=2000))),
    ]
    plan = plan_purge(items, TODAY, 400, max_keys=100)
    assert plan.deletes == [b"a", b"e"]
    assert plan.stamps == {b"d": b"e-d|4|20261125"}
    assert plan.examined == 5 and plan.resume_after is None


def test_a_step_looks_at_no_more_than_its_bound_and_says_where_to_resume() -> None:
    old = encode_value("e", 1, TODAY - timedelta(days=500))
    items = [(f"k{i:03d}".encode(), old) for i in range(10)]
    plan = plan_purge(items, TODAY, 400, max_keys=4)
    assert plan.deletes == [b"k000", b"k001", b"k002", b"k003"]
    assert plan.resume_after == b"k003"
    # exactly the bound left: the step reaches the end and the run is over
    last = plan_purge(items[6:], TODAY, 400, max_keys=4)
    assert last.deletes == [b"k006", b"k007", b"k008", b"k009"] and last.resume_after is None


def test_keys_the_batch_writes_are_left_to_the_batch() -> None:
    old = encode_value("e", 1, TODAY - timedelta(days=500))
    plan = plan_purge([(b"a", old), (b"b", b"e|1")], TODAY, 400, max_keys=10, keep={b"a": b"x", b"b": b"y"})
    assert plan.deletes == [] and plan.stamps == {} and plan.examined == 2


ages = st.one_of(st.none(), st.integers(min_value=-5, max_value=900))


@given(
    table=st.dictionaries(st.binary(min_size=1, max_size=6), ages, max_size=60),
    max_keys=st.integers(min_value=1, max_value=25),
)
def test_a_run_of_steps_forgets_exactly_the_keys_beyond_the_horizon(
    table: dict[bytes, int | None], max_keys: int
) -> None:
    """Steps resumed one after another, like batches, end with nothing beyond the horizon left."""
    store = {
        key: b"e|3" if age is None else encode_value("e", 3, TODAY - timedelta(days=age))
        for key, age in table.items()
    }
    after: bytes | None = None
    steps = 0
    while True:
        items = [(k, store[k]) for k in sorted(store) if after is None or k > after]
        plan = plan_purge(items, TODAY, 400, max_keys)
        assert plan.examined <= max_keys and len(plan.deletes) + len(plan.stamps) <= max_keys
        for key in plan.deletes:
            del store[key]
        store.update(plan.stamps)
        steps += 1
        after = plan.resume_after
        if after is None:
            break
    assert set(store) == {k for k, age in table.items() if age is None or age <= 400}
    assert all(decode_value(v).day is not None for v in store.values())
    assert steps <= len(table) // max_keys + 1


def test_a_run_starts_at_the_first_batch_resumes_and_waits_the_interval_after_it_ends() -> None:
    schedule = PurgeSchedule(interval_seconds=60)
    assert schedule.due(0, now=0.0) == (True, None)
    schedule.done(0, b"k9", now=1.0)
    assert schedule.due(0, now=1.5) == (True, b"k9")
    schedule.done(0, None, now=2.0)
    assert schedule.due(0, now=61.0) == (False, None)
    assert schedule.due(0, now=62.0) == (True, None)
    assert schedule.due(1, now=3.0) == (True, None)  # each partition has its own run


def _review(event_id: str, rated: datetime, stars: int = 4, **kw: object) -> bytes:
    return review_bytes(event_id=event_id, case_no="C-1", stars=stars, rated_at=rated.isoformat(), **kw)


def test_a_second_rating_of_the_same_case_more_than_400_days_later_counts() -> None:
    stage, table = ReviewStage.from_rules(TriageRules.load(), dedupe_horizon_days=400), Table()
    first = datetime(2025, 1, 10, 9, 0, tzinfo=BEIJING)
    values = [
        _review("e-1", first, stars=2),
        _review("e-2", first + timedelta(days=400)),  # within: a duplicate
        _review("e-3", first + timedelta(days=401)),  # beyond: a new rating
        _review("e-4", first + timedelta(days=402)),  # within e-3's horizon: a duplicate
    ]
    result = stage.process(incoming(REVIEWS_RAW, values), table.get)
    table.apply(result)
    assert [r["event_id"] for r in out(result, REVIEWS_ACCEPTED)] == ["e-1", "e-3"]
    assert result.counts["dropped.duplicate"] == 2 and result.counts["dedupe.beyond_horizon"] == 1
    [stored] = [v for k, v in table.items() if k.endswith(b"|r")]
    assert stored == b"e-3|4|20260215"


def test_an_old_value_without_a_day_still_blocks_a_second_rating_and_allows_a_follow_up() -> None:
    stage, table = ReviewStage.from_rules(TriageRules.load()), Table()
    rated = datetime(2029, 1, 1, 9, 0, tzinfo=BEIJING)
    values = [_review("e-1", rated), _review("e-2", rated, follow_up=True)]
    table[dedup_table_key(Review.model_validate_json(values[0]))] = b"e-0|1"  # a bad first rating
    result = stage.process(incoming(REVIEWS_RAW, values), table.get)
    assert [r["event_id"] for r in out(result, REVIEWS_ACCEPTED)] == ["e-2"]
    assert result.counts["dropped.duplicate"] == 1


def test_a_rocksdb_partition_is_read_in_key_order_from_where_the_last_step_stopped(tmp_path: Path) -> None:
    from rocksdict import Rdict

    db = Rdict(str(tmp_path / "p0.db"))
    offset_key = b"__faust\0offset__"
    for key in (b"c", b"a", b"b", offset_key, b"d"):
        db[key] = b"v-" + key
    table = SimpleNamespace(data=SimpleNamespace(_dbs={0: db}, offset_key=offset_key))
    try:
        assert [k for k, _ in partition_items(table, 0, None)] == [b"a", b"b", b"c", b"d"]
        assert list(partition_items(table, 0, b"b")) == [(b"c", b"v-c"), (b"d", b"v-d")]
        assert list(partition_items(table, 1, None)) == []  # a partition without a database here
    finally:
        db.close()


@given(st.dates(), st.integers(1, 5))
def test_a_value_built_from_the_day_text_is_the_value_of_the_day(day: date, stars: int) -> None:
    assert encode_with_day_text("dev-1.x:2", stars, day_text(day)) == encode_value("dev-1.x:2", stars, day)
