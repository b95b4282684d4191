"""Fixtures of the stream tests: records as bytes, a worker subprocess, reading a topic to the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from haochaping.domain.contract import BEIJING
from haochaping.domain.records import Actor, CommandAction, LedgerCommand, Role
from haochaping.settings import Settings
from streams.batch import Incoming
from tests.domain.factories import review_payload

REPO_ROOT = Path(__file__).resolve().parents[2]


def review_bytes(**overrides: Any) -> bytes:
    return orjson.dumps(review_payload(**overrides))


def incoming(topic: str, values: list[bytes], partition: int = 0) -> list[Incoming]:
    return [Incoming(topic, partition, offset, None, value) for offset, value in enumerate(values)]


def command(
    ticket_id: str, action: CommandAction, n: int, role: Role = Role.SUPERVISOR, **payload: Any
) -> LedgerCommand:
    return LedgerCommand(
        command_id=f"cmd-{ticket_id}-{n}",
        ticket_id=ticket_id,
        action=action,
        actor=Actor(user_id=f"{role.value}-1", role=role, unit_code="11330102002495613X"),
        at=datetime(2026, 11, 25, 11, n % 60, tzinfo=BEIJING),
        payload=payload,
    )


def worker_env(settings: Settings, **streams: Any) -> dict[str, str]:
    """Environment that points ``haochaping worker`` at the test broker and this test's topics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAOCHAPING_")}
    env.update(
        HAOCHAPING_VAR_DIR=str(settings.var_dir),
        HAOCHAPING_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        HAOCHAPING_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix,
        HAOCHAPING_KAFKA__PARTITIONS=str(settings.kafka.partitions),
        HAOCHAPING_STREAMS__STORE=settings.streams.store,
        HAOCHAPING_STREAMS__METRICS_PORT="0",
        HAOCHAPING_STREAMS__BROKER_SESSION_TIMEOUT="6",
        HAOCHAPING_STREAMS__BROKER_HEARTBEAT_INTERVAL="1",
        HAOCHAPING_STREAMS__DEADLINE_CHECK_SECONDS="1",
    )
    for key, value in streams.items():
        env[f"HAOCHAPING_STREAMS__{key.upper()}"] = str(value)
    return env


class WorkerProcess:
    """One ``haochaping worker`` subprocess; its log goes to a file the test prints on failure."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "haochaping.cli", "worker", "--loglevel", "info"],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if "Worker ready" in self.log():
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="session")
def group_coordinator_ready(kafka_stack: Any) -> None:
    """Join a consumer group once before any worker starts.

    The first group on a fresh broker creates ``__consumer_offsets``; a Faust worker that joins
    meanwhile was seen to sync its group with metadata that lacked every topic and sit with no
    partitions until its metadata aged out (minutes). A kafka-python consumer waits that out here.
    """
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    bootstrap = kafka_stack.bootstrap_servers
    topic = "streams-tests.group-warmup"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"streams-tests-warmup-{os.getpid()}",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    try:
        deadline = time.monotonic() + 90
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise AssertionError(f"no consumer group could join on the test broker {bootstrap} in 90 s")
            consumer.poll(timeout_ms=500)
    finally:
        consumer.close()


@pytest.fixture
def start_worker(
    kafka_stack: Any, settings: Settings, tmp_path: Path, group_coordinator_ready: None
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``haochaping worker`` processes for this test's settings; all are stopped at the end."""
    started: list[WorkerProcess] = []

    def start(name: str = "w1", **streams: Any) -> WorkerProcess:
        worker = WorkerProcess(worker_env(settings, **streams), tmp_path / f"{name}.log")
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def produce(kafka_stack: Any, settings: Settings) -> Iterator[Callable[..., None]]:
    """Send ``(key, value)`` pairs to a logical topic and wait until the broker has them."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)

    def send(topic: str, records: list[tuple[bytes | str | None, bytes]]) -> None:
        for key, value in records:
            producer.send(
                settings.kafka.topic(topic), key=key.encode() if isinstance(key, str) else key, value=value
            )
        producer.flush(30)

    yield send
    producer.close()


@pytest.fixture
def read_topic(kafka_stack: Any, settings: Settings) -> Callable[..., list[Any]]:
    """Read a logical topic from the start until ``until(records)`` holds or ``timeout`` passes."""
    from kafka import KafkaConsumer, TopicPartition

    def read(
        topic: str,
        until: Callable[[list[Any]], bool] = lambda _: False,
        timeout: float = 30.0,
        raw: bool = False,
    ) -> list[Any]:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            enable_auto_commit=False,
            consumer_timeout_ms=500,
        )
        name = settings.kafka.topic(topic)
        try:
            partitions = consumer.partitions_for_topic(name) or set()
            tps = [TopicPartition(name, p) for p in sorted(partitions)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            out: list[Any] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for message in consumer:
                    out.append(message if raw else orjson.loads(message.value))
                if until(out):
                    break
            return out
        finally:
            consumer.close()

    return read
