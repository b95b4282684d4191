"""Writing Faust tables from a batch (``noack_take``), one write per key per batch.

Faust decides the changelog partition of a table write, and RocksDB the partition database, from
the *current event* (``faust.streams.current_event()``): the event the stream is iterating. A batch
taken with ``noack_take`` is consumed in a background task, so the agent that handles the batch has
no current event and a plain ``table[key] = value`` fails with "Cannot modify table key from outside
of stream iteration" (faust-streaming#497).

Every table here is keyed so that a key lives in the partition of the source record that changes it
(the dedupe table by unit code + case, the ticket table by ticket id), so the right partition for a
write is the partition of the source event that caused it. :func:`writing_for` makes that event
current for the duration of the writes, through the same context variable Faust's own stream
iteration sets; Faust then does everything else as usual (changelog record on the right partition,
persisted offsets for RocksDB, partition-count checks). The integration tests that restart a worker
and check its recovered state are what guards this against a Faust upgrade.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import faust.streams
from faust.types import EventT


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


def write_per_partition(
    table: Any, writes: Mapping[int, Mapping[bytes, bytes]], events_by_partition: Mapping[int, EventT]
) -> int:
    """Apply ``{partition: {key: value}}`` to ``table``; return the number of keys written."""
    n = 0
    for partition, items in writes.items():
        with writing_for(events_by_partition[partition]):
            for key, value in items.items():
                table[key] = value
                n += 1
    return n
