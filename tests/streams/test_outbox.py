"""Record batches per partition (``streams.outbox``) against the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from haochaping.settings import Settings
from streams.app import create_app
from streams.outbox import send_batches

pytestmark = pytest.mark.integration


def test_records_land_where_other_producers_put_their_keys_with_their_offsets(
    kafka_stack: Any, settings: Settings, create_topics: Callable[..., list[str]], tmp_path: Path
) -> None:
    [topic] = create_topics("ledger.intake", partitions=3)
    keys = [f"review:ev-{i}".encode() for i in range(300)]
    # one record bigger than half a batch: the partition's batch must be sent in two parts
    big = b"x" * (settings.streams.producer_max_batch_bytes * 2 // 3)
    records: list[tuple[str, bytes | None, bytes, int | None]] = [
        (topic, key, b"v-" + key, None) for key in keys
    ] + [(topic, b"big-1", big, 1), (topic, b"big-2", big, 1)]
    streams = settings.streams.model_copy(update={"data_dir": tmp_path})

    async def send() -> list[Any]:
        app = create_app(settings.model_copy(update={"streams": streams}))
        await app.producer.start()
        try:
            return await send_batches(app.producer, records)
        finally:
            await app.producer.stop()

    sent = asyncio.run(send())

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, consumer_timeout_ms=2000)
    tps = [TopicPartition(topic, p) for p in range(3)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = {(m.key, m.partition, m.offset) for m in consumer}
    consumer.close()
    # kafka-python (the API's producer of ledger.commands) puts each key where the worker put it
    expected = {(key, (murmur2(key) & 0x7FFFFFFF) % 3) for key in keys}
    assert {(k, p) for k, p, _ in got if k not in (b"big-1", b"big-2")} == expected
    assert sorted(p for k, p, _ in got if k in (b"big-1", b"big-2")) == [1, 1]
    # what send_batches reports is where the broker put them
    for batch in sent:
        offsets = {o for k, p, o in got if p == batch.partition}
        assert set(range(batch.first, batch.last + 1)) <= offsets
    assert sum(b.last - b.first + 1 for b in sent) == len(records)


def test_remembered_partitions_are_the_hashed_ones_and_a_new_partition_count_starts_afresh() -> None:
    from streams.outbox import KeyPartitions

    hashed: list[tuple[str, bytes]] = []

    def murmur(topic: str, key: bytes) -> int:
        hashed.append((topic, key))
        return (murmur2(key) & 0x7FFFFFFF) % count

    remembered = KeyPartitions(max_keys=3)
    keys = [b"unit-a", b"unit-b", b"unit-a", b"unit-a"]
    count = 4
    assert [remembered.get("t", k, count, murmur) for k in keys] == [
        (murmur2(k) & 0x7FFFFFFF) % 4 for k in keys
    ]
    assert hashed == [("t", b"unit-a"), ("t", b"unit-b")]  # each key hashed once

    count = 6  # the topic was given more partitions
    assert remembered.get("t", b"unit-a", count, murmur) == (murmur2(b"unit-a") & 0x7FFFFFFF) % 6
    for k in (b"k1", b"k2", b"k3", b"k4"):  # past max_keys the memory is cleared, not grown
        remembered.get("t", k, count, murmur)
    assert len(remembered._topics["t"][1]) <= 3


def test_a_batch_held_past_the_bound_is_reported_with_its_partition_and_leader() -> None:
    """A batch for a partition the producer's metadata does not know is what held a commit (and the
    rebalance after it) in the fault drill; the watchdog must name it. No broker: the producer is
    never started, so nothing is delivered."""
    from types import SimpleNamespace

    import aiokafka
    from aiokafka.structs import TopicPartition as AioTP

    from streams.outbox import Undelivered, undelivered_batches

    async def run() -> tuple[list[Undelivered], list[Undelivered]]:
        client = aiokafka.AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
        builder = client.create_batch()
        builder.append(key=b"k", value=b"v", timestamp=None)
        await client._message_accumulator.add_batch(builder, AioTP("t.ledger.events", 3), 30)
        faust_producer = SimpleNamespace(_producer=client)  # Faust's producer wraps aiokafka's as _producer
        fresh = undelivered_batches(faust_producer, older_than=10)
        batch = client._message_accumulator._batches[AioTP("t.ledger.events", 3)][0]
        batch._ctime -= 25  # as if created 25 s ago
        queued = undelivered_batches(faust_producer, older_than=10)
        client._sender._muted_partitions.add(AioTP("t.ledger.events", 3))  # a request for it in flight
        queued += undelivered_batches(faust_producer, older_than=10)
        client._message_accumulator._pop_batch(AioTP("t.ledger.events", 3))  # what the sender does to send it
        sent = undelivered_batches(faust_producer, older_than=10)
        return fresh, queued + sent

    fresh, stuck = asyncio.run(run())
    assert fresh == []
    assert [b.state for b in stuck] == ["queued", "queued behind a request in flight", "sent"]
    stuck = stuck[:1]
    assert [(b.topic, b.partition, b.leader, b.state) for b in stuck] == [
        ("t.ledger.events", 3, None, "queued")
    ]
    assert 25 <= stuck[0].waited_seconds < 60
    assert undelivered_batches(object(), older_than=10) == []  # not an aiokafka producer: nothing to say


def test_a_topic_the_producers_metadata_dropped_is_asked_for_again_and_its_batch_delivered(
    kafka_stack: Any, settings: Settings, create_topics: Callable[..., list[str]]
) -> None:
    """aiokafka's client drops from its metadata a topic it never put on its list (known from the first,
    full fetch) as soon as another topic is added; a batch of the dropped topic then waits for a leader
    until the request timeout. track_unknown_topics puts it back on the list, and the batch goes."""
    from types import SimpleNamespace

    import aiokafka

    from streams.outbox import track_unknown_topics, undelivered_batches

    [known] = create_topics("ledger.events", partitions=1)

    async def run() -> tuple[bool, list[str], bool]:
        client = aiokafka.AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=1500, request_timeout_ms=120_000
        )
        await client.start()
        # A refresh while its list is still empty fetches every topic: `known` is in the metadata
        # without being on the list, and a send() to it does not put it there.
        await client.client.force_metadata_update()
        try:
            sent = await client.send(known, b"held", partition=0)  # queued, lingering 1.5 s
            # a topic created after start-up is added to the list, and the next refresh asks for it only
            [later] = create_topics("alerts", partitions=1)
            await client.send_and_wait(later, b"x", partition=0)
            dropped = client.client.cluster.leader_for_partition(aiokafka.TopicPartition(known, 0)) is None
            await asyncio.sleep(3)  # the linger is over: the sender finds no leader for it
            still_waiting = not sent.done()
            producer = SimpleNamespace(_producer=client)
            asked = track_unknown_topics(producer, undelivered_batches(producer, older_than=1))
            await asyncio.wait_for(sent, 30)
            return dropped and still_waiting, asked, sent.done() and sent.exception() is None
        finally:
            await client.stop()

    stuck, asked, delivered = asyncio.run(run())
    assert stuck, "aiokafka no longer drops the topic: track_unknown_topics may be unneeded"
    assert asked == [known]
    assert delivered


def test_the_topics_send_batches_writes_stay_in_the_producers_metadata(
    kafka_stack: Any, settings: Settings, create_topics: Callable[..., list[str]], tmp_path: Path
) -> None:
    """send_batches puts each topic it writes on the client's list, so a topic added later (a table's
    changelog created at start-up) does not push it out of the metadata and strand its next batch."""
    import aiokafka

    [first] = create_topics("reviews.accepted", partitions=1)
    streams = settings.streams.model_copy(update={"data_dir": tmp_path})

    async def run() -> tuple[set[str], int | None]:
        app = create_app(settings.model_copy(update={"streams": streams}))
        await app.producer.start()
        try:
            client = app.producer._producer
            await client.client.force_metadata_update()  # a full refresh: `first` known, not listed
            await send_batches(app.producer, [(first, b"k", b"v", 0)])
            [later] = create_topics("alerts", partitions=1)
            await send_batches(app.producer, [(later, b"k", b"v", 0)])
            await client.client.force_metadata_update()  # refreshes the listed topics only
            listed = set(client.client._topics)
            return listed, client.client.cluster.leader_for_partition(aiokafka.TopicPartition(first, 0))
        finally:
            await app.producer.stop()

    listed, leader = asyncio.run(run())
    assert settings.kafka.topic("reviews.accepted") in listed
    assert leader is not None and leader >= 0
