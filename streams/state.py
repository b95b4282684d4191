"""Writing Faust tables from a batch (``streams.take.take_batches``), one write per key per batch.

Faust decides the changelog partition of a table write, and RocksDB the partition database, from
the *current event* (``faust.streams.current_event()``): the event the stream is iterating. The
agents take their batches from the channel queue without iterating a stream, so the agent that
handles a batch has no current event and a plain ``table[key] = value`` fails with "Cannot modify
table key from outside of stream iteration" (faust-streaming#497; Faust's own ``noack_take`` left
the agent in the same place, its stream being drained in a background task).

Every table here is keyed so that a key lives in the partition of the source record that changes it
(the dedupe table by unit code + case, the ticket table by ticket id), so the right partition for a
write is the partition of the source event that caused it. :func:`writing_for` makes that event
current for the duration of the writes, through the same context variable Faust's own stream
iteration sets, so the store (RocksDB: one database per partition) files the key where Faust's
recovery will look for it. :func:`write_per_partition` sends the changelog record to that same
partition itself and records the persisted offset as Faust's changelog callback does (see there
why not through ``table[key] = value``). The integration tests that restart a worker and check its
recovered state are what guards this against a Faust upgrade.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import faust.streams
from faust.types import TP, EventT, ProducerT

from streams.outbox import send_batches


@contextmanager
def writing_for(event: EventT) -> Iterator[None]:
    """Make ``event`` the current event: table writes inside go to its topic partition."""
    token = faust.streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)


def last_event_per_partition(events: Sequence[EventT]) -> dict[int, EventT]:
    """The last event of each source partition in a batch (any event of it would do)."""
    out: dict[int, EventT] = {}
    for event in events:
        out[event.message.partition] = event
    return out


async def write_per_partition(
    producer: ProducerT,
    table: Any,
    writes: Mapping[int, Mapping[bytes, bytes | None]],
    events_by_partition: Mapping[int, EventT],
) -> int:
    """Apply ``{partition: {key: value}}`` to ``table`` and its changelog; return the keys written.

    A value of None deletes the key: from the store, and by a tombstone on the changelog, so
    compaction drops the key and a worker recovering the partition never sees it again.

    Returns once the broker has every changelog record. Faust's own ``table[key] = value`` queues
    the changelog record in its producer buffer (``send_soon``); past 100 queued records Faust's
    conductor stops *all* consumption to drain that buffer one record at a time, which stalled the
    worker for hundreds of milliseconds after every batch. Here the value goes to the table's store
    and its changelog record to the producer as one record batch per partition, and the persisted
    offset is recorded as Faust's own changelog callback does (RocksDB recovery starts after it).
    """
    store = table.data
    topic = table.changelog_topic.get_topic_name()
    records: list[tuple[str, bytes | None, bytes | None, int | None]] = []
    # Faust's memory store files recovered keys by partition here (RocksDB keeps a database per
    # partition); keeping it for written keys too lets partition_items list a partition's keys.
    key_partition = getattr(store, "_key_partition", None)
    for partition, items in writes.items():
        with writing_for(events_by_partition[partition]):
            for key, value in items.items():
                if value is None:
                    store.pop(key, None)
                    if key_partition is not None:
                        key_partition.pop(key, None)
                else:
                    store[key] = value
                    if key_partition is not None:
                        key_partition[key] = partition
                records.append((topic, key, value, partition))
    if not records:
        return 0
    last: dict[TP, int] = {}
    for sent in await send_batches(producer, records):
        tp = TP(sent.topic, sent.partition)
        last[tp] = max(last.get(tp, -1), sent.last)
    for tp, offset in last.items():
        store.set_persisted_offset(tp, offset)
    return len(records)


def partition_items(table: Any, partition: int, after: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """The table's ``(key, value)`` of one partition in key order, starting after ``after``.

    RocksDB (production): the partition's own database, seeked to ``after``, so a step costs the keys
    it reads however large the table is. Memory store (tests): the keys Faust filed under the
    partition (see :func:`write_per_partition`), sorted on every call, which is fine for test tables.
    Read lazily: the caller stops after the keys it wants.
    """
    store = table.data
    dbs = getattr(store, "_dbs", None)
    if dbs is not None:
        db = dbs.get(partition)
        if db is None:  # not assigned here, or nothing written yet
            return
        offset_key = store.offset_key
        for key, value in db.items(from_key=after) if after is not None else db.items():
            if key != offset_key and key != after:
                yield key, value
        return
    key_partition = store._key_partition
    keys = sorted(k for k, p in key_partition.items() if p == partition and (after is None or k > after))
    for key in keys:
        value = store.data.get(key)
        if value is not None:
            yield key, value
