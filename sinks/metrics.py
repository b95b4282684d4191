"""Prometheus metrics of the sink writer."""

from __future__ import annotations

from collections import deque

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# Where a batch's time goes, in the order a batch meets them (docs/sinks.md, "Where a batch's time goes").
STEPS: dict[str, str] = {
    "fetch": "from the producer's CreateTime to the writer reading the record (the first of each fetch)",
    "bound": "from the batch's first record read to the batch being due (its time bound, or full)",
    "wait": "from due to cut: the partition's previous batch still being written",
    "intent": "committing the batch's start offset with the intent (with other partitions' commits)",
    "queue": "waiting for a free insert thread",
    "check": "the repeat check (the lookup of the batch's ids in ClickHouse)",
    "insert": "the insert",
    "handoff": "from the insert done to the writer's loop taking up the result",
    "commit": "committing the offset after the batch (with other partitions' intents and commits)",
    "batch": "from the batch's first record read to its offset committed (all of the above but fetch)",
}


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else REGISTRY
        self.rows = Counter(
            "haochaping_sink_rows_written",
            "Rows inserted into ClickHouse (a repeated batch that ClickHouse dropped counts again here).",
            ["table"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "haochaping_sink_batch_seconds",
            "Time to insert one batch into ClickHouse, retries included.",
            ["table"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.batch_rows = Histogram(
            "haochaping_sink_batch_rows",
            "Rows per inserted batch.",
            ["table"],
            buckets=(1, 10, 100, 1000, 5000, 10_000, 20_000, 50_000, 100_000),
            registry=registry,
        )
        self.retries = Counter(
            "haochaping_sink_retries",
            "Insert attempts that failed and will be retried, by reason.",
            ["table", "reason"],
            registry=registry,
        )
        self.repeats = Counter(
            "haochaping_sink_repeats_dropped",
            "Records left out because ClickHouse held their id already or the batch held it twice "
            "(the stream's at-least-once redelivery).",
            ["table"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "haochaping_sink_dead_letters",
            "Records ClickHouse refused as data, sent to the dead-letter topic.",
            ["topic"],
            registry=registry,
        )
        self.lag = Gauge(
            "haochaping_sink_consumer_lag",
            "Records in the partition not yet written to ClickHouse (high watermark - committed offset).",
            ["topic", "partition"],
            registry=registry,
        )
        self.clickhouse_up = Gauge(
            "haochaping_sink_clickhouse_up",
            "1 while the last insert succeeded, 0 while ClickHouse is failing and consumption is paused.",
            registry=registry,
        )
        self.paused = Gauge(
            "haochaping_sink_paused_partitions",
            "Partitions not being fetched: buffer full, or ClickHouse down.",
            registry=registry,
        )
        self.step_seconds = Histogram(
            "haochaping_sink_step_seconds",
            "Where a batch's time goes, by step: " + "; ".join(f"{k}: {v}" for k, v in STEPS.items()) + ".",
            ["table", "step"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30),
            registry=registry,
        )
        # The samples themselves, for a benchmark that wants exact quantiles (see :meth:`keep_samples`).
        self.step_samples: dict[tuple[str, str], deque[float]] | None = None
        self._per_step = 0
        self._paused_by_lane: dict[str, int] = {}

    def keep_samples(self, per_step: int = 200_000) -> None:
        """Also keep the last ``per_step`` step times of each table in memory (bench/sink_bench.py)."""
        self._per_step = per_step
        self.step_samples = {}

    def step(self, table: str, step: str, seconds: float) -> None:
        self.step_seconds.labels(table, step).observe(seconds)
        if self.step_samples is not None:
            samples = self.step_samples.get((table, step))
            if samples is None:
                samples = self.step_samples[(table, step)] = deque(maxlen=self._per_step)
            samples.append(seconds)

    def set_paused(self, lane: str, partitions: int) -> None:
        """Partitions one writer does not fetch; the gauge shows the sum over the process's writers."""
        self._paused_by_lane[lane] = partitions
        self.paused.set(sum(self._paused_by_lane.values()))
