"""Kafka down: the sender gets 503 + Retry-After quickly, never a hang; once it is back a retry lands once."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from haochaping.settings import KafkaSettings, Settings
from haochaping.stack.kafka import KafkaBroker
from haochaping.topics import ensure_topics
from ingest.app import create_app
from ingest.invitations import ensure_invitation_topic
from tests.conftest import TEST_VAR_DIR
from tests.domain.factories import review_payload
from tests.ingest.conftest import SENDERS, SignedClient, ingest_settings_for

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_broker_at_all_is_a_quick_503(settings: Settings) -> None:
    nowhere = settings.model_copy(
        update={"kafka": KafkaSettings(bootstrap_servers=f"127.0.0.1:{_free_port()}", topic_prefix="x.")}
    )
    with TestClient(create_app(ingest_settings_for(nowhere))) as client:
        device = SignedClient(client, "hall-dev-1", SENDERS["hall-dev-1"])
        started = time.monotonic()
        answer = device.post("/v1/reviews", review_payload())
        assert answer.status_code == 503, answer.text
        assert time.monotonic() - started < 5
        assert answer.headers["Retry-After"] == "2"
        assert "nothing was accepted" in answer.json()["title"]
        assert client.get("/readyz").status_code == 503
        assert "hcp_ingest_producer_errors_total{error=" in client.get("/metrics").text


@pytest.fixture
def own_broker() -> Iterator[KafkaBroker]:
    """A broker of this test alone (the shared one must not be stopped), on free ports."""
    broker = KafkaBroker(TEST_VAR_DIR, _free_port(), _free_port())
    broker.start()
    try:
        broker.wait_ready(120)
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(broker.data_dir, ignore_errors=True)
        broker.config_file.unlink(missing_ok=True)
        broker.log_file.unlink(missing_ok=True)


def _read_all(settings: Settings, expected: int, timeout: float) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.kafka.topic("reviews.raw")
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        # Read for the whole timeout even after `expected` arrived: a late duplicate must show.
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                out.extend(batch)
            if len(out) > expected:
                break
        return out
    finally:
        consumer.close()


def test_broker_down_then_back_a_retry_lands_exactly_once(
    settings: Settings, own_broker: KafkaBroker
) -> None:
    kafka = settings.kafka.model_copy(
        update={"bootstrap_servers": own_broker.bootstrap_servers, "partitions": 1}
    )
    local = ingest_settings_for(settings.model_copy(update={"kafka": kafka}))
    ensure_topics(local.kafka)
    ensure_invitation_topic(local)

    with TestClient(create_app(local)) as client:
        device = SignedClient(client, "hall-dev-1", SENDERS["hall-dev-1"])
        assert device.post("/v1/reviews", review_payload(event_id="before")).status_code == 202

        own_broker.stop()
        started = time.monotonic()
        down = device.post("/v1/reviews", review_payload(event_id="during"))
        waited = time.monotonic() - started
        assert down.status_code == 503, down.text
        assert waited < local.ingest.delivery_timeout_seconds + 2, waited
        assert int(down.headers["Retry-After"]) > 0

        own_broker.start()
        own_broker.wait_ready(120)
        deadline = time.monotonic() + 60
        statuses = []
        while True:  # the sender's retry loop: newly signed each time, the same event id
            answer = device.post("/v1/reviews", review_payload(event_id="during"))
            statuses.append(answer.status_code)
            if answer.status_code == 202:
                break
            assert answer.status_code == 503 and time.monotonic() < deadline, statuses
            time.sleep(float(answer.headers["Retry-After"]) / 4)

    records = _read_all(local, 2, timeout=local.ingest.delivery_timeout_seconds + 3)
    ids = [orjson.loads(r.value)["event_id"] for r in records]
    assert sorted(ids) == ["before", "during"], (ids, statuses)
