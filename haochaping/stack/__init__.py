"""Local Kafka and ClickHouse for development, tests, CI and the demo.

- :class:`haochaping.stack.kafka.KafkaBroker`: Apache Kafka 4 (KRaft, one node) from Maven Central jars.
- :class:`haochaping.stack.clickhouse.ClickHouseServer`: ClickHouse 26.9 from the pinned chdb-core wheel,
  served over HTTP and TCP by ``python -m haochaping.stack.clickhouse``.
- :class:`Stack`: both, as the settings describe them; :func:`run_stack_cli` backs ``haochaping stack``.

Both servers run detached (own process group, pid file, log file under ``settings.var_dir``), so
``stack up`` returns and ``stack down`` (any process) stops them. Only loopback endpoints are managed:
if the settings point at a remote broker or ClickHouse, or at the embedded ``chdb://`` engine, the
stack leaves that service alone.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from haochaping.settings import Settings
    from haochaping.stack.clickhouse import ClickHouseServer
    from haochaping.stack.kafka import KafkaBroker

__all__ = ["ClickHouseServer", "KafkaBroker", "ServiceStatus", "Stack", "run_stack_cli"]

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def __getattr__(name: str) -> Any:
    # Lazy, so that ``python -m haochaping.stack.clickhouse`` does not import its own module twice.
    if name == "KafkaBroker":
        from haochaping.stack.kafka import KafkaBroker

        return KafkaBroker
    if name == "ClickHouseServer":
        from haochaping.stack.clickhouse import ClickHouseServer

        return ClickHouseServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    endpoint: str
    managed: bool  # False: remote or embedded, the stack does not run it
    running: bool  # a process this stack started (pid file) is alive
    ready: bool  # it answers its protocol
    pid: int | None = None
    version: str | None = None
    log_file: str | None = None


class Stack:
    """The local Kafka broker and ClickHouse endpoint that ``settings`` point at."""

    def __init__(self, settings: Settings) -> None:
        from haochaping.stack.clickhouse import ClickHouseServer
        from haochaping.stack.kafka import KafkaBroker

        self.settings = settings
        first = settings.kafka.bootstrap_servers.split(",")[0]
        kafka_host = first.rsplit(":", 1)[0].strip("[]")
        self.kafka: KafkaBroker | None = (
            KafkaBroker.from_settings(settings) if kafka_host in _LOCAL_HOSTS else None
        )
        url = urllib.parse.urlsplit(settings.clickhouse.url)
        self.clickhouse: ClickHouseServer | None = (
            ClickHouseServer.from_settings(settings)
            if url.scheme in ("http", "https") and url.hostname in _LOCAL_HOSTS
            else None
        )

    def install(self) -> None:
        """Fetch what the servers need (the Kafka jars); a no-op when already there."""
        if self.kafka is not None:
            self.kafka.install()

    def up(self, timeout: float = 120.0) -> dict[str, float]:
        """Start both servers (leaving running ones alone) and wait until they are ready.

        Returns, per service, the seconds from its start until it answered (the two overlap; the Kafka
        figure includes fetching the jars and formatting the log dir when those are needed), or 0.0 if it
        was already running. If anything fails, or Ctrl-C arrives, what this call started is stopped
        again before the exception propagates.
        """
        started: list[KafkaBroker | ClickHouseServer] = []
        began: dict[str, float] = {}
        timings: dict[str, float] = {}
        try:
            if self.clickhouse is not None:
                began["clickhouse"] = time.monotonic()
                if self.clickhouse.start():
                    started.append(self.clickhouse)
            if self.kafka is not None:
                began["kafka"] = time.monotonic()
                if self.kafka.start():  # runs mvn first if the jars are missing
                    started.append(self.kafka)
            for name, server in (("clickhouse", self.clickhouse), ("kafka", self.kafka)):
                if server is not None:
                    server.wait_ready(timeout)
                    timings[name] = time.monotonic() - began[name] if server in started else 0.0
        except BaseException:
            for server in reversed(started):
                with contextlib.suppress(Exception):
                    server.stop()
            raise
        return timings

    def down(self) -> list[str]:
        """Stop both servers (whoever started them); return the names of those that were running."""
        stopped = []
        if self.kafka is not None and self.kafka.stop():
            stopped.append("kafka")
        if self.clickhouse is not None and self.clickhouse.stop():
            stopped.append("clickhouse")
        return stopped

    @contextlib.contextmanager
    def running(self, timeout: float = 120.0) -> Iterator[Stack]:
        """``with stack.running():`` starts what is not running and stops, on exit, only what it started."""
        was_running = {
            "kafka": self.kafka is not None and self.kafka.is_running(),
            "clickhouse": self.clickhouse is not None and self.clickhouse.is_running(),
        }
        self.up(timeout)
        try:
            yield self
        finally:
            if self.kafka is not None and not was_running["kafka"]:
                self.kafka.stop()
            if self.clickhouse is not None and not was_running["clickhouse"]:
                self.clickhouse.stop()

    def status(self) -> list[ServiceStatus]:
        result = []
        if self.kafka is None:
            result.append(ServiceStatus("kafka", self.settings.kafka.bootstrap_servers, False, False, False))
        else:
            ready = self.kafka.is_ready(timeout=2.0)
            version = None
            with contextlib.suppress(Exception):
                version = self.kafka.version()
            result.append(
                ServiceStatus(
                    "kafka",
                    self.kafka.bootstrap_servers,
                    True,
                    self.kafka.is_running(),
                    ready,
                    self.kafka.pid(),
                    version,
                    str(self.kafka.log_file),
                )
            )
        if self.clickhouse is None:
            result.append(ServiceStatus("clickhouse", self.settings.clickhouse.url, False, False, False))
        else:
            ready = self.clickhouse.is_ready()
            version = None
            if ready:
                with contextlib.suppress(Exception):
                    version = self.clickhouse.version()
            result.append(
                ServiceStatus(
                    "clickhouse",
                    f"{self.clickhouse.url} (tcp {self.clickhouse.tcp_port})",
                    True,
                    self.clickhouse.is_running(),
                    ready,
                    self.clickhouse.pid(),
                    version,
                    str(self.clickhouse.log_file),
                )
            )
        return result


def run_stack_cli(action: str, settings: Settings, console: Console | None = None) -> int:
    """``haochaping stack up|down|status|install``; returns the process exit code."""
    from rich.console import Console

    console = console or Console()
    stack = Stack(settings)
    if action == "install":
        stack.install()
        if stack.kafka is not None:
            console.print(f"kafka {stack.kafka.version()} jars in {stack.kafka.libs_dir}")
        return 0
    if action == "up":
        try:
            with console.status("starting kafka and clickhouse…"):
                timings = stack.up()
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: stopped what was started[/]")
            return 130
        for name, seconds in timings.items():
            note = "already running" if seconds == 0.0 else f"ready in {seconds:.1f}s"
            console.print(f"[green]{name}[/] {note}")
        _print_status(console, stack.status())
        return 0
    if action == "down":
        stopped = stack.down()
        console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    if action == "status":
        statuses = stack.status()
        _print_status(console, statuses)
        return 0 if all(s.ready for s in statuses if s.managed) else 1
    console.print(f"[red]unknown action {action!r}[/]: use up, down, status or install")
    return 2


def _print_status(console: Console, statuses: list[ServiceStatus]) -> None:
    from rich.table import Table

    table = Table(box=None)
    for column in ("service", "endpoint", "state", "version", "pid"):
        table.add_column(column)
    for s in statuses:
        if not s.managed:
            state = "[dim]not managed[/]"
        elif s.ready:
            state = "[green]ready[/]"
        elif s.running:
            state = "[yellow]starting[/]"
        else:
            state = "[red]down[/]"
        table.add_row(s.name, s.endpoint, state, s.version or "", str(s.pid or ""))
    console.print(table)
    for s in statuses:
        if s.log_file:
            console.print(f"[dim]{s.name} log: {s.log_file}[/]")
