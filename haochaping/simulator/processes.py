"""The project's services as child processes: started in their own process group, logged to a file,
waited on until ready, stopped (or killed) as a group so that nothing is left behind.

Used by ``haochaping demo``, the fault drills and the end-to-end benchmark. Each service is a
``haochaping <command>`` with the settings handed down through ``HAOCHAPING_*`` variables, so the child
reads exactly the settings of its parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from pydantic import BaseModel, SecretStr

from haochaping.liveness import STALL_EXIT_CODE
from haochaping.settings import Settings


class ServiceError(RuntimeError):
    """A service did not start or become ready; the message holds the tail of its log."""


def settings_env(settings: Settings) -> dict[str, str]:
    """``HAOCHAPING_<SECTION>__<FIELD>`` variables that make a child process read ``settings``."""
    env: dict[str, str] = {}

    def encode(value: Any) -> str:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, dict):
            import json

            return json.dumps({k: encode(v) for k, v in value.items()}, ensure_ascii=False)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            for sub in type(value).model_fields:
                item = getattr(value, sub)
                if item is not None:
                    env[f"HAOCHAPING_{name.upper()}__{sub.upper()}"] = encode(item)
        elif value is not None:
            env[f"HAOCHAPING_{name.upper()}"] = encode(value)
    return env


def haochaping_argv(*args: str) -> list[str]:
    """``haochaping <args>`` with the running interpreter, so the child uses the same environment."""
    return [sys.executable, "-m", "haochaping.cli", *args]


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code < 500
        except httpx.HTTPError:
            return False

    return check


@dataclass
class Service:
    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None  # None: ready as soon as it runs
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running():
            return
        self._close_log()  # a service started again after it exited appends to the same log
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it until stopped
        self._log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group: Ctrl-C at the terminal goes to the parent only, which then stops
            # each child in order, and a kill reaches the child's own children too.
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> float:
        started = time.monotonic()
        while True:
            if not self.running():
                code = self.proc.returncode if self.proc else None
                raise ServiceError(f"{self.name} exited with {code} before it was ready:\n{self.tail()}")
            if self.ready is None or self.ready():
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise ServiceError(f"{self.name} was not ready within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the group, SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
        self._signal(signal.SIGKILL)  # anything the child left in its group
        self._close_log()

    def kill(self) -> None:
        """kill -9, as a crash would: no shutdown code runs."""
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_log()

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Starts a service again when it exits with a code that asks for it, as Kubernetes or compose would:
    a stream worker or a sink that found itself stalled (``haochaping.liveness.STALL_EXIT_CODE``) writes its
    task dump and exits for a restart. A service stopped or killed on purpose (SIGTERM, kill -9) is left alone.

    ``services`` is read on every round, so services added later are watched too. Each restart is kept
    in :attr:`restarts` (name, exit code) and reported to ``on_restart``.
    """

    def __init__(
        self,
        services: Callable[[], Iterable[Service]],
        *,
        codes: frozenset[int] | None = None,
        every: float = 1.0,
        on_restart: Callable[[Service, int], None] | None = None,
    ) -> None:
        if codes is None:
            codes = frozenset({STALL_EXIT_CODE})
        self._services = services
        self.codes = codes
        self.every = every
        self.on_restart = on_restart
        self.restarts: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            for service in list(self._services()):
                proc = service.proc
                code = proc.poll() if proc is not None else None
                if code is None or code not in self.codes or self._stop.is_set():
                    continue
                self.restarts.append((service.name, code))
                with contextlib.suppress(OSError), open(service.log_path, "ab") as log:
                    log.write(f"\n--- exited with {code}: starting it again\n".encode())
                service.start()
                if self.on_restart is not None:
                    self.on_restart(service, code)
