"""The dedupe table's purge, run by the reviews agent inside its batches (see ``streams.dedupe``).

Per source partition of a batch: when the partition's purge is due (``streams.dedupe_purge_interval_
minutes`` after its last run ended, or a run is under way), one step looks at up to
``streams.dedupe_purge_keys_per_batch`` keys of that partition after where the previous step stopped
and plans deletions and stamps. The agent writes them with the batch's own table writes
(``streams.state.write_per_partition``: tombstones on the changelog, after the batch's outputs are
confirmed and before its offsets are acked), then records the step as done. A batch that fails
records nothing, so the step is planned again.

A partition is purged only while records of it arrive: a quiet partition adds no keys either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import Any

from haochaping.domain.contract import BEIJING
from streams import metrics
from streams.dedupe import PurgeSchedule, plan_purge
from streams.state import partition_items


def _today() -> date:
    return datetime.now(BEIJING).date()


class DedupePurge:
    def __init__(
        self,
        table: Any,
        horizon_days: int,
        interval_seconds: float,
        keys_per_batch: int,
        today: Callable[[], date] = _today,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.horizon_days = horizon_days
        self.keys_per_batch = keys_per_batch
        self.schedule = PurgeSchedule(interval_seconds)
        self.today = today
        self.clock = clock

    def plan(
        self, partitions: Iterable[int], batch_writes: Mapping[int, Mapping[bytes, bytes | None]]
    ) -> tuple[dict[int, dict[bytes, bytes | None]], dict[int, bytes | None]]:
        """``({partition: {key: value or None to delete}}, {partition: resume after})`` for this batch."""
        now, today = self.clock(), self.today()
        writes: dict[int, dict[bytes, bytes | None]] = {}
        steps: dict[int, bytes | None] = {}
        for partition in sorted(set(partitions)):
            due, after = self.schedule.due(partition, now)
            if not due:
                continue
            step = plan_purge(
                partition_items(self.table, partition, after),
                today,
                self.horizon_days,
                self.keys_per_batch,
                keep=batch_writes.get(partition, {}),
            )
            steps[partition] = step.resume_after
            changes: dict[bytes, bytes | None] = dict(step.stamps)
            changes.update(dict.fromkeys(step.deletes))
            if changes:
                writes[partition] = changes
        return writes, steps

    def done(
        self, steps: Mapping[int, bytes | None], writes: Mapping[int, Mapping[bytes, bytes | None]]
    ) -> None:
        """Record the planned steps once their writes are on the changelog."""
        now = self.clock()
        for partition, resume_after in steps.items():
            self.schedule.done(partition, resume_after, now)
        deleted = sum(1 for changes in writes.values() for value in changes.values() if value is None)
        stamped = sum(len(changes) for changes in writes.values()) - deleted
        if deleted:
            metrics.DEDUPE_PURGED.labels("deleted").inc(deleted)
        if stamped:
            metrics.DEDUPE_PURGED.labels("stamped").inc(stamped)
