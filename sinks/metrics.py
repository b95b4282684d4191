"""Prometheus metrics of the sink writer."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram


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
        self._paused_by_lane: dict[str, int] = {}

    def set_paused(self, lane: str, partitions: int) -> None:
        """Partitions one writer does not fetch; the gauge shows the sum over the process's writers."""
        self._paused_by_lane[lane] = partitions
        self.paused.set(sum(self._paused_by_lane.values()))
