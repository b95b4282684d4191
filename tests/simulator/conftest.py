"""Fixtures of the simulator's tests: the real ingest service as a child process."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from haochaping.settings import IngestSettings, Settings
from haochaping.simulator.processes import Service, haochaping_argv, http_ready, settings_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ingest_service(kafka_stack: object, settings: Settings, tmp_path: Path) -> Iterator[Service]:
    """``haochaping ingest`` on a free port, reading this test's settings, ready."""
    settings.ingest = IngestSettings(port=free_port())
    service = Service(
        "ingest",
        haochaping_argv("ingest"),
        tmp_path / "ingest.log",
        env=settings_env(settings),
        ready=http_ready(f"http://127.0.0.1:{settings.ingest.port}/readyz"),
    )
    service.start()
    try:
        service.wait_ready(60)
        yield service
    finally:
        service.stop()
