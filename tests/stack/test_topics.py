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
        wanted = {settings.topic(spec.name): settings.partitions_of(spec.name) for spec in TOPICS}
        assert {t["name"]: len(t["partitions"]) for t in described} == wanted
        assert all(p["leader_id"] >= 0 for t in described for p in t["partitions"])

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


def test_topics_the_worker_only_writes_take_a_partition_count_of_their_own(kafka_stack: KafkaBroker) -> None:
    """The sink inserts per partition: its topics may have fewer partitions than the worker's sources."""
    import uuid

    from kafka.admin import KafkaAdminClient

    settings = KafkaSettings(
        bootstrap_servers=kafka_stack.bootstrap_servers,
        topic_prefix=f"tp{uuid.uuid4().hex[:8]}.",
        partitions=3,
        topic_partitions={"reviews.accepted": 1, "ledger.events": 2},
    )
    ensure_topics(settings)
    admin = KafkaAdminClient(bootstrap_servers=kafka_stack.bootstrap_servers)
    try:
        described = admin.describe_topics([settings.topic(spec.name) for spec in TOPICS])
    finally:
        admin.close()
    counts = {t["name"].removeprefix(settings.topic_prefix): len(t["partitions"]) for t in described}
    assert counts == {
        "reviews.raw": 3,
        "workorders.raw": 3,
        "reviews.accepted": 1,
        "ledger.intake": 3,
        "ledger.commands": 3,
        "ledger.events": 2,
        "satisfaction.minute": 3,
        "alerts": 3,
        "deadletter": 3,
    }


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ({"reviews.raw": 1}, r"names \['reviews.raw'\]: the worker reads these.*take kafka.partitions"),
        (
            {"ledger.intake": 2, "ledger.commands": 2},
            r"\['ledger.commands', 'ledger.intake'\]: the worker reads",
        ),
        ({"reviews.acepted": 1}, r"names \['reviews.acepted'\]: there are no such topics"),
        ({"alerts": 0}, r"gives \{'alerts': 0\}: a topic needs at least 1 partition"),
    ],
)
def test_a_partition_count_of_its_own_is_refused_where_it_would_break_the_worker(
    override: dict[str, int], says: str
) -> None:
    # No broker needed: the settings are refused before any client is made.
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_partitions=override)
    with pytest.raises(ValueError, match=says):
        ensure_topics(settings)
