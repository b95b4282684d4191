"""Cutting a partition's records into batches whose boundaries survive a crash (no I/O here).

A batch is a run of one partition's offsets ``[start, last]``: ``start`` is the committed offset it
begins at, ``last`` the offset of its last record. Before the writer inserts a batch it commits
``start`` again with the *intent* ``last`` in the commit's metadata; after the insert it commits
``last + 1`` with empty metadata. Whoever reads the partition next (the same process after a retry,
another after a crash or rebalance) finds the intent beside the committed offset and cuts the very
same batch, whatever its size and time bounds say, so the insert carries the same deduplication token
and ClickHouse drops it if it had landed already. Batches without an intent pending are cut by size
(``max_rows``) and age (``max_age``), which may differ from run to run: nothing was inserted for them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

_INTENT_PREFIX = "haochaping-sink/1 last="


def encode_intent(last: int) -> str:
    return f"{_INTENT_PREFIX}{last}"


def decode_intent(metadata: str | None) -> int | None:
    """The last offset of the batch that was about to be inserted, or None if no insert was pending."""
    if not metadata or not metadata.startswith(_INTENT_PREFIX):
        return None
    try:
        return int(metadata[len(_INTENT_PREFIX) :])
    except ValueError:
        return None


@dataclass(frozen=True)
class Batch:
    topic: str
    partition: int
    start: int  # the committed offset the batch begins at (may precede its first record)
    last: int  # offset of its last record
    offsets: tuple[int, ...]
    values: tuple[bytes, ...]

    @property
    def next_offset(self) -> int:
        return self.last + 1

    @property
    def token(self) -> str:
        """The insert deduplication token: the same for every delivery of the same batch."""
        return f"{self.topic}:{self.partition}:{self.start}-{self.last}"

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class PartitionBuffer:
    """Records of one partition read but not yet written."""

    topic: str
    partition: int
    start: int | None = None  # committed offset; None until known (no commit yet and nothing read)
    bound: int | None = None  # the intent: the pending batch must end exactly here
    offsets: list[int] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    first_added_at: float | None = None

    def add(self, offset: int, value: bytes, now: float) -> None:
        if self.offsets and offset <= self.offsets[-1]:
            return  # a re-fetch after a seek; the record is already here
        if self.start is None:
            self.start = offset
        if self.start is not None and offset < self.start:
            return  # before the committed offset: already written
        if not self.offsets:
            self.first_added_at = now
        self.offsets.append(offset)
        self.values.append(value)

    def __len__(self) -> int:
        return len(self.offsets)

    def ready(self, now: float, max_rows: int, max_age: float) -> bool:
        if not self.offsets:
            return False
        if self.bound is not None:
            # An intent is honoured exactly; a log trimmed past it (retention) leaves nothing to honour.
            return self.offsets[-1] >= self.bound or self.offsets[0] > self.bound
        assert self.first_added_at is not None
        return len(self.offsets) >= max_rows or now - self.first_added_at >= max_age

    def cut(self, now: float, max_rows: int) -> Batch | None:
        """Take the next batch off the front. Call only when :meth:`ready`."""
        assert self.start is not None
        if self.bound is not None:
            n = _count_up_to(self.offsets, self.bound)
            if n == 0:  # the intended records are gone from the log; start afresh where it begins now
                self.bound = None
                self.start = self.offsets[0]
                return self.cut(now, max_rows) if len(self.offsets) >= max_rows else None
            last = self.bound
        else:
            n = min(max_rows, len(self.offsets))
            last = self.offsets[n - 1]
        batch = Batch(
            self.topic, self.partition, self.start, last, tuple(self.offsets[:n]), tuple(self.values[:n])
        )
        del self.offsets[:n]
        del self.values[:n]
        self.first_added_at = now if self.offsets else None
        return batch

    def written(self, batch: Batch) -> None:
        """The batch is in ClickHouse and its offset committed: the next batch begins after it."""
        self.start = batch.next_offset
        self.bound = None

    def reset(self, start: int | None, bound: int | None) -> None:
        """Forget what was read (the consumer seeks back to ``start``)."""
        self.start = start
        self.bound = bound
        self.offsets.clear()
        self.values.clear()
        self.first_added_at = None


def _count_up_to(offsets: list[int], bound: int) -> int:
    return bisect.bisect_right(offsets, bound)
