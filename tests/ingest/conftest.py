"""Fixtures of the ingest tests: a signed client of a real ingest app on this test's own topics."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from haochaping.domain.signing import signed_headers
from haochaping.settings import Settings
from haochaping.topics import TOPICS
from ingest.invitations import TOPIC as INVITATIONS

SENDERS = {
    "hall-dev-1": "device-secret-1",
    "sms-gateway": "gateway-secret",
    "hotline-12345": "hotline-secret",
    "prov-zj": "provincial-secret",
    "invitations": "invitation-secret",
}


def ingest_settings_for(settings: Settings, **ingest: Any) -> Settings:
    values = {
        "sender_keys": {k: SecretStr(v) for k, v in SENDERS.items()},
        "pseudonym_key": SecretStr("test-pseudonym-key"),
        "delivery_timeout_seconds": 3.0,
        "connect_timeout_seconds": 1.0,
        "retry_after_seconds": 2,
        "max_batch": 50,
        "max_body_bytes": 256 * 1024,
        **ingest,
    }
    return settings.model_copy(update={"ingest": settings.ingest.model_copy(update=values)})


class SignedClient:
    """Signs each request as a sender would (signing.signed_headers) and posts it."""

    def __init__(self, client: TestClient, key_id: str, secret: str) -> None:
        self.client = client
        self.key_id = key_id
        self.secret = secret

    def post(
        self,
        path: str,
        payload: Any = None,
        *,
        body: bytes | None = None,
        now: float | None = None,
        nonce: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        data = body if body is not None else json.dumps(payload, ensure_ascii=False).encode()
        signed = signed_headers(
            self.key_id,
            self.secret,
            "POST",
            path,
            data,
            now=time.time() if now is None else now,
            nonce=nonce or secrets.token_hex(12),
        )
        return self.client.post(
            path, content=data, headers={"Content-Type": "application/json", **signed, **(headers or {})}
        )


@pytest.fixture
def ingest_settings(settings: Settings) -> Settings:
    return ingest_settings_for(settings)


@pytest.fixture
def ingest_topics(
    kafka_stack: Any, create_topics: Callable[..., list[str]], ingest_settings: Settings
) -> None:
    create_topics(*(spec.name for spec in TOPICS))
    create_topics(INVITATIONS, configs={"cleanup.policy": "compact"})


@pytest.fixture
def ingest_client(ingest_settings: Settings, ingest_topics: None) -> Iterator[TestClient]:
    from ingest.app import create_app

    with TestClient(create_app(ingest_settings), raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.05)
        yield client


@pytest.fixture
def as_sender(ingest_client: TestClient) -> Callable[[str], SignedClient]:
    return lambda key_id: SignedClient(ingest_client, key_id, SENDERS[key_id])


@pytest.fixture
def read_topic(ingest_settings: Settings) -> Callable[..., list[Any]]:
    """``read_topic("reviews.raw", 3)``: the first n records of this test's topic (or fewer after timeout)."""
    from kafka import KafkaConsumer, TopicPartition

    def read(name: str, n: int, timeout: float = 10.0) -> list[Any]:
        topic = ingest_settings.kafka.topic(name)
        consumer = KafkaConsumer(
            bootstrap_servers=ingest_settings.kafka.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        try:
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            out: list[Any] = []
            deadline = time.monotonic() + timeout
            while len(out) < n and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=200).values():
                    out.extend(batch)
            return sorted(out, key=lambda r: (r.timestamp, r.partition, r.offset))
        finally:
            consumer.close()

    return read
