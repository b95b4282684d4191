"""Prometheus metrics of ingest, in a registry of their own per app (tests start several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.records = Counter(
            "hcp_ingest_records",
            "Items received, by channel and outcome (accepted, duplicate, rejected, kept) and reason",
            ["channel", "outcome", "reason"],
            registry=self.registry,
        )
        self.requests = Histogram(
            "hcp_ingest_request_seconds",
            "Time from request to answer, by endpoint and status",
            ["endpoint", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.producer_errors = Counter(
            "hcp_ingest_producer_errors",
            "Writes Kafka did not acknowledge, by topic and error",
            ["topic", "error"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "hcp_ingest_auth_failures",
            "Requests refused by authentication, by the check that failed",
            ["check"],
            registry=self.registry,
        )

    def count(self, channel: str, outcome: str, reason: str = "", n: int = 1) -> None:
        if n:
            self.records.labels(channel, outcome, reason).inc(n)

    def producer_error(self, topic: str, error: str) -> None:
        self.producer_errors.labels(topic, error).inc()
