"""The sink's own stall check (sinks/writer.py, ``StallCheck``): a lane with records waiting that has fetched
nothing, finished no batch and failed no insert attempt for ``sink.stall_seconds`` calls its exit with 70;
a lane retrying through a ClickHouse outage, or one with nothing left to write, never does."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from haochaping.liveness import STALL_EXIT_CODE
from haochaping.settings import ClickHouseSettings, Settings
from sinks.batches import Batch, PartitionBuffer
from sinks.metrics import SinkMetrics
from sinks.writer import LIVENESS_CHECK_SECONDS, SinkWriter, WriterThread, _Outcome, lanes
from tests.sinks.factories import alert, dumps, review, wait_for

STALL = 3.0  # sink.stall_seconds in these tests


@pytest.fixture
def stall_settings(sink_settings: Settings) -> Settings:
    return sink_settings.model_copy(
        update={"sink": sink_settings.sink.model_copy(update={"stall_seconds": STALL})}
    )


def _writer(settings: Settings, cls: type[SinkWriter] = SinkWriter) -> SinkWriter:
    return cls(settings, metrics=SinkMetrics(CollectorRegistry()), topics=("reviews.accepted",), lane="bulk")


def _record(topic: str, partition: int, offset: int, value: bytes | None = b"{}") -> Any:
    from aiokafka.structs import ConsumerRecord

    return ConsumerRecord(topic, partition, offset, 0, 0, None, value, None, 0, len(value or b""), [])


# -- what counts as moving (no server) ----------------------------------------------------------------


def test_each_record_fetched_for_a_partition_moves_the_writer(sink_settings: Settings) -> None:
    from aiokafka import TopicPartition

    writer = _writer(sink_settings)
    topic = sink_settings.kafka.topic("reviews.accepted")
    writer._buffers[(topic, 0)] = PartitionBuffer(topic, 0)
    fetched = {
        TopicPartition(topic, 0): [_record(topic, 0, 0), _record(topic, 0, 1, None), _record(topic, 0, 2)],
        # not set up yet (its committed offset still being looked up): dropped, read again later
        TopicPartition(topic, 1): [_record(topic, 1, 0)],
    }
    writer._take(fetched, time.monotonic(), time.time())
    assert writer.moved == 3  # a tombstone is fetched too, though it has nothing to write
    assert len(writer._buffers[(topic, 0)]) == 2


def test_every_insert_that_ends_moves_the_writer_written_or_failed(sink_settings: Settings) -> None:
    from aiokafka import AIOKafkaConsumer

    topic = sink_settings.kafka.topic("reviews.accepted")
    key = (topic, 0)
    batch = Batch(topic, 0, 0, 1, (0, 1), (b"{}", b"{}"))

    async def main() -> SinkWriter:
        writer = _writer(sink_settings)
        # Never started: a failed insert pauses the (here no) assigned partitions through it.
        writer._consumer = AIOKafkaConsumer(bootstrap_servers=sink_settings.kafka.bootstrap_servers)
        loop = asyncio.get_running_loop()

        def ended(outcome: _Outcome) -> None:
            writer._pending[key] = batch
            writer._writing[key] = loop.create_future()
            writer._writing[key].set_result(outcome)
            writer._reap()

        ended(_Outcome(batch, error=ConnectionRefusedError("ClickHouse is down")))
        assert writer.moved == 1 and key in writer._retrying
        writer._retrying.clear()
        ended(_Outcome(batch))
        assert writer.moved == 2 and key not in writer._pending
        return writer

    writer = asyncio.run(main())
    assert "being inserted: none" in writer.state()


def test_a_stall_bound_a_backoff_would_reach_is_refused_at_start(sink_settings: Settings) -> None:
    settings = sink_settings.model_copy(
        update={
            "sink": sink_settings.sink.model_copy(update={"stall_seconds": 20, "max_backoff_seconds": 30})
        }
    )
    with pytest.raises(ValueError) as refused:
        lanes(settings)
    message = str(refused.value)
    assert "sink.stall_seconds is 20 s, not above sink.max_backoff_seconds (30 s)" in message
    assert "or 0 to turn the check off" in message
    off = settings.model_copy(update={"sink": settings.sink.model_copy(update={"stall_seconds": 0})})
    assert lanes(off)


# -- the check against the real broker and ClickHouse -------------------------------------------------


class HangingInsert(SinkWriter):
    """Its inserts do not return until released: an insert thread stuck (a server that holds the connection
    and never answers, a lock never released), not a failing ClickHouse."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.hung = threading.Event()
        self.last_fetch = 0.0  # when records were last fetched: the last time this writer moved

    def _take(self, data: Any, now: float, wall: float) -> None:
        if any(data.values()):
            self.last_fetch = time.monotonic()
        super()._take(data, now, wall)

    def _write_batch(self, batch: Batch) -> _Outcome:
        self.hung.set()
        self.release.wait(300)
        return super()._write_batch(batch)


@pytest.mark.integration
def test_a_lane_whose_insert_hangs_exits_70_once_stalled_for_the_bound(
    stall_settings: Settings,
    sink_topics: list[str],
    migrated: Any,
    produce: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    produce("reviews.accepted", [(r.unit_code.encode(), dumps(r)) for r in map(review, range(600))])
    writer = _writer(stall_settings, HangingInsert)
    assert isinstance(writer, HangingInsert)
    exits: list[tuple[int, float]] = []
    thread = WriterThread(writer, on_stall=lambda code: exits.append((code, time.monotonic())))
    with caplog.at_level(logging.INFO, logger="sinks.writer"):
        thread.start()
        try:
            wait_for(lambda: bool(exits), timeout=60 + STALL, what="the stall check to call the exit")
        finally:
            writer.release.set()
            thread.stop()
    [(code, at)] = exits
    assert code == STALL_EXIT_CODE and writer.hung.is_set()
    # Not before the bound after the lane last moved, nor long after it.
    assert STALL <= at - writer.last_fetch <= STALL + 3 * LIVENESS_CHECK_SECONDS
    # The log says which lane, why, and what the writer was doing.
    topic = stall_settings.kafka.topic("reviews.accepted")
    [line] = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert line.startswith(f"sink lane bulk ({topic}) stalled: no record fetched and no batch finished for ")
    assert "record(s) wait on" in line and f"being inserted: {topic}[" in line and "the oldest for " in line
    assert "exiting with 70" in line


class HangingReviewsInsert(HangingInsert):
    """Only the reviews' inserts hang; the lane's alerts are inserted as usual, as long as an insert thread
    is free (the hung inserts may take them all)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hung_at = 0.0

    def _write_batch(self, batch: Batch) -> _Outcome:
        if not batch.topic.endswith("reviews.accepted"):
            return SinkWriter._write_batch(self, batch)
        self.hung_at = time.monotonic()
        return super()._write_batch(batch)


@pytest.mark.integration
def test_one_partition_whose_insert_hangs_while_the_lane_moves_on_exits_70(
    stall_settings: Settings,
    sink_topics: list[str],
    migrated: Any,
    produce: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    produce("reviews.accepted", [(r.unit_code.encode(), dumps(r)) for r in map(review, range(100))])
    writer = HangingReviewsInsert(
        stall_settings,
        metrics=SinkMetrics(CollectorRegistry()),
        topics=("reviews.accepted", "alerts"),
        lane="bulk",
    )
    exits: list[tuple[int, float]] = []
    thread = WriterThread(writer, on_stall=lambda code: exits.append((code, time.monotonic())))
    n = 0
    with caplog.at_level(logging.INFO, logger="sinks.writer"):
        thread.start()
        try:
            deadline = time.monotonic() + 60 + STALL
            while not exits and time.monotonic() < deadline:
                # Alerts keep coming and the lane keeps fetching them: it moves the whole time.
                produce("alerts", [(a.unit_code.encode(), dumps(a)) for a in map(alert, range(n, n + 5))])
                n += 5
                time.sleep(0.3)
        finally:
            writer.release.set()
            thread.stop()
    assert exits, "the stall check should have called the exit"
    [(code, at)] = exits
    assert code == STALL_EXIT_CODE
    assert writer.rows_written[f"{stall_settings.clickhouse.database}.alerts"] > 0
    # The alerts moved the lane up to the end; the verdict came from the stuck insert's own age (the
    # lane's own rule would not fire while it moves).
    assert writer.last_fetch > writer.hung_at + STALL - 1
    assert STALL <= at - writer.hung_at <= STALL + 3 * LIVENESS_CHECK_SECONDS
    topic = stall_settings.kafka.topic("reviews.accepted")
    [line] = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert f"stalled: the insert of {topic}[" in line
    assert "has not returned for " in line and "while the lane's other partitions moved on" in line
    assert "exiting with 70" in line


@pytest.mark.integration
def test_a_lane_retrying_through_a_clickhouse_outage_is_never_stalled(
    stall_settings: Settings, sink_topics: list[str], produce: Any
) -> None:
    from haochaping.simulator.pipeline import free_port

    nowhere = stall_settings.model_copy(
        update={
            "clickhouse": ClickHouseSettings(
                url=f"http://127.0.0.1:{free_port()}", database=stall_settings.clickhouse.database
            )
        }
    )
    produce("reviews.accepted", [(r.unit_code.encode(), dumps(r)) for r in map(review, range(300))])
    writer = _writer(nowhere)
    exits: list[int] = []

    def failed_attempts() -> float:
        return sum(
            s.value for m in writer.metrics.retries.collect() for s in m.samples if s.name.endswith("_total")
        )

    with WriterThread(writer, on_stall=exits.append):
        wait_for(lambda: failed_attempts() >= 1, what="the first insert to fail")
        first = failed_attempts()
        time.sleep(4 * STALL)  # every record fetched long ago; only the attempts go on
        assert failed_attempts() >= first + 4, "the writer should have kept trying, with backoff"
        assert exits == [], "retrying through an outage is what the writer should do, not a stall"
    assert sum(writer.rows_written.values()) == 0


@pytest.mark.integration
def test_an_idle_lane_with_everything_written_is_never_stalled(
    stall_settings: Settings, sink_topics: list[str], migrated: Any, produce: Any
) -> None:
    produce("reviews.accepted", [(r.unit_code.encode(), dumps(r)) for r in map(review, range(200))])
    # Idle for several bounds: the broker's end offsets are the offsets the writer committed.
    _writes_then_idles_without_a_stall(stall_settings, 200)


def _writes_then_idles_without_a_stall(settings: Settings, n: int) -> None:
    writer = _writer(settings)
    exits: list[int] = []
    with WriterThread(writer, on_stall=exits.append):
        wait_for(lambda: sum(writer.rows_written.values()) == n, what=f"the {n} reviews written")
        time.sleep(4 * STALL)
        assert exits == []


@pytest.mark.integration
def test_an_idle_lane_after_a_transactional_producer_is_never_stalled(
    stall_settings: Settings, sink_topics: list[str], migrated: Any
) -> None:
    """A transaction's commit marker follows its last record: the offset committed after the batch stops
    short of it (the marker is never fetched), so the end offset stays one above; nothing waits."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=stall_settings.kafka.bootstrap_servers,
        transactional_id=f"stall-test-{stall_settings.clickhouse.database}",
    )
    producer.init_transactions()
    producer.begin_transaction()
    for r in map(review, range(90)):
        producer.send(
            stall_settings.kafka.topic("reviews.accepted"), key=r.unit_code.encode(), value=dumps(r)
        )
    producer.commit_transaction()
    producer.close()
    _writes_then_idles_without_a_stall(stall_settings, 90)
