"""``haochaping demo``: a city in a box on this machine.

Starts Kafka and ClickHouse (the local stack), creates the topics, migrates ClickHouse, starts ingest,
the stream worker(s), the sink and the API as child processes (each in its own process group, logging to
``<var>/logs/<name>.log``), waits until each is ready, prints the board's address with a supervisor token,
and runs the simulator until Ctrl-C (SIGINT) or SIGTERM. Then it stops everything in reverse order: the
simulator first (it sends what it holds), then the API, sink, worker(s), ingest, and the Kafka and
ClickHouse it started itself (servers that were already running are left running).

A part that does not exist yet in this checkout is skipped with a line that says so, so the demo runs
at every commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from haochaping.settings import Settings
from haochaping.simulator.processes import (
    Service,
    ServiceError,
    Supervisor,
    haochaping_argv,
    http_ready,
    settings_env,
)


def available_commands() -> set[str]:
    """The ``haochaping`` commands the parts present in this checkout registered."""
    from haochaping.cli import app

    return {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}


def log_contains(path: Path, marker: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return marker in path.read_text(errors="replace")
        except OSError:
            return False

    return check


class Demo:
    def __init__(
        self,
        settings: Settings,
        *,
        rate: float = 300.0,
        day_minutes: float = 10.0,
        workers: int = 1,
        fresh: bool = False,
        console: Console | None = None,
    ) -> None:
        self.settings = settings
        self.rate = rate
        self.day_minutes = day_minutes
        self.workers = workers
        self.fresh = fresh
        self.console = console or Console()
        self.var_dir = Path(settings.var_dir).resolve()
        self.logs = self.var_dir / "logs"
        self.services: list[Service] = []
        self._stop_servers: list[Callable[[], Any]] = []
        self._supervisor: Supervisor | None = None
        self.commands = available_commands()

    # -- lines a person reads ---------------------------------------------------------------------

    def _ok(self, what: str, detail: str = "") -> None:
        self.console.print(f"[green]✓[/] {what}" + (f" [dim]{detail}[/]" if detail else ""))

    def _skip(self, what: str, why: str) -> None:
        self.console.print(f"[yellow]–[/] {what} [yellow]skipped[/]: {why}")

    # -- the stack --------------------------------------------------------------------------------

    def _start_kafka(self) -> None:
        try:
            from haochaping.stack.kafka import KafkaBroker
        except ModuleNotFoundError:
            self._skip("Kafka", "haochaping.stack.kafka is not in this checkout")
            raise SystemExit(1) from None
        broker = KafkaBroker.from_settings(self.settings)
        if not broker.is_installed():
            self.console.print("  fetching the Kafka jars from Maven Central (first run only) …")
        broker.install()
        started = broker.start()
        waited = broker.wait_ready(180)
        if started:
            self._stop_servers.append(broker.stop)
        self._ok(
            f"Kafka {broker.version()} on {broker.bootstrap_servers}",
            f"ready in {waited:.1f} s" if started else "already running; left running at the end",
        )

    def _start_clickhouse(self) -> None:
        try:
            from haochaping.stack.clickhouse import ClickHouseServer
        except ModuleNotFoundError:
            self._skip("ClickHouse", "haochaping.stack.clickhouse is not in this checkout")
            return
        server = ClickHouseServer.from_settings(self.settings)
        started = server.start()
        waited = server.wait_ready(120)
        if started:
            self._stop_servers.append(server.stop)
        self._ok(
            f"ClickHouse {server.version()} at {server.url}",
            f"ready in {waited:.1f} s" if started else "already running; left running at the end",
        )

    def _wipe(self) -> None:
        import shutil

        for sub in ("kafka", "clickhouse"):
            for path in (self.var_dir / sub).glob("data*"):
                shutil.rmtree(path, ignore_errors=True)
        self._ok("wiped Kafka and ClickHouse data", str(self.var_dir))

    # -- the services -----------------------------------------------------------------------------

    def _service(self, name: str, args: list[str], ready: Callable[[], bool] | None, **env: str) -> Service:
        service = Service(
            name,
            haochaping_argv(*args),
            self.logs / f"{name}.log",
            env={**settings_env(self.settings), "PYTHONUNBUFFERED": "1", **env},
            ready=ready,
        )
        self.services.append(service)
        service.start()
        return service

    def _run_once(self, name: str, args: list[str]) -> None:
        service = Service(
            name, haochaping_argv(*args), self.logs / f"{name}.log", env=settings_env(self.settings)
        )
        service.start()
        assert service.proc is not None
        code = service.proc.wait(120)
        service.stop()
        if code != 0:
            raise ServiceError(f"haochaping {' '.join(args)} failed ({code}):\n{service.tail()}")

    def _start_services(self) -> None:
        from haochaping.topics import ensure_topics

        created = ensure_topics(self.settings.kafka)
        self._ok("topics", f"{len(created)} created" if created else "all there")
        if "migrate" in self.commands:
            self._run_once("migrate", ["migrate"])
            self._ok("ClickHouse schema", f"database {self.settings.clickhouse.database}")
        else:
            self._skip("ClickHouse schema", "no `haochaping migrate` in this checkout yet")

        ingest_url = f"http://{self.settings.ingest.host}:{self.settings.ingest.port}"
        api_url = f"http://{self.settings.api.host}:{self.settings.api.port}"
        plan: list[tuple[str, list[str], Callable[[], bool] | None, dict[str, str]]] = []
        if "ingest" in self.commands:
            plan.append(("ingest", ["ingest"], http_ready(f"{ingest_url}/readyz"), {}))
        else:
            self._skip("ingest", "no `haochaping ingest` in this checkout yet")
        if "worker" in self.commands:
            for i in range(self.workers):
                name = f"worker-{i + 1}"
                log = self.logs / f"{name}.log"
                log.unlink(missing_ok=True)
                # Workers on one host each need their own metrics port and table directory.
                env = {
                    "HAOCHAPING_STREAMS__METRICS_PORT": str(self.settings.streams.metrics_port + i),
                    "HAOCHAPING_STREAMS__DATA_DIR": str(self.var_dir / "streams" / name),
                }
                plan.append((name, ["worker"], log_contains(log, "Ready"), env))
        else:
            self._skip("stream worker", "no `haochaping worker` in this checkout yet")
        if "sink" in self.commands:
            plan.append(("sink", ["sink"], None, {}))
        else:
            self._skip("sink", "no `haochaping sink` in this checkout yet")
        if "api" in self.commands:
            plan.append(("api", ["api"], http_ready(f"{api_url}/healthz"), {}))
        else:
            self._skip("API and board", "no `haochaping api` in this checkout yet")
        for name, args, ready, env in plan:
            service = self._service(name, args, ready, **env)
            try:
                waited = service.wait_ready(120)
            except ServiceError as exc:
                if service.running():  # slow but alive (e.g. a worker still joining its group): go on
                    self.console.print(
                        f"[yellow]![/] {name} not ready yet; going on. Log: {service.log_path}"
                    )
                    continue
                raise exc
            self._ok(name, f"pid {service.pid}, ready in {waited:.1f} s, log {service.log_path}")

    def _board_address(self) -> str | None:
        if "api" not in self.commands:
            return None
        from api.auth import mint_token
        from haochaping.domain.records import Role

        token = mint_token(
            self.settings.api, role=Role.SUPERVISOR, sub="demo", unit_code=None, ttl_minutes=None
        )
        return f"http://{self.settings.api.host}:{self.settings.api.port}/board#token={token}"

    # -- the run ----------------------------------------------------------------------------------

    def run(self) -> None:
        with self._interruptible():
            try:
                self.console.rule("[bold]好差评 · a city in a box")
                if self.fresh:
                    self._wipe()
                self._start_kafka()
                self._start_clickhouse()
                self._start_services()
                # A worker or the sink that finds itself stalled exits to be started again
                # (haochaping/liveness.py).
                self._supervisor = Supervisor(
                    lambda: [s for s in self.services if s.name.startswith("worker") or s.name == "sink"],
                    on_restart=lambda service, code: self.console.print(
                        f"[yellow]![/] {service.name} found itself stalled (exit {code}) and was started "
                        f"again; what it waited on is in {service.log_path}"
                    ),
                ).start()
                board = self._board_address()
                if board:
                    self.console.rule()
                    # soft_wrap: the address stays on one line, so it can be copied whole.
                    self.console.print(f"[bold]The live board:[/] {board}", soft_wrap=True)
                    self.console.print("Ctrl-C stops everything.")
                    self.console.rule()
                if "ingest" in self.commands:
                    self._simulate()
                else:
                    self._skip("simulator", "nothing to send to without ingest; waiting for Ctrl-C")
                    while True:
                        time.sleep(3600)
            except KeyboardInterrupt:
                self.console.print("\nstopping …")
            except ServiceError as exc:
                self.console.print(f"[red]✗[/] {exc}")
                raise SystemExit(1) from exc
            finally:
                self.stop()

    def _simulate(self) -> None:
        from haochaping.simulator.run import SimulationOptions, simulate

        key_id, secret = next(iter(self.settings.ingest.sender_keys.items()))
        options = SimulationOptions(
            ingest_url=f"http://{self.settings.ingest.host}:{self.settings.ingest.port}",
            key_id=key_id,
            secret=secret.get_secret_value(),
            rate=self.rate,
            duration=float("inf"),
            truth=self.logs / "demo-truth.jsonl",
            day_minutes=self.day_minutes,
            retry_for=30.0,
        )
        # simulate() turns SIGINT / SIGTERM into a clean stop of the run.
        asyncio.run(simulate(options, console=self.console))

    def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
        for service in reversed(self.services):
            service.stop()
            self._ok(f"stopped {service.name}")
        self.services.clear()
        for stop in reversed(self._stop_servers):
            with contextlib.suppress(Exception):
                stop()
        if self._stop_servers:
            self._ok("stopped Kafka and ClickHouse")
        self._stop_servers.clear()

    @contextlib.contextmanager
    def _interruptible(self) -> Iterator[None]:
        """SIGTERM behaves like Ctrl-C while starting up, so a stop during start-up leaves nothing behind."""

        def on_term(_signum: int, _frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)
