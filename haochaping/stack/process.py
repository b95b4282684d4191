"""What the local Kafka broker and ClickHouse endpoint have in common: a detached process with a pid
file, found again by any later command, and stopped with SIGTERM, then SIGKILL."""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): trust kill(0)
    # state is the field after the parenthesised command name
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal ``pid``'s process group if ``pid`` leads it (it does when we started it), else ``pid`` alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


class ManagedProcess(abc.ABC):
    """A server process that this or another command started, known by its pid file."""

    name = "process"
    error: type[Exception] = RuntimeError
    _proc: subprocess.Popen[bytes] | None = None

    @property
    @abc.abstractmethod
    def pid_file(self) -> Path: ...

    @abc.abstractmethod
    def _owns(self, command_line: str) -> bool:
        """Whether a live process with this command line is this server (and not a reused pid)."""

    def pid(self) -> int | None:
        """Pid of this server if it is running (from the pid file, checked against the process table)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if not pid_alive(pid):
            return None
        line = cmdline(pid)
        if line is not None and not self._owns(line):
            return None  # the pid was reused by something else
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
        return not pid_alive(pid)

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the server (SIGKILL after ``timeout``); return False if it was not running.

        Works for a server started by another process: it finds it through the pid file.
        """
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            self._reap()
            return False
        signal_group(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout):
            log.warning("%s (pid %s) did not stop in %.0fs: killing it", self.name, pid, timeout)
            signal_group(pid, signal.SIGKILL)
            if not self._wait_exit(pid, 10):
                raise self.error(f"{self.name} (pid {pid}) survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        self._reap()
        return True

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(1)
            self._proc = None
