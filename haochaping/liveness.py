"""When a consumer has stopped moving for good: records wait on its partitions, and for a long time it
has neither fetched one nor finished a batch. Used by the stream worker (``streams.app``) and by each
lane of the sink (``sinks/writer.py``, ``StallCheck``; there a failed insert attempt counts as moving,
so a ClickHouse outage with its backoff is not a stall).

The fault drills caught a surviving worker in that state, rarely, twice over: its offset commit waiting
on a producer flush that never ended (found since: ``streams.outbox.track_unknown_topics``), and its
recovery after a rebalance waiting for changelog records Faust had dropped (found since:
``streams/transport.py``, point 7). Whatever else may stall a worker, this check ends it. Neither state
ends by itself, and the process stays up, so a supervisor that only checks the process sees nothing
wrong. The worker checks itself: once stalled for ``streams.stall_seconds`` (the sink:
``sink.stall_seconds``) it writes what each task waits on to its log and exits with
:data:`STALL_EXIT_CODE`, for its supervisor (Kubernetes, compose, ``haochaping demo``, the drills'
pipeline) to start it again. Offsets are committed only for processed batches, so the restart redoes
what was in flight and nothing is lost or counted twice.

Plain Python, no Kafka: the caller feeds it a counter and the records waiting, on a timer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

STALL_EXIT_CODE = 70  # EX_SOFTWARE: the supervisor restarts the worker; any other code is not this


@dataclass
class Liveness:
    """``check(moved, waiting)`` every few seconds: the reason to restart, once stalled, else None."""

    stall_seconds: float
    clock: Callable[[], float] = time.monotonic
    _last_moved: float = field(init=False)
    _last_count: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._last_moved = self.clock()

    def moving(self, moved: int) -> bool:
        """True if ``moved`` changed since the last :meth:`check`: no need to ask what waits."""
        return moved != self._last_count

    def check(self, moved: int, waiting: Mapping[str, int]) -> str | None:
        """``moved``: a count that grows whenever the worker fetches a record or finishes a batch.
        ``waiting``: records not yet committed, per assigned source partition."""
        now = self.clock()
        backlog = {tp: n for tp, n in waiting.items() if n > 0}
        if moved != self._last_count or not backlog:
            # Moving, or nothing to do: an idle worker is not a stalled one.
            self._last_count = moved
            self._last_moved = now
            return None
        still = now - self._last_moved
        if self.stall_seconds <= 0 or still < self.stall_seconds:
            return None
        largest = sorted(backlog.items(), key=lambda kv: -kv[1])[:5]
        return (
            f"no record fetched and no batch finished for {still:.0f} s while {sum(backlog.values())} "
            f"record(s) wait on {len(backlog)} assigned partition(s) (most: "
            + ", ".join(f"{tp} {n}" for tp, n in largest)
            + ")"
        )
