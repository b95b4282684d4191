"""The local Apache Kafka broker: a real broker, real clients, no mocks."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from haochaping.settings import Settings
from haochaping.stack.kafka import KafkaBroker

pytestmark = pytest.mark.integration

CONSUMER_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def _review(i: int) -> dict[str, object]:
    return {
        "review_id": str(uuid.uuid4()),
        "service_code": f"11010500{i:04d}",
        "channel": "pc",
        "rating": 1 + i % 5,
        "comment": "办事指南写得很清楚，窗口人员态度好" if i % 2 else "排队两个小时，材料被退回三次",
        "submitted_at": "2026-11-25T09:30:00+08:00",
        "labels": ["态度", "效率"],
    }


def test_broker_is_kafka_4(kafka_stack: KafkaBroker) -> None:
    assert kafka_stack.version().startswith("4.")
    # What the broker itself advertises (ApiVersions), as kafka-python infers it.
    admin = KafkaAdminClient(bootstrap_servers=kafka_stack.bootstrap_servers)
    try:
        assert admin._client.check_version() >= (4, 0)
        assert len(admin.describe_cluster()["brokers"]) == 1
    finally:
        admin.close()


def test_review_round_trip(kafka_stack: KafkaBroker, settings: Settings, create_topics) -> None:
    [topic] = create_topics("reviews", partitions=3)
    sent = [_review(i) for i in range(20)]

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    try:
        for review in sent:
            producer.send(
                topic,
                key=str(review["service_code"]).encode(),
                value=json.dumps(review, ensure_ascii=False).encode(),
            ).get(timeout=10)
    finally:
        producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=settings.kafka.topic("round-trip"),
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
        **CONSUMER_TIMEOUTS,
    )
    received: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            received.extend(json.loads(m.value) for m in consumer)
    finally:
        consumer.close()

    assert sorted(received, key=lambda r: str(r["review_id"])) == sorted(
        sent, key=lambda r: str(r["review_id"])
    )


def test_topics_are_not_auto_created(kafka_stack: KafkaBroker, settings: Settings, kafka_admin) -> None:
    topic = settings.kafka.topic("never-created")
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, max_block_ms=1000)
    try:
        with pytest.raises(Exception):  # noqa: B017 - kafka-python raises a timeout for a missing topic
            producer.send(topic, b"x").get(timeout=5)
    finally:
        producer.close(timeout=1)
    assert topic not in kafka_admin.list_topics()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_lifecycle_pid_file_and_clean_stop(tmp_path: Path, kafka_libs_dir: Path) -> None:
    """A second start notices the running broker; another instance stops it; no java is left."""
    port, controller_port = _free_port(), _free_port()
    first = KafkaBroker(tmp_path, port, controller_port, libs_dir=kafka_libs_dir)
    assert first.start() is True
    try:
        first.wait_ready(120)
        pid = first.pid()
        assert pid is not None

        other = KafkaBroker(tmp_path, port, controller_port, libs_dir=kafka_libs_dir)  # another process
        assert other.is_running()
        assert other.start() is False
        assert other.stop() is True
    finally:
        first.stop()

    assert not first.is_running()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not first.pid_file.exists()
    assert not first.is_ready(timeout=1)
