"""``haochaping sink`` as a process, its ClickHouse frozen (SIGSTOP: connections are accepted and never
answered): the sink finds itself stalled, logs why with its task dump and exits with 70; the supervisor of
the demo and the drills starts it again, and once ClickHouse answers every review is there exactly once."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from haochaping.liveness import STALL_EXIT_CODE
from haochaping.settings import ClickHouseSettings, Settings
from haochaping.simulator.pipeline import REPO_ROOT
from haochaping.simulator.processes import Service, Supervisor, haochaping_argv, settings_env
from haochaping.stack.clickhouse import ClickHouseServer
from sinks.clickhouse import connect
from sinks.schema import Target, migrate
from tests.sinks.factories import count, dumps, review, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STALL = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_clickhouse(tmp_path: Path) -> Iterator[ClickHouseServer]:
    """A ClickHouse of this test's own (the shared one must not be frozen)."""
    server = ClickHouseServer(tmp_path / "var", _free_port(), _free_port())
    server.start()
    server.wait_ready(60)
    yield server
    pid = server.pid()
    if pid is not None:
        os.kill(pid, signal.SIGCONT)  # a frozen server cannot stop
    server.stop()


def test_a_sink_whose_clickhouse_stops_answering_exits_70_and_after_its_restart_counts_exact(
    sink_settings: Settings,
    sink_topics: list[str],
    produce: Any,
    own_clickhouse: ClickHouseServer,
    tmp_path: Path,
) -> None:
    settings = sink_settings.model_copy(
        update={
            "clickhouse": ClickHouseSettings(
                url=own_clickhouse.url, database=sink_settings.clickhouse.database
            ),
            "sink": sink_settings.sink.model_copy(update={"stall_seconds": STALL}),
        }
    )
    sink = Service(
        "sink",
        haochaping_argv("sink"),
        tmp_path / "sink.log",
        env={**settings_env(settings), "PYTHONUNBUFFERED": "1"},
        cwd=REPO_ROOT,
    )
    supervisor = Supervisor(lambda: [sink], every=0.2)
    pid = own_clickhouse.pid()
    assert pid is not None

    def landed() -> int:
        client = connect(settings.clickhouse)
        try:
            return count(client, f"SELECT count() FROM {settings.clickhouse.database}.reviews")
        finally:
            client.close()

    client = connect(settings.clickhouse)
    migrate(client, Target(settings.clickhouse.database))  # the sink does too; here for landed() at once
    client.close()
    reviews = [review(i) for i in range(600)]
    sink.start()
    supervisor.start()
    try:
        produce("reviews.accepted", [(r.unit_code.encode(), dumps(r)) for r in reviews[:300]])
        wait_for(lambda: landed() == 300, what="the first 300 reviews")
        os.kill(pid, signal.SIGSTOP)
        produce("reviews.accepted", [(r.unit_code.encode(), dumps(r)) for r in reviews[300:]])
        # Well within the client's 120 s send/receive timeout: a hung request, not a failed one.
        wait_for(lambda: bool(supervisor.restarts), timeout=60, what="the sink to exit for a restart")
        assert supervisor.restarts == [("sink", STALL_EXIT_CODE)]
        log = sink.log_path.read_text(errors="replace")
        topic = settings.kafka.topic("reviews.accepted")
        [line] = [line for line in log.splitlines() if " stalled: " in line]
        assert f"ERROR sinks.writer: sink lane bulk ({topic}, " in line  # the bulk lane: reviews and alerts
        assert (
            "stalled: no record fetched and no batch finished for " in line and " record(s) wait on " in line
        )
        assert f"being inserted: {topic}[" in line and "exiting with 70" in line
        assert "THREAD sink-insert" in log  # the task dump: where the insert thread waits
        os.kill(pid, signal.SIGCONT)
        wait_for(lambda: landed() >= 600, timeout=120, what="all 600 reviews after the restart")
        client = connect(settings.clickhouse)
        try:
            assert count(client, f"SELECT count() FROM {settings.clickhouse.database}.reviews") == 600
            assert (
                count(client, f"SELECT uniqExact(event_id) FROM {settings.clickhouse.database}.reviews")
                == 600
            )
        finally:
            client.close()
        assert supervisor.restarts == [("sink", STALL_EXIT_CODE)]
    finally:
        os.kill(pid, signal.SIGCONT)
        supervisor.stop()
        sink.stop()
