"""A local ClickHouse 26.9 endpoint (HTTP + native TCP) for development, tests, CI and the demo.

The engine is the real ClickHouse inside the pinned ``chdb-core`` wheel. Its clickhouse-local opens HTTP and
TCP listeners when a query runs ``SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP;`` and keeps them open as
long as that query runs, so the server process:

1. writes ``config.xml`` (ports, ``listen_host`` 127.0.0.1) into a private dir and ``chdir``\\s there before
   ``import chdb._chdb``: clickhouse-local reads ``./config.xml`` (the Python API cannot pass
   ``--config-file``);
2. runs, in a thread, ``_chdb.query(<start listeners>; <holder query that never ends>, "TSV", path=DATA)``.
   The format must be TSV: it becomes the HTTP default format, and with CSV clickhouse-connect cannot
   read the server version at connect;
3. on SIGTERM / SIGINT, ends the holder with ``KILL QUERY ... SYNC`` over HTTP and joins the thread.

``_chdb.query`` may run once per process and is a private API: chdb-core is pinned exactly and
``tests/stack/test_clickhouse.py`` checks that the endpoint starts.

Run it as its own process (what :class:`ClickHouseServer` does)::

    python -m haochaping.stack.clickhouse --data-dir var/clickhouse/data-8123 --http-port 8123 --tcp-port 9000

User ``default`` without password: the listeners bind to 127.0.0.1 only. Layout under ``<var>/clickhouse``:
``data-<http port>/`` (databases), ``conf-<http port>/config.xml``, ``server-<http port>.log`` and
``server-<http port>.pid``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from haochaping.stack.process import ManagedProcess, port_open, tail

if TYPE_CHECKING:
    from haochaping.settings import Settings

_MODULE = "haochaping.stack.clickhouse"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds the haochaping package

# keep_alive_timeout: when the listeners stop, the engine waits for open client connections, idle keep-alive
# ones included, and after about 5 s exits the process hard (code 1). A short keep-alive lets a stop finish
# cleanly in about that many seconds; urllib3 (clickhouse-connect) notices a closed idle connection before
# reusing it, and read queries are retried anyway.
_CONFIG_XML = """<clickhouse>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <keep_alive_timeout>2</keep_alive_timeout>
    <logger>
        <level>warning</level>
        <console>1</console>
        <console_log_level>warning</console_log_level>
    </logger>
</clickhouse>
"""


class ClickHouseError(RuntimeError):
    """The local ClickHouse endpoint could not be started or stopped."""


# -- HTTP helpers (no client library: the controller must stay light) ----------------------------------


def _http(url: str, sql: str | None = None, timeout: float = 10.0) -> str:
    data = sql.encode() if sql is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as resp:
        return str(resp.read().decode())


def _ping(http_port: int, timeout: float = 1.0) -> bool:
    try:
        return _http(f"http://127.0.0.1:{http_port}/ping", timeout=timeout).strip() == "Ok."
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _holder_marker(http_port: int) -> str:
    return f"haochaping_listener_holder_{http_port}"


# -- the server process -----------------------------------------------------------------------------


def serve(data_dir: Path, http_port: int, tcp_port: int, conf_dir: Path | None = None) -> int:
    """Serve ClickHouse on 127.0.0.1 until SIGTERM or SIGINT; return the process exit code."""
    data_dir = data_dir.resolve()
    conf_dir = (conf_dir or data_dir.parent / f"conf-{http_port}").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "config.xml").write_text(_CONFIG_XML.format(http_port=http_port, tcp_port=tcp_port))

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"clickhouse: got signal {signum}, stopping", flush=True)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    os.chdir(conf_dir)  # clickhouse-local reads ./config.xml
    import chdb._chdb as _chdb  # only the server process may load the engine

    if stop.is_set():  # stopped while the engine was loading
        print("clickhouse: stopped before the listeners started", flush=True)
        return 0

    marker = _holder_marker(http_port)
    sql = (
        "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
        f"SELECT sleepEachRow(1) AS {marker} FROM system.numbers "
        "SETTINGS max_block_size = 1, function_sleep_max_microseconds_per_block = 0, "
        "max_execution_time = 0 FORMAT Null"
    )
    failure: list[BaseException] = []

    def hold() -> None:
        try:
            _chdb.query(sql, "TSV", path=str(data_dir))
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    holder = threading.Thread(target=hold, name="clickhouse-listener", daemon=True)
    started = time.monotonic()
    holder.start()

    ready = False
    while not stop.is_set() and holder.is_alive():
        if not ready and _ping(http_port, timeout=0.5) and port_open(tcp_port):
            ready = True
            print(
                f"clickhouse: ready on http://127.0.0.1:{http_port} and tcp 127.0.0.1:{tcp_port} "
                f"({time.monotonic() - started:.2f}s), data in {data_dir}",
                flush=True,
            )
        stop.wait(0.1 if not ready else 0.5)

    if not holder.is_alive():
        # The holder query ended by itself: the listeners are gone.
        print(
            f"clickhouse: listener query ended unexpectedly: {failure or 'see the error above'}", flush=True
        )
        return 1

    print("clickhouse: ending the listener query (a QUERY_WAS_CANCELLED line is expected)", flush=True)
    kill = f"KILL QUERY WHERE query LIKE '%{marker}%' AND query NOT LIKE '%KILL QUERY%' SYNC FORMAT TSV"
    # Retried: a signal that came while the listeners were still starting finds no HTTP port yet.
    deadline = time.monotonic() + 15
    while holder.is_alive():
        try:
            _http(f"http://127.0.0.1:{http_port}/", kill, timeout=30)
            break
        except (OSError, urllib.error.URLError) as exc:
            if time.monotonic() > deadline:
                print(f"clickhouse: KILL QUERY failed: {exc!r}", flush=True)
                break
            time.sleep(0.2)
    holder.join(30)
    if holder.is_alive():
        print("clickhouse: listener did not stop; exiting hard", flush=True)
        sys.stdout.flush()
        os._exit(1)
    print("clickhouse: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--http-port", type=int, default=8123)
    parser.add_argument("--tcp-port", type=int, default=9000)
    parser.add_argument("--conf-dir", type=Path, default=None, help="default: <data-dir>/../conf-<http-port>")
    args = parser.parse_args(argv)
    return serve(args.data_dir, args.http_port, args.tcp_port, args.conf_dir)


# -- the controller -----------------------------------------------------------------------------------


class ClickHouseServer(ManagedProcess):
    """Controls one local endpoint process, identified by its ``var_dir`` and ``http_port``."""

    name = "ClickHouse"
    error = ClickHouseError

    def __init__(self, var_dir: Path, http_port: int = 8123, tcp_port: int = 9000) -> None:
        self.var_dir = Path(var_dir).resolve()
        self.http_port = http_port
        self.tcp_port = tcp_port
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ClickHouseServer:
        url = urllib.parse.urlsplit(settings.clickhouse.url)
        if url.scheme not in ("http", "https") or url.port is None:
            raise ClickHouseError(f"clickhouse.url {settings.clickhouse.url!r} is not http://host:port")
        return cls(settings.var_dir, url.port, settings.clickhouse.tcp_port)

    # -- paths ------------------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.var_dir / "clickhouse"

    @property
    def data_dir(self) -> Path:
        return self.home / f"data-{self.http_port}"

    @property
    def conf_dir(self) -> Path:
        return self.home / f"conf-{self.http_port}"

    @property
    def log_file(self) -> Path:
        return self.home / f"server-{self.http_port}.log"

    @property
    def pid_file(self) -> Path:
        return self.home / f"server-{self.http_port}.pid"

    def _owns(self, command_line: str) -> bool:
        return _MODULE in command_line and str(self.data_dir) in command_line

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def __repr__(self) -> str:
        return (
            f"ClickHouseServer({str(self.var_dir)!r}, http_port={self.http_port}, tcp_port={self.tcp_port})"
        )

    # -- state ------------------------------------------------------------------------------------

    def is_ready(self) -> bool:
        """``GET /ping`` answers ``Ok.`` and the native TCP port accepts connections."""
        return _ping(self.http_port) and port_open(self.tcp_port)

    def query(self, sql: str, timeout: float = 30.0) -> str:
        """Run one statement over HTTP and return its TSV output (for small admin queries)."""
        try:
            return _http(self.url + "/", sql, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise ClickHouseError(exc.read().decode(errors="replace").strip()) from exc

    def version(self) -> str:
        return self.query("SELECT version()").strip()

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> bool:
        """Spawn the endpoint process in the background; return False if it was already running."""
        if self.is_running():
            return False
        if _ping(self.http_port):
            raise ClickHouseError(
                f"port {self.http_port} already serves ClickHouse, but not from {self.data_dir} "
                f"(no live pid in {self.pid_file})"
            )
        busy = [p for p in (self.http_port, self.tcp_port) if port_open(p)]
        if busy:
            raise ClickHouseError(f"port(s) {busy} already in use by another process")
        self.home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [
            sys.executable,
            "-m",
            _MODULE,
            "--data-dir",
            str(self.data_dir),
            "--conf-dir",
            str(self.conf_dir),
            "--http-port",
            str(self.http_port),
            "--tcp-port",
            str(self.tcp_port),
        ]
        with open(self.log_file, "ab") as out:
            out.write(f"\n=== haochaping: starting ClickHouse at {time.strftime('%F %T')}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                env=env,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        return True

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until :meth:`is_ready`; return the seconds waited."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise ClickHouseError(
                    f"ClickHouse exited with code {self._proc.returncode}; {self.log_file}:\n{tail(self.log_file)}"
                )
            if self.is_ready():
                return time.monotonic() - start
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"ClickHouse on port {self.http_port} not ready after {timeout:.0f}s; "
                    f"{self.log_file}:\n{tail(self.log_file)}"
                )
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
