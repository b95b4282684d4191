"""A local Apache Kafka broker (KRaft, one node) for development, tests, CI and the demo.

The broker is the real Apache Kafka: its jars come from Maven Central through ``deploy/local/kafka/pom.xml``
(``mvn dependency:copy-dependencies`` into ``<var>/kafka/libs``; Maven's ``~/.m2`` caches them) and it runs as
``java -cp '<var>/kafka/libs/*' kafka.Kafka <var>/kafka/server-<port>.properties``, the way the distribution's
scripts run it. Layout under ``<var>/kafka``:

- ``libs/``                    the jars, plus ``.installed`` holding the SHA-256 of the pom that produced them
- ``data-<port>/``             the log dir (topics and the KRaft metadata log), formatted once
- ``server-<port>.properties`` written from ``deploy/local/kafka/server.properties`` on every start
- ``broker-<port>.log``        the JVM's stdout and stderr (log4j config: ``deploy/local/kafka/log4j2.properties``)
- ``broker-<port>.pid``        pid of the running broker: another process can find and stop it

Listeners bind to 127.0.0.1 only. Topics are never auto-created: create them explicitly with their
partition count.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from haochaping.stack.process import ManagedProcess, port_open, tail

if TYPE_CHECKING:
    from haochaping.settings import Settings

log = logging.getLogger(__name__)

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka"

_JVM_OPTS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
    # Log4j's own shutdown hook would stop logging before Kafka's shutdown messages are written.
    "-Dlog4j2.shutdownHookEnabled=false",
]
_JAR_RE = re.compile(r"^kafka_2\.13-(\d[\w.\-]*)\.jar$")
_LOG_VERSION_RE = re.compile(r"Kafka version: (\S+)")


class KafkaError(RuntimeError):
    """The local broker could not be installed, started or stopped."""


def _cluster_id() -> str:
    """A KRaft cluster id, as ``kafka-storage.sh random-uuid`` makes it (base64url of 16 random bytes)."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


class KafkaBroker(ManagedProcess):
    """One local KRaft broker+controller, identified by its ``var_dir`` and client ``port``."""

    name = "Kafka"
    error = KafkaError

    def __init__(
        self,
        var_dir: Path,
        port: int = 9092,
        controller_port: int = 9093,
        *,
        heap: str = "512m",
        deploy_dir: Path = DEPLOY_DIR,
        libs_dir: Path | None = None,
    ) -> None:
        """``libs_dir`` (default ``<var_dir>/kafka/libs``) lets brokers in other var dirs share one jar copy."""
        self.var_dir = Path(var_dir).resolve()
        self._libs_dir = Path(libs_dir).resolve() if libs_dir is not None else None
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.deploy_dir = Path(deploy_dir)
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaBroker:
        return cls(settings.var_dir, settings.kafka.port, settings.kafka.controller_port)

    # -- paths ------------------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.var_dir / "kafka"

    @property
    def libs_dir(self) -> Path:
        return self._libs_dir or self.home / "libs"

    @property
    def data_dir(self) -> Path:
        return self.home / f"data-{self.port}"

    @property
    def config_file(self) -> Path:
        return self.home / f"server-{self.port}.properties"

    @property
    def log_file(self) -> Path:
        return self.home / f"broker-{self.port}.log"

    @property
    def pid_file(self) -> Path:
        return self.home / f"broker-{self.port}.pid"

    def _owns(self, command_line: str) -> bool:
        return str(self.config_file) in command_line

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        return f"KafkaBroker({str(self.var_dir)!r}, port={self.port}, controller_port={self.controller_port})"

    # -- install ----------------------------------------------------------------------------------

    def _pom_digest(self) -> str:
        return hashlib.sha256((self.deploy_dir / "pom.xml").read_bytes()).hexdigest()

    def is_installed(self) -> bool:
        marker = self.libs_dir / ".installed"
        try:
            return marker.read_text().strip() == self._pom_digest()
        except OSError:
            return False

    @contextlib.contextmanager
    def _install_lock(self) -> Iterator[None]:
        self.libs_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.libs_dir.parent / ".install.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def install(self, *, force: bool = False) -> bool:
        """Copy the broker's jars into ``<var>/kafka/libs``; return False if they were already there.

        Runs Maven only if the libs dir is missing or was made from another pom. Maven's cache (~/.m2)
        makes a second install (e.g. in a fresh var dir) download nothing.
        """
        if not force and self.is_installed():
            return False
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaError("Maven (mvn) is not on PATH: it is needed once to fetch the Kafka jars")
        with self._install_lock():
            if not force and self.is_installed():
                return False
            digest = self._pom_digest()
            tmp = self.libs_dir.parent / f"{self.libs_dir.name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(self.deploy_dir / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
            ]
            log.info("installing Kafka jars: %s", " ".join(cmd))
            try:
                result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            except BaseException:  # Ctrl-C: leave no half-copied dir behind
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if result.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise KafkaError(
                    f"mvn failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
                )
            if not any(_JAR_RE.match(p.name) for p in tmp.iterdir()):
                raise KafkaError(f"mvn ran but left no kafka_2.13 jar in {tmp}")
            (tmp / ".installed").write_text(digest + "\n")
            shutil.rmtree(self.libs_dir, ignore_errors=True)
            tmp.rename(self.libs_dir)
        return True

    def version(self) -> str:
        """The Kafka version: what the running broker logged at start, else that of the installed jars."""
        if self.is_running():
            found = _LOG_VERSION_RE.findall(tail(self.log_file, 2000))
            if found:
                return str(found[-1])
        for jar in sorted(self.libs_dir.glob("kafka_2.13-*.jar")):
            m = _JAR_RE.match(jar.name)
            if m:
                return m.group(1)
        raise KafkaError(f"Kafka is not installed in {self.libs_dir}")

    # -- state ------------------------------------------------------------------------------------

    def is_ready(self, timeout: float = 5.0) -> bool:
        """One real Kafka API round trip: a Metadata request that lists this broker."""
        if not port_open(self.port):
            return False
        from kafka import KafkaAdminClient

        admin = None
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                client_id="haochaping-stack-probe",
                request_timeout_ms=int(timeout * 1000),
                bootstrap_timeout_ms=int(timeout * 1000),
            )
            cluster = admin.describe_cluster()
            admin.list_topics()
            return bool(cluster.get("brokers"))
        except Exception as exc:  # any failure means "not ready yet"
            log.debug("kafka not ready on %s: %r", self.port, exc)
            return False
        finally:
            if admin is not None:
                with contextlib.suppress(Exception):
                    admin.close()

    # -- lifecycle --------------------------------------------------------------------------------

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise KafkaError("java is not on PATH (Kafka 4 needs Java 17 or newer)")
        return java

    def _classpath(self) -> str:
        return f"{self.libs_dir}/*"

    def _write_config(self) -> None:
        template = Template((self.deploy_dir / "server.properties").read_text())
        text = template.substitute(
            port=self.port, controller_port=self.controller_port, data_dir=str(self.data_dir)
        )
        self.config_file.write_text(text)

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        # No meta.properties: never formatted, or a format that was interrupted. Start from scratch.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        cmd = [
            self._java(),
            f"-Dlog4j2.configurationFile={self.deploy_dir / 'log4j2.properties'}",
            "-cp",
            self._classpath(),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            _cluster_id(),
            "-c",
            str(self.config_file),
        ]
        try:
            result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        except BaseException:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise KafkaError(f"formatting {self.data_dir} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> bool:
        """Start the broker in the background; return False if it was already running.

        Installs the jars if needed and formats the log dir the first time. Does not wait: call
        :meth:`wait_ready`.
        """
        if self.is_running():
            return False
        if port_open(self.port) or port_open(self.controller_port):
            raise KafkaError(
                f"port {self.port} or {self.controller_port} is already in use by a process that is not "
                f"this broker (no live pid in {self.pid_file})"
            )
        self.install()
        self.home.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format_storage()
        cmd = [
            self._java(),
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            *_JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.deploy_dir / 'log4j2.properties'}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.config_file),
        ]
        with open(self.log_file, "ab") as out:
            out.write(f"\n=== haochaping: starting Kafka at {time.strftime('%F %T')}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,  # own process group: Ctrl-C in a terminal does not reach it
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        return True

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until the broker answers Kafka API requests; return the seconds waited."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise KafkaError(
                    f"Kafka exited with code {self._proc.returncode}; {self.log_file}:\n{tail(self.log_file)}"
                )
            if self.is_ready(timeout=min(5.0, max(0.5, deadline - time.monotonic()))):
                return time.monotonic() - start
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Kafka on port {self.port} not ready after {timeout:.0f}s; "
                    f"{self.log_file}:\n{tail(self.log_file)}"
                )
            time.sleep(0.2)
