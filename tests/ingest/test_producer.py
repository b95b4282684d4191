"""A request's records are written as kafka-python's own send() would write them, and each answer says
where Kafka put each record."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka.partitioner.default import murmur2

from haochaping.settings import Settings
from ingest.producer import BrokerUnavailable, Delivered, EventProducer, OutgoingRecord, _Appender

pytestmark = pytest.mark.integration


def _send(
    settings: Settings, *requests: list[OutgoingRecord], bulk: bool = True
) -> tuple[list[list[Delivered]], bool]:
    async def run() -> tuple[list[list[Delivered]], bool]:
        producer = EventProducer(settings)
        try:
            await producer.connect()
            if not bulk:  # as with a kafka-python whose internals differ: send() per record
                producer._append = _Appender(producer._producer, bulk=False)
            answers = [await producer.send_all(records) for records in requests]
            assert producer._append is not None
            return answers, producer._append.bulk
        finally:
            await producer.close()

    return asyncio.run(run())


@pytest.mark.parametrize("bulk", [True, False], ids=["appended in one go", "sent one by one"])
def test_records_land_on_the_keys_partition_in_order_where_the_answer_says(
    ingest_settings: Settings, ingest_topics: None, read_topic: Callable[..., list[Any]], bulk: bool
) -> None:
    topic = ingest_settings.kafka.topic("reviews.raw")
    started_ms = time.time() * 1000 - 1000
    requests = [
        [OutgoingRecord(topic, b"unit-%d" % (i % 7), b"r%d-%d" % (n, i)) for i in range(300)]
        for n in range(2)
    ]
    answers, appended = _send(ingest_settings, *requests, bulk=bulk)
    assert appended == bulk, "kafka-python 3.0.x is pinned: its records are appended in one go"

    written = {r.value: r for r in read_topic("reviews.raw", 600)}
    assert len(written) == 600
    count = ingest_settings.kafka.partitions
    last_offset: dict[bytes, int] = {}
    for records, delivered in zip(requests, answers, strict=True):
        for record, where in zip(records, delivered, strict=True):
            seen = written[record.value]
            assert seen.key == record.key
            assert (where.topic, where.partition, where.offset) == (topic, seen.partition, seen.offset)
            assert seen.partition == (murmur2(record.key) & 0x7FFFFFFF) % count
            assert seen.offset > last_offset.get(record.key, -1)  # one key's records keep their order
            last_offset[record.key] = seen.offset
            assert seen.timestamp >= started_ms


def test_a_keyless_record_is_written_too(
    ingest_settings: Settings, ingest_topics: None, read_topic: Callable[..., list[Any]]
) -> None:
    topic = ingest_settings.kafka.topic("deadletter")
    (delivered,), _ = _send(
        ingest_settings, [OutgoingRecord(topic, None, b"a"), OutgoingRecord(topic, b"k", b"b")]
    )
    written = {r.value: (r.partition, r.offset) for r in read_topic("deadletter", 2)}
    assert written == {b"a": delivered[0][1:], b"b": delivered[1][1:]}


def test_a_record_larger_than_kafka_takes_is_refused_and_nothing_of_it_is_written(
    ingest_settings: Settings, ingest_topics: None, read_topic: Callable[..., list[Any]]
) -> None:
    topic = ingest_settings.kafka.topic("reviews.raw")
    with pytest.raises(BrokerUnavailable, match="Kafka refused the record"):
        _send(ingest_settings, [OutgoingRecord(topic, b"k", b"x" * (2 * 1024 * 1024))])
    assert read_topic("reviews.raw", 1, timeout=2.0) == []
