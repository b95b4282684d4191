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


async def _post_review(client: Any, event_id: str) -> Any:
    import json
    import secrets

    from haochaping.domain.signing import signed_headers

    body = json.dumps(review_payload(event_id=event_id)).encode()
    key = "hall-dev-1"
    headers = signed_headers(
        key, SENDERS[key], "POST", "/v1/reviews", body, now=time.time(), nonce=secrets.token_hex(12)
    )
    return await client.post(
        "/v1/reviews", content=body, headers={"Content-Type": "application/json", **headers}
    )


def test_broker_restart_under_load_recovers_without_losing_an_acknowledged_review(
    settings: Settings, own_broker: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Under load, batches in flight when the broker dies are retried and then expire: kafka-python
    3.0.12 then resets its producer id and never asks for a new one. Ingest must come back anyway,
    say so in its readiness and its log, and lose nothing it answered 202 for."""
    import asyncio
    import logging

    import httpx

    kafka = settings.kafka.model_copy(update={"bootstrap_servers": own_broker.bootstrap_servers})
    local = ingest_settings_for(settings.model_copy(update={"kafka": kafka}))
    ensure_topics(local.kafka)
    ensure_invitation_topic(local)
    app = create_app(local)
    acknowledged: set[str] = set()
    statuses: dict[int, int] = {}
    phases: dict[str, float] = {}

    async def sender(client: httpx.AsyncClient, n: int, stop: asyncio.Event) -> None:
        # A device's loop: retry the same review until it is taken, then send the next one.
        sent = 0
        while not stop.is_set():
            event_id = f"load-{n}-{sent}"
            while not stop.is_set():
                answer = await _post_review(client, event_id)
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                if answer.status_code == 202:
                    acknowledged.add(event_id)
                    if "broker_back" in phases and "first_202_after" not in phases:
                        phases["first_202_after"] = time.monotonic()
                    break
                assert answer.status_code == 503, answer.text
                await asyncio.sleep(0.2)
            sent += 1

    async def scenario() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://ingest") as client,
        ):
            while (await client.get("/readyz")).status_code != 200:
                await asyncio.sleep(0.1)
            stop = asyncio.Event()
            senders = [asyncio.create_task(sender(client, n, stop)) for n in range(24)]
            await asyncio.sleep(3)
            await asyncio.to_thread(own_broker.stop)
            await asyncio.sleep(local.ingest.delivery_timeout_seconds + 3)  # in-flight batches expire
            during = (await client.get("/readyz")).status_code
            await asyncio.to_thread(own_broker.start)
            await asyncio.to_thread(own_broker.wait_ready, 120)
            phases["broker_back"] = time.monotonic()
            deadline = time.monotonic() + 30
            while "first_202_after" not in phases and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*senders), timeout=30)
            after = (await client.get("/readyz")).status_code
        return during, after

    with caplog.at_level(logging.INFO, logger="ingest.producer"):
        during, after = asyncio.run(scenario())

    assert "first_202_after" in phases, (
        f"no review was accepted within 30 s of the broker's return: {statuses}"
    )
    recovered_in = phases["first_202_after"] - phases["broker_back"]
    assert recovered_in < 2 * local.ingest.delivery_timeout_seconds + 5, recovered_in
    assert during == 503, "/readyz said ready while Kafka was down"
    assert after == 200
    on_topic = {orjson.loads(r.value)["event_id"] for r in _read_all(local, len(acknowledged), timeout=5)}
    assert acknowledged - on_topic == set(), "reviews answered 202 are missing from Kafka"
    messages = [r.getMessage() for r in caplog.records if r.name == "ingest.producer"]
    assert sum("is not acknowledging writes" in m for m in messages) == 1, messages
    assert sum("acknowledges writes again" in m for m in messages) == 1, messages
    assert not any("secret" in m for m in messages), messages
