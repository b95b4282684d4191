"""The writer against the real broker and the real ClickHouse: what lands, and that it lands once."""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import pytest

from haochaping.domain.contract import Level
from haochaping.domain.records import LedgerEventType, TicketStatus
from haochaping.settings import Settings
from sinks.batches import Batch
from sinks.clickhouse import insert_json_rows
from sinks.metrics import SinkMetrics
from sinks.writer import SinkWriter, WriterThread
from tests.sinks.factories import UNITS, alert, count, dumps, ledger_event, review, ticket, wait_for

pytestmark = pytest.mark.integration


def writer(settings: Settings) -> WriterThread:
    from prometheus_client import CollectorRegistry

    return WriterThread(SinkWriter(settings, metrics=SinkMetrics(CollectorRegistry())))


def recount(reviews: list[Any]) -> dict[str, tuple[int, float, float, float]]:
    """Per unit, from the produced events: (ratings, 满意率, 差评率, score), official ratings only."""
    per_unit: dict[str, list[int]] = {}
    for r in reviews:
        if r.official:
            per_unit.setdefault(r.unit_code, []).append(r.stars)
    out = {}
    for unit, stars in per_unit.items():
        n = len(stars)
        satisfied = sum(1 for s in stars if s >= 3)
        bad = sum(1 for s in stars if s <= 2)
        score = sum(Level(s).score for s in stars) / n
        out[unit] = (n, satisfied / n, bad / n, score)
    return out


FIGURES_SQL = """
SELECT unit_code, sum(total), sum(satisfied) / sum(total), sum(bad) / sum(total), sum(score_sum) / sum(total)
FROM satisfaction_day GROUP BY unit_code
"""


def figures(client: Any) -> dict[str, tuple[int, float, float, float]]:
    return {row[0]: (int(row[1]), row[2], row[3], row[4]) for row in client.query(FIGURES_SQL).result_rows}


def assert_figures_match(client: Any, reviews: list[Any]) -> None:
    expected = recount(reviews)
    got = figures(client)
    assert got.keys() == expected.keys()
    for unit, (n, sat, bad, score) in expected.items():
        assert got[unit][0] == n, unit
        assert got[unit][1] == pytest.approx(sat), unit
        assert got[unit][2] == pytest.approx(bad), unit
        assert got[unit][3] == pytest.approx(score), unit


def test_reviews_tickets_and_alerts_land_with_their_values(
    sink_settings, sink_topics, migrated, produce
) -> None:
    reviews = [review(i, fraud=(i % 10 == 0)) for i in range(300)]
    produce("reviews.accepted", [(r.unit_code.encode(), dumps(r)) for r in reviews])
    t1, t2, t3 = (
        ticket("tk-1", 1),
        ticket("tk-1", 2, status=TicketStatus.ASSIGNED, unit=UNITS[1]),
        ticket("tk-2", 1),
    )
    produce(
        "ledger.events",
        [
            (b"tk-1", dumps(ledger_event(t1, LedgerEventType.OPENED))),
            (b"tk-1", dumps(ledger_event(t2, LedgerEventType.ASSIGNED))),
            (b"tk-2", dumps(ledger_event(t3, LedgerEventType.OPENED))),
        ],
    )
    produce("alerts", [(UNITS[0].encode(), dumps(alert(i))) for i in range(3)])

    with writer(sink_settings):
        wait_for(lambda: count(migrated, "SELECT count() FROM reviews") == 300, what="300 reviews")
        wait_for(lambda: count(migrated, "SELECT count() FROM ticket_events") == 3, what="3 ticket events")
        wait_for(lambda: count(migrated, "SELECT count() FROM alerts") == 3, what="3 alerts")

    row = migrated.query(
        "SELECT event_id, channel, stars, unit_code, hall_id, window_id, staff_id, toString(rated_at), "
        "official, fraud_flags, text, tags, score, satisfied, bad FROM reviews WHERE event_id = 'ev-0000000'"
    ).result_rows[0]
    assert row == (
        "ev-0000000",
        "hall_device",
        1,
        UNITS[0],
        "hall-01",
        "w-0",
        "s-0",
        "2026-11-25 09:00:00.000",
        False,
        ["device_burst"],
        "窗口态度很好",
        ["t1", "t2"],
        0,
        False,
        True,
    )
    assert count(migrated, "SELECT count() FROM reviews WHERE NOT official") == 30

    tickets = migrated.query(
        "SELECT ticket_id, version, status, unit_code, measures, last_event FROM tickets FINAL ORDER BY ticket_id"
    ).result_rows
    assert tickets == [
        ("tk-1", 2, "assigned", UNITS[1], ["当场整改"], "assigned"),
        ("tk-2", 1, "new", UNITS[0], [], "opened"),
    ]
    snapshot = migrated.query("SELECT ticket FROM ticket_events WHERE event_id = 'tk-1:2'").result_rows[0][0]
    assert json.loads(snapshot)["responsible_person"] is None
    assert migrated.query("SELECT alert_id, kind, detail FROM alerts ORDER BY alert_id").result_rows[0] == (
        "al-0",
        "red_ticket",
        "新的红色工单",
    )
    # The minute rollup counts what the raw table holds, official and flagged apart.
    assert count(migrated, "SELECT sum(n1 + n2 + n3 + n4 + n5) FROM satisfaction_minute") == 270
    assert count(migrated, "SELECT sum(f1 + f2 + f3 + f4 + f5) FROM satisfaction_minute") == 30
    assert_figures_match(migrated, reviews)


def test_the_same_batch_delivered_twice_counts_once_in_raw_and_rollups(sink_settings, migrated) -> None:
    reviews = [review(i) for i in range(50)]
    batch = Batch("reviews.accepted", 0, 100, 149, tuple(range(100, 150)), tuple(dumps(r) for r in reviews))
    table = f"{sink_settings.clickhouse.database}.reviews"
    insert_json_rows(migrated, table, batch.values, batch.token)
    insert_json_rows(migrated, table, batch.values, batch.token)
    assert count(migrated, "SELECT count() FROM reviews") == 50
    assert count(migrated, "SELECT sum(n1 + n2 + n3 + n4 + n5) FROM satisfaction_minute") == 50
    assert count(migrated, "SELECT sum(total) FROM satisfaction_month") == 50
    # Another batch with the very same rows but other offsets is new data, and counts.
    insert_json_rows(migrated, table, batch.values, "reviews.accepted:0:150-199")
    assert count(migrated, "SELECT count() FROM reviews") == 100
    assert count(migrated, "SELECT sum(n1 + n2 + n3 + n4 + n5) FROM satisfaction_minute") == 100


class CrashAfterInsert(SinkWriter):
    """Dies the way a killed process does: after its batches are inserted, before their offsets commit."""

    async def _write_pending(self) -> None:
        loop = __import__("asyncio").get_running_loop()
        for batch in list(self._pending.values()):
            outcome = await loop.run_in_executor(self._pool, self._write_batch, batch)
            assert outcome.error is None
        raise SystemExit("crash between insert and commit")


def test_a_crash_between_insert_and_commit_counts_every_review_once(
    sink_settings, sink_topics, migrated, produce
) -> None:
    from prometheus_client import CollectorRegistry

    reviews = [review(i, fraud=(i % 17 == 0)) for i in range(1200)]
    produce("reviews.accepted", [(r.unit_code.encode(), dumps(r)) for r in reviews])
    crashing = WriterThread(CrashAfterInsert(sink_settings, metrics=SinkMetrics(CollectorRegistry())))
    crashing.start()
    wait_for(lambda: not crashing.is_alive(), what="the writer to crash")
    with pytest.raises(SystemExit):
        crashing.stop()
    landed = count(migrated, "SELECT count() FROM reviews")
    assert 0 < landed < 1200  # the crashed writer wrote batches whose offsets it never committed

    # More records arrive while no writer runs: the restarted writer's first batches would be bigger if
    # it cut them by size and time alone; the intents make it cut the crashed batches as they were.
    more = [review(i) for i in range(1200, 1500)]
    produce("reviews.accepted", [(r.unit_code.encode(), dumps(r)) for r in more])
    restarted = sink_settings.model_copy(
        update={"sink": sink_settings.sink.model_copy(update={"batch_rows": 5000, "batch_seconds": 1.0})}
    )
    with writer(restarted):
        wait_for(lambda: count(migrated, "SELECT count() FROM reviews") >= 1500, what="1500 reviews")
        wait_for(lambda: _lag_is_zero(restarted), what="all offsets committed")
    all_reviews = reviews + more
    assert count(migrated, "SELECT count() FROM reviews") == 1500
    assert count(migrated, "SELECT uniqExact(event_id) FROM reviews") == 1500
    assert count(migrated, "SELECT sum(n1+n2+n3+n4+n5+f1+f2+f3+f4+f5) FROM satisfaction_minute") == 1500
    assert_figures_match(migrated, all_reviews)
    by_level = Counter(r.stars for r in all_reviews if r.official)
    got = migrated.query(
        "SELECT sum(n1), sum(n2), sum(n3), sum(n4), sum(n5) FROM satisfaction_month"
    ).result_rows[0]
    assert list(got) == [by_level[s] for s in range(1, 6)]


def _lag_is_zero(settings: Settings) -> bool:
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        committed = admin.list_group_offsets(settings.sink.group_id).get(settings.sink.group_id, {})
        topic = settings.kafka.topic("reviews.accepted")
        tps = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
        ends = consumer.end_offsets(tps)
        return all((committed[tp].offset if tp in committed else 0) == ends[tp] for tp in tps)
    finally:
        consumer.close()
        admin.close()


def test_a_record_clickhouse_refuses_goes_to_the_dead_letter_topic_and_the_rest_lands(
    sink_settings, sink_topics, migrated, produce
) -> None:
    from kafka import KafkaConsumer

    good = [review(i) for i in range(40)]
    records = [(r.unit_code.encode(), dumps(r)) for r in good]
    records.insert(17, (UNITS[0].encode(), b'{"event_id": "broken", "stars": "five"}'))
    produce("reviews.accepted", [(UNITS[0].encode(), v) for _, v in records])  # one partition: one batch
    with writer(sink_settings):
        wait_for(lambda: count(migrated, "SELECT count() FROM reviews") == 40, what="the 40 good reviews")
        consumer = KafkaConsumer(
            sink_settings.kafka.topic("deadletter"),
            bootstrap_servers=sink_settings.kafka.bootstrap_servers,
            auto_offset_reset="earliest",
            consumer_timeout_ms=10_000,
        )
        letters = [json.loads(m.value) for m in consumer]
        consumer.close()
    assert len(letters) == 1
    assert letters[0]["stage"] == "sinks.clickhouse"
    assert letters[0]["offset"] == 17
    assert base64.b64decode(letters[0]["original_b64"]) == records[17][1]  # as it came, unmarked
    assert "reviews" in letters[0]["reason"] and "Cannot parse" in letters[0]["reason"]
    assert count(migrated, "SELECT count() FROM reviews") == 40
