"""Topics are created explicitly, and a consumer group is only joined once the broker can serve it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from haochaping.settings import KafkaSettings
from haochaping.stack.kafka import KafkaBroker
from haochaping.topics import TOPICS, ensure_topics, wait_until_ready_for_group

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_fresh_broker_is_ready_for_a_group_once_the_wait_returns(
    tmp_path: Path, kafka_libs_dir: Path
) -> None:
    """Right after a first start: topics created, then the wait; the group's coordinator and every
    partition's leader are then known, so a consumer joining now is assigned every partition."""
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient

    broker = KafkaBroker(tmp_path, _free_port(), _free_port(), libs_dir=kafka_libs_dir)
    broker.start()
    try:
        broker.wait_ready(120)
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=3)
        names = [settings.topic(spec.name) for spec in TOPICS]
        ensure_topics(settings)

        wait_until_ready_for_group(settings, "fresh-group", names, timeout_s=60)

        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        try:
            described = admin.describe_topics(names)
            assert admin.list_group_offsets("fresh-group") == {"fresh-group": {}}
        finally:
            admin.close()
        assert sorted(t["name"] for t in described if not t["error_code"]) == sorted(names)
        assert all(
            len(t["partitions"]) == 3 and all(p["leader_id"] >= 0 for p in t["partitions"]) for t in described
        )

        consumer = KafkaConsumer(
            names[0],
            bootstrap_servers=broker.bootstrap_servers,
            group_id="fresh-group",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        try:
            for _ in range(40):
                consumer.poll(timeout_ms=250)
                if consumer.assignment():
                    break
            assert {tp.partition for tp in consumer.assignment()} == {0, 1, 2}
        finally:
            consumer.close()
    finally:
        broker.stop()


def test_the_wait_says_what_is_missing(tmp_path: Path, kafka_stack: KafkaBroker) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_stack.bootstrap_servers)
    with pytest.raises(TimeoutError, match=r"not ready for consumer group 'g'.*no-such-topic"):
        wait_until_ready_for_group(settings, "g", ["no-such-topic"], timeout_s=1)
