"""Shared fixtures: a real Kafka broker and a real ClickHouse for integration tests.

Session fixtures ``kafka_stack`` / ``clickhouse_stack`` start the servers on test ports under ``var/test/``
(or reuse ones already running there) and stop them at the end of the last test session using them:
several pytest processes (xdist workers, two engineers in one tree) may share them. Every test gets its
own ``settings`` with a unique topic prefix and ClickHouse database, so tests never see each other's data.

Test ports (override with HAOCHAPING_TEST_KAFKA_PORT, HAOCHAPING_TEST_KAFKA_CONTROLLER_PORT,
HAOCHAPING_TEST_CLICKHOUSE_HTTP_PORT, HAOCHAPING_TEST_CLICKHOUSE_TCP_PORT): Kafka 19092 (controller 19093),
ClickHouse HTTP 18123, TCP 19000.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from haochaping.settings import ClickHouseSettings, KafkaSettings, Settings, StreamsSettings
from haochaping.stack.clickhouse import ClickHouseServer
from haochaping.stack.kafka import KafkaBroker
from haochaping.stack.process import pid_alive

# Property tests check rules, not speed: a 2-core CI box under load must not fail them on a deadline.
hypothesis_settings.register_profile("haochaping", deadline=None, print_blob=True)
hypothesis_settings.load_profile("haochaping")

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_VAR_DIR = REPO_ROOT / "var" / "test"
# The jars `haochaping stack install` (make stack-install) put under the default var dir: one copy for all.
KAFKA_LIBS_DIR = REPO_ROOT / "var" / "kafka" / "libs"
KAFKA_PORT = int(os.environ.get("HAOCHAPING_TEST_KAFKA_PORT", "19092"))
KAFKA_CONTROLLER_PORT = int(os.environ.get("HAOCHAPING_TEST_KAFKA_CONTROLLER_PORT", "19093"))
CLICKHOUSE_HTTP_PORT = int(os.environ.get("HAOCHAPING_TEST_CLICKHOUSE_HTTP_PORT", "18123"))
CLICKHOUSE_TCP_PORT = int(os.environ.get("HAOCHAPING_TEST_CLICKHOUSE_TCP_PORT", "19000"))
READY_TIMEOUT = 180.0  # the first run also fetches the Kafka jars


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python 3.0 loads its protocol schemas with importlib.resources' legacy API, once per schema.
    config.addinivalue_line("filterwarnings", "ignore:(read|open)_text is deprecated:DeprecationWarning")


# -- shared servers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(name: str) -> Iterator[Path]:
    """An exclusive lock shared by all test processes, and the directory of ``name``'s leases."""
    leases = TEST_VAR_DIR / "leases" / name
    leases.mkdir(parents=True, exist_ok=True)
    with open(TEST_VAR_DIR / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield leases
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _shared_server(name: str, server: Any) -> Iterator[Any]:
    """Start ``server`` (a KafkaBroker or ClickHouseServer) unless it runs, and hold a lease on it.

    At the end, the last live lease holder stops the server, but only if a test session started it
    (a server somebody started by hand on the test ports is left running).
    """
    lease = None
    started_marker = TEST_VAR_DIR / f".{name}.started-by-tests"
    with _locked(name) as leases:
        if not server.is_ready():
            if server.is_running():
                server.wait_ready(READY_TIMEOUT)
            else:
                # Each test leaves its own topics and database behind; a broker that restarts over
                # thousands of leftover partitions is slow to serve metadata (topic creation then
                # timed out after 10 s). Nothing outlives a session, so a session that starts the
                # server starts it empty.
                shutil.rmtree(server.data_dir, ignore_errors=True)
                server.start()
                started_marker.touch()
                try:
                    server.wait_ready(READY_TIMEOUT)
                except BaseException:
                    server.stop()
                    started_marker.unlink(missing_ok=True)
                    raise
        lease = leases / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        lease.touch()
    try:
        yield server
    finally:
        with _locked(name) as leases:
            lease.unlink(missing_ok=True)
            others = [p for p in leases.iterdir() if pid_alive(int(p.name.split("-")[0]))]
            for stale in set(leases.iterdir()) - set(others):
                stale.unlink(missing_ok=True)
            if not others and started_marker.exists():
                server.stop()
                started_marker.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def kafka_libs_dir() -> Path:
    """The Kafka jars (installed once under var/test), for tests that run a broker of their own."""
    broker = KafkaBroker(TEST_VAR_DIR, KAFKA_PORT, KAFKA_CONTROLLER_PORT, libs_dir=KAFKA_LIBS_DIR)
    broker.install()
    return broker.libs_dir


@pytest.fixture(scope="session")
def kafka_stack() -> Iterator[KafkaBroker]:
    """A real Apache Kafka 4 broker on the test ports, ready."""
    broker = KafkaBroker(TEST_VAR_DIR, KAFKA_PORT, KAFKA_CONTROLLER_PORT, libs_dir=KAFKA_LIBS_DIR)
    with _shared_server("kafka", broker) as server:
        yield server


@pytest.fixture(scope="session")
def clickhouse_stack() -> Iterator[ClickHouseServer]:
    """A real ClickHouse 26.9 endpoint (HTTP + TCP) on the test ports, ready."""
    ch = ClickHouseServer(TEST_VAR_DIR, CLICKHOUSE_HTTP_PORT, CLICKHOUSE_TCP_PORT)
    with _shared_server("clickhouse", ch) as server:
        yield server


# -- per-test isolation -----------------------------------------------------------------------------


@pytest.fixture
def settings() -> Settings:
    """Settings pointing at the test servers, with a unique topic prefix and database for this test.

    It does not start anything: request ``kafka_stack`` / ``clickhouse_stack`` (or the fixtures below)
    for the servers.
    """
    tag = uuid.uuid4().hex[:10]
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        var_dir=TEST_VAR_DIR,
        kafka=KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}",
            controller_port=KAFKA_CONTROLLER_PORT,
            topic_prefix=f"t{tag}.",
            partitions=3,
            replication_factor=1,
        ),
        clickhouse=ClickHouseSettings(
            url=f"http://127.0.0.1:{CLICKHOUSE_HTTP_PORT}",
            tcp_port=CLICKHOUSE_TCP_PORT,
            database=f"t_{tag}",
        ),
        streams=StreamsSettings(store="memory://"),
    )


@pytest.fixture(scope="session")
def kafka_admin(kafka_stack: KafkaBroker) -> Iterator[Any]:
    """A kafka-python KafkaAdminClient on the test broker."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_stack.bootstrap_servers, client_id="haochaping-tests")
    yield admin
    admin.close()


@pytest.fixture
def create_topics(kafka_admin: Any, settings: Settings) -> Iterator[Callable[..., list[str]]]:
    """``create_topics("reviews", "tickets", partitions=3)`` creates this test's prefixed topics.

    Returns the full topic names (``settings.kafka.topic(name)``) and waits until every partition has a
    leader. ``configs`` sets topic configs, e.g. ``{"cleanup.policy": "compact"}``. The topics are
    deleted after the test.
    """
    created: list[str] = []

    def create(
        *names: str, partitions: int | None = None, configs: dict[str, str] | None = None
    ) -> list[str]:
        full = [settings.kafka.topic(n) for n in names]
        spec = {
            t: {
                "num_partitions": partitions or settings.kafka.partitions,
                "replication_factor": settings.kafka.replication_factor,
                "configs": dict(configs or {}),
            }
            for t in full
        }
        kafka_admin.create_topics(spec, wait_for_metadata=True)
        created.extend(full)
        return full

    yield create
    if created:
        with contextlib.suppress(Exception):
            kafka_admin.delete_topics(created)


@pytest.fixture
def ch_client(clickhouse_stack: ClickHouseServer, settings: Settings) -> Iterator[Any]:
    """A clickhouse-connect client on this test's own database (created before, dropped after)."""
    import clickhouse_connect

    database = settings.clickhouse.database
    admin = clickhouse_connect.get_client(host="127.0.0.1", port=clickhouse_stack.http_port)
    admin.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=clickhouse_stack.http_port, database=database
    )
    try:
        yield client
    finally:
        client.close()
        admin.command(f"DROP DATABASE IF EXISTS `{database}` SYNC")
        admin.close()
