"""Sending a batch's records to Kafka as one record batch per topic partition.

A stage's batch of 2,000 reviews makes some 3,000 records (accepted reviews, dedupe changelog,
minute deltas, intakes). Through ``producer.send`` each record pays aiokafka's per-message path (a
future, the partitioner, the accumulator) and Faust's wrapper around it: a fifth of the worker's
time in the profile. aiokafka's batch API (``create_batch`` / ``send_batch``) takes a whole record
batch per partition instead, with one future per batch. Partitions come from the producer's own
partitioner (``key_partition``), so a key lands where ``send`` would have put it (murmur2, the same
as the Java client and kafka-python: ``ledger.intake`` and ``ledger.commands`` stay co-partitioned).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from faust.types import ProducerT


@dataclass(frozen=True, slots=True)
class Sent:
    """Where the broker put one record batch: its records have offsets ``first .. last``."""

    topic: str
    partition: int
    first: int
    last: int


class KeyPartitions:
    """The partition of each (topic, key), remembered while the topic keeps its partition count.

    aiokafka's murmur2 is pure Python: 4.5 µs for a unit code, nearly 10 µs for a minute record's key,
    a tenth of the worker's time in the profile, while the keys repeat (a unit's reviews, a minute's
    dimensions). A topic whose partition count changes starts afresh; past ``max_keys`` keys of a
    topic its memory is cleared (minute keys are new every minute).
    """

    def __init__(self, max_keys: int = 200_000) -> None:
        self._max_keys = max_keys
        self._topics: dict[str, tuple[int, dict[bytes, int]]] = {}

    def get(self, topic: str, key: bytes, count: int, compute: Callable[[str, bytes], int]) -> int:
        entry = self._topics.get(topic)
        if entry is None or entry[0] != count:
            entry = self._topics[topic] = (count, {})
        known = entry[1]
        partition = known.get(key)
        if partition is None:
            partition = compute(topic, key)
            if len(known) >= self._max_keys:
                known.clear()
            known[key] = partition
        return partition


async def send_batches(
    producer: ProducerT,
    records: Iterable[tuple[str, bytes | None, bytes | None, int | None]],
    key_partitions: KeyPartitions | None = None,
) -> list[Sent]:
    """Send ``(topic, key, value, partition or None)`` records; return once the broker has all of them.

    A value of None is a tombstone (a table key deleted through its changelog).

    ``key_partitions`` remembers where keys go (:class:`KeyPartitions`); without it every key is hashed.

    Raises what the producer raises (the batch is then not to be acknowledged).
    """
    client = producer._ensure_producer()  # type: ignore[attr-defined]
    builders: dict[tuple[str, int], tuple[object, int]] = {}
    pending: list[tuple[str, int, int, asyncio.Future]] = []
    counts: dict[str, int] = {}

    def hashed(topic: str, key: bytes) -> int:
        return producer.key_partition(topic, key).partition  # type: ignore[no-any-return]

    async def flush(topic: str, partition: int) -> None:
        builder, count = builders.pop((topic, partition))
        future = await client.send_batch(builder, topic, partition=partition)
        pending.append((topic, partition, count, future))

    for topic, key, value, partition in records:
        if topic not in counts:
            counts[topic] = len(await client.partitions_for(topic))  # waits for the topic's metadata once
            _track(client, topic)
        if partition is None:
            if key is not None and key_partitions is not None:
                partition = key_partitions.get(topic, key, counts[topic], hashed)
            else:
                partition = producer.key_partition(topic, key).partition  # type: ignore[arg-type]
        slot = (topic, partition)
        if slot not in builders:
            builders[slot] = (client.create_batch(), 0)
        builder, count = builders[slot]
        if builder.append(key=key, value=value, timestamp=None) is None:  # type: ignore[attr-defined]
            await flush(topic, partition)
            builder = client.create_batch()
            if builder.append(key=key, value=value, timestamp=None) is None:  # type: ignore[attr-defined]
                raise ValueError(
                    f"a record of {len(value or b'')} bytes for {topic} does not fit in a producer batch: "
                    "raise streams.producer_max_batch_bytes (and the broker's message.max.bytes)"
                )
            count = 0
        builders[slot] = (builder, count + 1)
    for topic, partition in list(builders):
        await flush(topic, partition)
    if not pending:
        return []
    results = await asyncio.gather(*(future for *_, future in pending))
    return [
        Sent(topic, partition, metadata.offset, metadata.offset + count - 1)
        for (topic, partition, count, _), metadata in zip(pending, results, strict=True)
    ]


def _track(client: Any, topic: str) -> None:
    """Put ``topic`` on the list of topics aiokafka's client refreshes the metadata of.

    ``partitions_for`` and ``send_batch`` do not (only ``send()`` does, and only when the topic's
    metadata is missing at that moment): a topic known from a full refresh would drop out of the
    metadata as soon as another topic is listed, and a batch of it would wait for a leader until the
    request timeout (:func:`track_unknown_topics` is the watchdog's remedy for the other send paths).
    """
    tracked = getattr(getattr(client, "client", None), "_topics", None)
    if isinstance(tracked, set) and topic not in tracked:
        client.client.add_topic(topic)


class Undelivered(NamedTuple):
    """An output batch the producer still holds: for which partition, how long, what the producer's
    metadata says of that partition's leader (None: the partition is unknown to it; -1: no leader),
    and whether it is ``queued`` (behind a produce request in flight for its partition, or not) or was
    ``sent`` and awaits the broker's answer."""

    topic: str
    partition: int
    waited_seconds: float
    leader: int | None
    state: str


def undelivered_batches(producer: Any, older_than: float) -> list[Undelivered]:
    """The batches ``producer`` (Faust's aiokafka producer) has held for more than ``older_than`` seconds.

    A commit flushes the producer first, so one batch that is never delivered holds every later
    commit, and with it the next rebalance. aiokafka gives up on such a batch only after the request
    timeout (Faust's default: 20 minutes). Reads aiokafka's accumulator; an empty list if its shape
    is not the one known here.
    """
    client = getattr(producer, "_producer", None)
    accumulator = getattr(client, "_message_accumulator", None)
    queued = getattr(accumulator, "_batches", None)
    sent = getattr(accumulator, "_pending_batches", None)
    if client is None or not isinstance(queued, dict) or not isinstance(sent, set):
        return []
    # A muted partition has a produce request in flight; the sender takes no other batch of it until
    # that request ends.
    muted = getattr(getattr(client, "_sender", None), "_muted_partitions", set())
    held = [
        (batch, "queued behind a request in flight" if tp in muted else "queued")
        for tp, batches in list(queued.items())
        for batch in list(batches)
    ]
    held += [(batch, "sent") for batch in list(sent)]
    cluster = client.client.cluster
    now = time.monotonic()
    found = []
    for batch, state in held:
        created, tp = getattr(batch, "_ctime", None), getattr(batch, "tp", None)
        if created is not None and tp is not None and now - created > older_than:
            found.append(
                Undelivered(tp.topic, tp.partition, now - created, cluster.leader_for_partition(tp), state)
            )
    return found


def track_unknown_topics(producer: Any, stuck: Iterable[Undelivered]) -> list[str]:
    """Have the producer's client ask the broker again for the topics of ``stuck`` batches whose leader
    its metadata does not know; the topics it had stopped asking for.

    aiokafka's client asks for the metadata of the topics in its list only, and ``send()`` adds a topic
    to that list only when the topic is missing from the metadata at that moment. A topic the first
    full fetch already knew was never added: once any new topic is added (a table's changelog created
    at start-up), the next refresh drops it, and a batch of it already queued waits for a leader that
    every later refresh leaves out, until the request timeout. Its commit's flush waits with it, and
    the next rebalance behind that (the fault drill's survivor stopped that way).
    """
    client = getattr(getattr(producer, "_producer", None), "client", None)
    tracked = getattr(client, "_topics", None)
    if client is None or not isinstance(tracked, set):
        return []
    missing = sorted({b.topic for b in stuck if b.leader is None} - tracked)
    for topic in missing:
        client.add_topic(topic)  # adds it to the list and forces a refresh
    return missing
