"""The worker's transport (``haochaping+kafka://``): registered with Faust, used by the app, settings applied.

The flow through ``Consumer._drain_messages`` is exercised by every worker test in ``test_worker.py``
(the app always runs on this transport); these tests pin what those cannot see.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust.transport
import pytest

from haochaping.settings import Settings
from streams import transport
from streams.app import create_app


def _with_fetch_wait(settings: Settings, tmp_path: Path, wait_ms: int) -> Settings:
    streams = settings.streams.model_copy(update={"fetch_max_wait_ms": wait_ms, "data_dir": tmp_path})
    return settings.model_copy(update={"streams": streams})


def test_the_scheme_names_the_transport_in_fausts_registry() -> None:
    assert faust.transport.by_url("haochaping+kafka://127.0.0.1:9092") is transport.Transport
    # Faust's own scheme is untouched.
    assert faust.transport.by_url("kafka://127.0.0.1:9092") is not transport.Transport


def test_the_app_consumes_through_the_transport_with_the_configured_fetch_wait(
    settings: Settings, tmp_path: Path
) -> None:
    async def build() -> tuple[Any, Any, int, list[str]]:
        app = create_app(_with_fetch_wait(settings, tmp_path, 123))
        consumer = app.consumer
        client = consumer._thread._create_worker_consumer(app.transport)
        try:
            return app.transport, consumer, client._fetch_max_wait_ms, client._client._bootstrap_servers
        finally:
            await client.stop()

    used, consumer, wait_ms, servers = asyncio.run(build())
    assert isinstance(used, transport.Transport)
    assert isinstance(consumer, transport.Consumer)
    assert wait_ms == 123
    assert servers == settings.kafka.bootstrap_servers.split(",")


@pytest.mark.integration
def test_the_started_consumer_fetches_with_the_configured_wait(
    kafka_stack: Any, settings: Settings, tmp_path: Path
) -> None:
    """The value reaches aiokafka's fetcher when the consumer starts against the real broker."""

    async def started_wait() -> int:
        app = create_app(_with_fetch_wait(settings, tmp_path, 80))
        client = app.consumer._thread._create_worker_consumer(app.transport)
        await client.start()
        try:
            return client._fetcher._fetch_max_wait_ms
        finally:
            await client.stop()

    assert asyncio.run(started_wait()) == 80
