"""A record the stream sent twice counts once: in the batch, across batches, across a writer restart."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from haochaping.domain.records import LedgerEventType, Role
from haochaping.settings import Settings
from sinks.repeats import (
    IDENTITY_OF_TABLE,
    MARGIN_MS,
    MAX_RANGES,
    first_copies,
    mark,
    marker,
    quote,
    time_ranges,
)
from tests.sinks.factories import BASE_TIME, alert, count, dumps, ledger_event, review, ticket, wait_for
from tests.sinks.test_writer import assert_figures_match, writer

REVIEWS = IDENTITY_OF_TABLE["reviews"]


def test_the_first_copy_in_the_batch_is_kept_and_unreadable_records_pass_through() -> None:
    values = [dumps(review(1)), b"not json", dumps(review(2)), dumps(review(1, stars=5)), b"[1, 2]"]
    scan = first_copies(values, REVIEWS)
    assert scan.keep == [0, 1, 2, 4]  # the later copy of review 1 goes, whatever else it says
    assert [k.id for k in scan.keyed] == ["ev-0000001", "ev-0000002"]
    assert scan.repeats_in_batch == 1


def test_a_time_without_an_offset_cannot_bound_a_search_and_the_record_is_kept_unlooked() -> None:
    raw = orjson.dumps({"event_id": "e", "unit_code": "u", "rated_at": "2026-11-25T09:00:00"})
    scan = first_copies([raw, raw], REVIEWS)
    assert scan.keep == [0, 1] and scan.keyed == []


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=300), st.integers(1, 40))
def test_the_lookup_ranges_cover_every_record_and_stay_few(times: list[int], max_ranges: int) -> None:
    ranges = time_ranges(times, gap_ms=60_000, max_ranges=max_ranges)
    assert 1 <= len(ranges) <= max_ranges
    assert all(any(lo + MARGIN_MS <= t <= hi - MARGIN_MS for lo, hi in ranges) for t in times)
    assert all(a[1] < b[0] for a, b in pairwise(ranges))  # ordered, apart


def test_one_late_record_does_not_widen_the_lookup_over_the_hours_between() -> None:
    now = 1_800_000_000_000
    ranges = time_ranges([now, now + 500, now - 5 * 3600_000])
    assert len(ranges) == 2 and max(hi - lo for lo, hi in ranges) < 10_000
    assert MAX_RANGES >= 2


# -- against the real broker and ClickHouse -------------------------------------------------------


def test_a_record_is_marked_with_the_batch_that_writes_it() -> None:
    assert orjson.loads(mark(b'{"a": 1} \n', "t:0:5-9")) == {"a": 1, "sink_batch": "t:0:5-9"}
    assert orjson.loads(mark(b"{ }", 'q"uote')) == {"sink_batch": 'q"uote'}
    assert mark(b"[1]", "t") == b"[1]"  # not a record: ClickHouse refuses it as it is


# Records as the stream writes them, and bytes that only look a little like them.
_json_records = st.dictionaries(
    st.text(max_size=8),
    st.one_of(
        st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=12), st.lists(st.text(max_size=4))
    ),
).map(orjson.dumps)
_odd_bytes = st.binary(max_size=24).map(lambda b: b + b"}") | st.binary(max_size=24)


@given(st.one_of(_json_records, _odd_bytes), st.text(max_size=30))
def test_the_batch_marker_writes_the_same_bytes_as_mark(value: bytes, token: str) -> None:
    assert marker(token)(value) == mark(value, token)


@given(_json_records, st.text(max_size=30))
def test_a_marked_record_is_the_record_with_its_batch(value: bytes, token: str) -> None:
    assert orjson.loads(marker(token)(value)) == {**orjson.loads(value), "sink_batch": token}


@pytest.mark.integration
def test_rows_of_another_batch_are_repeats_and_rows_of_this_batchs_earlier_attempt_are_not(
    sink_settings, migrated
) -> None:
    from sinks.clickhouse import insert_json_rows
    from sinks.repeats import new_positions

    table = f"{sink_settings.clickhouse.database}.reviews"
    values = [dumps(review(i)) for i in range(5)]
    insert_json_rows(migrated, table, [mark(v, "r:0:0-2") for v in values[:3]], "r:0:0-2")
    # The same batch again (a redo after a crash before its commit): everything goes again, same block.
    assert new_positions(migrated, table, values[:3], "r:0:0-2") == ([0, 1, 2], 0)
    # Another batch holding copies: they are repeats.
    assert new_positions(migrated, table, values, "r:0:3-7") == ([3, 4], 3)


@pytest.mark.integration
def test_an_id_with_quotes_and_backslashes_is_found_as_itself(sink_settings, migrated) -> None:
    from sinks.clickhouse import insert_json_rows
    from sinks.repeats import lookup_query, new_positions

    # The contract allows no such id; the sink must not depend on it.
    odd = orjson.dumps({**orjson.loads(dumps(review(1))), "event_id": "ev'\\\t\n-1"})
    table = f"{sink_settings.clickhouse.database}.reviews"
    insert_json_rows(migrated, table, [odd], "t-odd")
    keep, repeats = new_positions(migrated, table, [odd, dumps(review(2))], "t-next")
    assert keep == [1] and repeats == 1
    # The literal path (the embedded engine's) finds the same.
    scan = first_copies([odd], REVIEWS)
    sql = lookup_query(table, REVIEWS, scan.keyed, inline=True)
    assert migrated.query(sql).result_rows == [("ev'\\\t\n-1", "")]
    assert quote("a'b\\c") == "'a\\'b\\\\c'"


def _satisfaction_total(settings: Settings, since: Any, until: Any) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.auth import mint_token

    headers = {"Authorization": "Bearer " + mint_token(settings.api, role=Role.SUPERVISOR, sub="t")}
    with TestClient(create_app(settings, start_feed=False)) as api:
        out = {}
        for name, params in {
            "raw": {"since": (since + timedelta(seconds=1)).isoformat(), "until": until.isoformat()},
            "minute": {"since": since.isoformat(), "until": until.isoformat(), "granularity": "minute"},
            "hour": {"since": since.isoformat(), "until": until.isoformat(), "granularity": "hour"},
            "day": {"since": since.isoformat(), "until": (since + timedelta(days=1)).isoformat()},
        }.items():
            r = api.get("/v1/satisfaction", params=params, headers=headers)
            assert r.status_code == 200, r.text
            out[name] = r.json()
    return out


@pytest.mark.integration
def test_a_review_sent_twice_counts_once_in_reviews_rollups_and_the_api(
    sink_settings, sink_topics, migrated, produce
) -> None:
    reviews = [review(i, fraud=(i % 19 == 0)) for i in range(400)]

    def records(rs: list[Any]) -> list[tuple[bytes, bytes]]:
        return [(r.unit_code.encode(), dumps(r)) for r in rs]

    # First run: copies within one batch (a worker's replay right behind the original) ...
    first = reviews[:300] + reviews[:40]
    produce("reviews.accepted", records(first))
    with writer(sink_settings):
        wait_for(lambda: count(migrated, "SELECT count() FROM reviews") == 300, what="300 reviews")
        wait_for(lambda: _committed(sink_settings) == len(first), what="every offset committed")
    # ... then, with the writer down, copies of what it already wrote plus new reviews: a second
    # writer reads them in other batches, at other offsets.
    second = reviews[250:300] + reviews[300:] + reviews[100:160]
    produce("reviews.accepted", records(second))
    with writer(sink_settings):
        wait_for(lambda: _committed(sink_settings) == len(first) + len(second), what="every offset committed")

    assert count(migrated, "SELECT count() FROM reviews") == 400
    assert count(migrated, "SELECT uniqExact(event_id) FROM reviews") == 400
    assert count(migrated, "SELECT sum(n1+n2+n3+n4+n5+f1+f2+f3+f4+f5) FROM satisfaction_minute") == 400
    assert count(migrated, "SELECT sum(n1+n2+n3+n4+n5+f1+f2+f3+f4+f5) FROM satisfaction_hour") == 400
    assert_figures_match(migrated, reviews)  # per unit, from satisfaction_day

    official = Counter(r.stars for r in reviews if r.official)
    since = BASE_TIME.replace(hour=0)
    until = since + timedelta(days=1)
    for how, got in _satisfaction_total(sink_settings, since, until).items():
        assert got["total"] == sum(official.values()), how
        assert got["counts"] == {str(s): official[s] for s in range(1, 6)}, how


@pytest.mark.integration
def test_ledger_events_and_alerts_sent_twice_are_written_once(
    sink_settings, sink_topics, migrated, produce
) -> None:
    t1, t2 = ticket("tk-1", 1), ticket("tk-1", 2)
    events = [ledger_event(t1, LedgerEventType.OPENED), ledger_event(t2, LedgerEventType.ASSIGNED)]
    produce("ledger.events", [(b"tk-1", dumps(e)) for e in events + events[:1]])
    produce("alerts", [(alert(0).unit_code.encode(), dumps(a)) for a in (alert(0), alert(1), alert(0))])
    with writer(sink_settings):
        wait_for(lambda: count(migrated, "SELECT count() FROM ticket_events") >= 2, what="ticket events")
        wait_for(lambda: count(migrated, "SELECT count() FROM alerts") >= 2, what="alerts")
    produce("ledger.events", [(b"tk-1", dumps(e)) for e in events])
    produce("alerts", [(alert(1).unit_code.encode(), dumps(alert(1)))])
    with writer(sink_settings):
        wait_for(
            lambda: (
                _committed(sink_settings, "ledger.events") == 5 and _committed(sink_settings, "alerts") == 4
            ),
            what="every offset committed",
        )
    # Without FINAL: what a history or a count reads before any merge.
    assert migrated.query("SELECT event_id FROM ticket_events ORDER BY event_id").result_rows == [
        ("tk-1:1",),
        ("tk-1:2",),
    ]
    assert count(migrated, "SELECT count() FROM alerts") == 2


def _committed(settings: Settings, topic: str = "reviews.accepted") -> int:
    """Records committed by the writer's group on ``topic``, all partitions together."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        committed = admin.list_group_offsets(settings.sink.group_id).get(settings.sink.group_id, {})
        name = settings.kafka.topic(topic)
        tps = [TopicPartition(name, p) for p in range(settings.kafka.partitions)]
        starts = consumer.beginning_offsets(tps)
        return sum(committed[tp].offset - starts[tp] for tp in tps if tp in committed)
    finally:
        consumer.close()
        admin.close()
