"""ClickHouse stopped in the middle of a stream and started again: exact counts afterwards."""

from __future__ import annotations

import socket
import time

import pytest

from haochaping.settings import ClickHouseSettings
from haochaping.stack.clickhouse import ClickHouseServer
from sinks.clickhouse import connect
from sinks.metrics import SinkMetrics
from sinks.schema import Target, migrate
from sinks.writer import SinkWriter, WriterThread
from tests.sinks.factories import count, dumps, review, wait_for

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_clickhouse(tmp_path):
    """A ClickHouse of this test's own (the shared one must not be stopped)."""
    server = ClickHouseServer(tmp_path / "var", _free_port(), _free_port())
    server.start()
    server.wait_ready(60)
    yield server
    server.stop()


def test_clickhouse_down_mid_stream_then_back_gives_exact_counts(
    sink_settings, sink_topics, produce, own_clickhouse
) -> None:
    from prometheus_client import CollectorRegistry

    settings = sink_settings.model_copy(
        update={
            "clickhouse": ClickHouseSettings(
                url=own_clickhouse.url, database=sink_settings.clickhouse.database
            )
        }
    )
    client = connect(settings.clickhouse)
    migrate(client, Target(settings.clickhouse.database))
    client.close()
    reviews = [review(i, fraud=(i % 9 == 0)) for i in range(3000)]
    metrics = SinkMetrics(CollectorRegistry())
    writer = SinkWriter(settings, metrics=metrics)

    def landed() -> int:
        c = connect(settings.clickhouse)
        try:
            return count(c, f"SELECT count() FROM {settings.clickhouse.database}.reviews")
        finally:
            c.close()

    with WriterThread(writer):
        produce("reviews.accepted", [(r.unit_code.encode(), dumps(r)) for r in reviews[:1000]])
        wait_for(lambda: landed() == 1000, what="the first 1000 reviews")
        own_clickhouse.stop()
        produce("reviews.accepted", [(r.unit_code.encode(), dumps(r)) for r in reviews[1000:2000]])
        wait_for(
            lambda: metrics.clickhouse_up._value.get() == 0, what="the writer to notice ClickHouse is down"
        )
        time.sleep(2)  # a few failed attempts, with backoff
        retries = sum(
            s.value for m in metrics.retries.collect() for s in m.samples if s.name.endswith("_total")
        )
        assert retries >= 1
        assert writer.rows_written[f"{settings.clickhouse.database}.reviews"] == 1000
        own_clickhouse.start()
        own_clickhouse.wait_ready(60)
        produce("reviews.accepted", [(r.unit_code.encode(), dumps(r)) for r in reviews[2000:]])
        wait_for(lambda: landed() >= 3000, timeout=90, what="all 3000 reviews after the restart")
        time.sleep(1)

    c = connect(settings.clickhouse)
    try:
        db = settings.clickhouse.database
        assert count(c, f"SELECT count() FROM {db}.reviews") == 3000
        assert count(c, f"SELECT uniqExact(event_id) FROM {db}.reviews") == 3000
        official = sum(1 for r in reviews if r.official)
        assert count(c, f"SELECT sum(total) FROM {db}.satisfaction_day") == official
        assert count(c, f"SELECT sum(f1+f2+f3+f4+f5) FROM {db}.satisfaction_minute") == 3000 - official
    finally:
        c.close()
