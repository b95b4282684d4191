"""Fixtures of the sink tests: settings for a fast writer, the topics, a producer, a migrated database."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from haochaping.settings import Settings, SinkSettings
from sinks.schema import Target, migrate


@pytest.fixture
def sink_settings(settings: Settings) -> Settings:
    """The test settings with a writer that cuts small batches fast and joins its group quickly."""
    return settings.model_copy(
        update={
            "sink": SinkSettings(
                batch_rows=500,
                batch_seconds=0.2,
                group_id=f"sink-{settings.clickhouse.database}",
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
                max_backoff_seconds=1.0,
                metrics_port=0,
            )
        }
    )


@pytest.fixture
def sink_topics(create_topics: Callable[..., list[str]], kafka_stack: Any) -> list[str]:
    return create_topics("reviews.accepted", "ledger.events", "alerts", "deadletter")


@pytest.fixture
def migrated(ch_client: Any, sink_settings: Settings) -> Any:
    """``ch_client`` on a database with the sink's schema."""
    migrate(ch_client, Target(sink_settings.clickhouse.database))
    return ch_client


@pytest.fixture
def produce(kafka_stack: Any, sink_settings: Settings) -> Iterator[Callable[..., None]]:
    """``produce("reviews.accepted", [(key, value), ...])``: sends and waits for the broker's acks."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=sink_settings.kafka.bootstrap_servers, linger_ms=5)

    def send(topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        full = sink_settings.kafka.topic(topic)
        for key, value in records:
            producer.send(full, key=key, value=value)
        producer.flush()

    yield send
    producer.close()
