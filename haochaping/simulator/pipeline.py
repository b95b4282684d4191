"""A whole pipeline on private servers, for the fault drills and the end-to-end benchmark: Kafka,
ClickHouse, ingest, worker(s), sink, API and the simulator writing its ground truth, each a real process
that a drill can stop, restart or kill -9.

Private servers on free ports under their own var dir (not the shared test ones): a drill restarts the
broker and stops ClickHouse, which must not disturb anything else running on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from haochaping.settings import (
    ApiSettings,
    ClickHouseSettings,
    IngestSettings,
    KafkaSettings,
    Settings,
    SinkSettings,
    StreamsSettings,
)
from haochaping.simulator.processes import Service, Supervisor, haochaping_argv, http_ready, settings_env
from haochaping.simulator.sender import read_truth
from haochaping.simulator.truth import FigureKey, compare, expected_bad_cases, expected_figures
from haochaping.stack.clickhouse import ClickHouseServer
from haochaping.stack.kafka import KafkaBroker

REPO_ROOT = Path(__file__).resolve().parents[2]  # where `python -m haochaping.cli` runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Pipeline:
    """Servers and services of one drill; every process is stopped by :meth:`close`."""

    var_dir: Path
    kafka_libs_dir: Path
    settings: Settings = field(init=False)
    broker: KafkaBroker = field(init=False)
    clickhouse: ClickHouseServer = field(init=False)
    ingest: Service | None = None
    sink: Service | None = None
    api: Service | None = None
    workers: list[Service] = field(default_factory=list)
    simulator: Service | None = None
    truth_path: Path = field(init=False)
    # Restarts a worker or the sink that exits to be restarted (a stall it found in itself:
    # haochaping/liveness.py), as Kubernetes would; a drill's own kill is left alone. Its ``restarts`` are
    # reported by the drills.
    supervisor: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        kafka_port, controller_port, http_port, tcp_port, ingest_port, api_port = free_ports(6)
        tag = uuid.uuid4().hex[:8]
        self.settings = Settings(
            _env_file=None,
            var_dir=self.var_dir,
            kafka=KafkaSettings(
                bootstrap_servers=f"127.0.0.1:{kafka_port}",
                controller_port=controller_port,
                topic_prefix=f"d{tag}.",
                partitions=4,
            ),
            clickhouse=ClickHouseSettings(
                url=f"http://127.0.0.1:{http_port}", tcp_port=tcp_port, database=f"drill_{tag}"
            ),
            ingest=IngestSettings(port=ingest_port),
            api=ApiSettings(port=api_port),
            streams=StreamsSettings(
                app_id=f"drill-{tag}",
                store="memory://",
                metrics_port=0,
                broker_session_timeout=6,
                broker_heartbeat_interval=1,
                # Short enough for a drill to see the restart within its run; far above a rebalance here.
                stall_seconds=30,
            ),
            # stall_seconds as the worker's; a ClickHouse outage longer than it is not a stall (each retry moves).
            sink=SinkSettings(
                group_id=f"drill-sink-{tag}", metrics_port=0, max_backoff_seconds=2.0, stall_seconds=30
            ),
        )
        self.broker = KafkaBroker(self.var_dir, kafka_port, controller_port, libs_dir=self.kafka_libs_dir)
        self.clickhouse = ClickHouseServer(self.var_dir, http_port, tcp_port)
        self.truth_path = self.var_dir / "truth.jsonl"
        self.supervisor = Supervisor(lambda: [*self.workers, *([self.sink] if self.sink else [])])

    # -- processes ------------------------------------------------------------------------------

    def _service(self, name: str, args: list[str], ready: Any = None, **env: str) -> Service:
        return Service(
            name,
            haochaping_argv(*args),
            self.var_dir / "logs" / f"{name}.log",
            env={**settings_env(self.settings), "PYTHONUNBUFFERED": "1", **env},
            ready=ready,
            cwd=REPO_ROOT,
        )

    def start(self, *, workers: int = 1, api: bool = False) -> None:
        self.broker.start()
        self.clickhouse.start()
        self.broker.wait_ready(120)
        self.clickhouse.wait_ready(60)
        from haochaping.topics import ensure_topics

        ensure_topics(self.settings.kafka)
        self.ingest = self._service(
            "ingest", ["ingest"], http_ready(f"http://127.0.0.1:{self.settings.ingest.port}/readyz")
        )
        self.ingest.start()
        self.sink = self._service("sink", ["sink"])
        self.sink.start()
        for _ in range(workers):
            self.add_worker()
        if api:
            self.api = self._service(
                "api", ["api"], http_ready(f"http://127.0.0.1:{self.settings.api.port}/healthz")
            )
            self.api.start()
        self.ingest.wait_ready(60)
        for worker in self.workers:
            worker.wait_ready(90)
        if self.api is not None:
            self.api.wait_ready(60)
        self.supervisor.start()

    def add_worker(self) -> Service:
        name = f"worker-{len(self.workers) + 1}"
        log = self.var_dir / "logs" / f"{name}.log"
        worker = self._service(
            name,
            ["worker", "--loglevel", "info"],
            lambda: log.exists() and "Ready" in log.read_text(errors="replace"),
            HAOCHAPING_STREAMS__DATA_DIR=str(self.var_dir / "streams" / name),
        )
        self.workers.append(worker)
        worker.start()
        return worker

    def simulate(self, *, rate: float, duration: float, seed: int = 0) -> Service:
        self.simulator = self._service(
            "simulate",
            [
                "simulate",
                "--rate",
                str(rate),
                "--duration",
                str(duration),
                "--truth",
                str(self.truth_path),
                "--seed",
                str(seed),
                "--run-id",
                f"drill{uuid.uuid4().hex[:6]}",
                "--hour",
                "10",
                "--concurrency",
                "64",
                "--quiet",
                "--retry-for",
                "120",
            ],
        )
        self.simulator.start()
        return self.simulator

    def wait_simulator(self, timeout: float = 600.0) -> int:
        assert self.simulator is not None and self.simulator.proc is not None
        code = self.simulator.proc.wait(timeout)
        return code

    def close(self) -> None:
        self.supervisor.stop()
        for service in [self.simulator, self.api, *reversed(self.workers), self.sink, self.ingest]:
            if service is not None:
                service.stop()
        self.broker.stop()
        self.clickhouse.stop()
        # The servers' data is big and of no use after the drill; the logs and the truth stay.
        for data in (self.var_dir / "kafka", self.var_dir / "clickhouse", self.var_dir / "streams"):
            shutil.rmtree(data, ignore_errors=True)

    # -- what the store holds -------------------------------------------------------------------

    def client(self) -> Any:
        import clickhouse_connect

        return clickhouse_connect.get_client(
            host="127.0.0.1",
            port=self.clickhouse.http_port,
            database=self.settings.clickhouse.database,
        )

    def figures(self) -> Counter[FigureKey]:
        client = self.client()
        try:
            result = client.query(
                "SELECT formatDateTime(minute, '%Y-%m-%d %H:%i') AS m, region_code, unit_code, hall_id, "
                "window_id, staff_id, item_code, channel, "
                "sum(n1 + f1), sum(n2 + f2), sum(n3 + f3), sum(n4 + f4), sum(n5 + f5) "
                "FROM satisfaction_minute "
                "GROUP BY m, region_code, unit_code, hall_id, window_id, staff_id, item_code, channel"
            )
        finally:
            client.close()
        out: Counter[FigureKey] = Counter()
        for row in result.result_rows:
            key, counts = tuple(str(v) for v in row[:8]), row[8:]
            for stars, n in enumerate(counts, start=1):
                if n:
                    out[cast(FigureKey, (*key, stars))] += int(n)
        return out

    def review_ticket_cases(self) -> Counter[str]:
        """case_no -> number of distinct tickets opened from reviews of that case."""
        client = self.client()
        try:
            rows = client.query(
                "SELECT case_no, uniqExact(ticket_id) FROM tickets FINAL WHERE source = 'review' GROUP BY case_no"
            ).result_rows
        finally:
            client.close()
        return Counter({str(case): int(n) for case, n in rows})

    def raw_review_rows(self) -> tuple[int, int]:
        """(rows in the reviews table, distinct case|stage among them)."""
        client = self.client()
        try:
            rows, distinct = client.query(
                "SELECT count(), uniqExact(case_no, stage, follow_up) FROM reviews"
            ).result_rows[0]
        finally:
            client.close()
        return int(rows), int(distinct)

    def exited(self) -> list[str]:
        """The services no longer running, with their exit codes (-9: killed, by a drill or the kernel)."""
        out = []
        for service in [self.ingest, self.sink, self.api, *self.workers]:
            if service is not None and service.proc is not None and not service.running():
                out.append(f"{service.name} exited with {service.proc.returncode} (log: {service.log_path})")
        return out

    def lag(self) -> dict[str, tuple[int, dict[str, dict[int, int]]]]:
        """Where the records stopped: per topic, the records in its log and, for the worker group and
        the sink group where they committed on it, per partition the records not yet committed. A worker
        that stopped leaves lag on ``reviews.raw``; a sink that stopped, on ``reviews.accepted`` or
        ``ledger.events``."""
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

        from haochaping.topics import topic_names
        from streams.app import app_id_for

        k = self.settings.kafka
        groups = {"worker": app_id_for(self.settings), "sink": self.settings.sink.group_id}
        admin = KafkaAdminClient(bootstrap_servers=k.bootstrap_servers, request_timeout_ms=10000)
        consumer = KafkaConsumer(bootstrap_servers=k.bootstrap_servers, request_timeout_ms=10000)
        try:
            out = {}
            by_group = admin.list_group_offsets(list(groups.values()))
            committed = {
                role: {tp: om.offset for tp, om in by_group.get(group, {}).items()}
                for role, group in groups.items()
            }
            for name, topic in topic_names(k).items():
                tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
                ends = consumer.end_offsets(tps)
                lags = {
                    role: {tp.partition: ends[tp] - max(0, offsets.get(tp, 0)) for tp in tps}
                    for role, offsets in committed.items()
                    if any(tp in offsets for tp in tps)
                }
                out[name] = (sum(ends.values()), lags)
            return out
        finally:
            consumer.close()
            admin.close()

    def lag_report(self) -> str:
        lines = []
        for name, (in_log, lags) in self.lag().items():
            parts = [f"{name}: {in_log} in the log"]
            parts += [f"{role} group lag {sum(lag.values())} {lag}" for role, lag in lags.items()]
            lines.append("; ".join(parts))
        return "\n".join(lines)

    # -- the verdict ----------------------------------------------------------------------------

    def truth(self) -> list[dict[str, Any]]:
        return read_truth(self.truth_path)

    def settle(self, timeout: float = 240.0, patience: float = 90.0) -> None:
        """Wait until the figures and the ledger hold what the truth says, or stop changing for
        ``patience`` seconds (longer than a stalled worker takes to notice, exit and be restarted)."""
        rows = self.truth()
        expected = expected_figures(rows)
        bad = expected_bad_cases(rows)
        deadline = time.monotonic() + timeout
        last: tuple[int, int] | None = None
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                figures, tickets = self.figures(), self.review_ticket_cases()
            except Exception:  # ClickHouse just restarted, or the tables are not there yet
                time.sleep(1)
                continue
            if compare(expected, figures).exact and set(tickets) == set(bad):
                return
            state = (sum(figures.values()), sum(tickets.values()))
            if state != last:
                last, still_since = state, time.monotonic()
            elif time.monotonic() - still_since > patience:
                return  # nothing moved for so long: the verdict will say what is wrong
            time.sleep(1)

    def verdict(self) -> list[str]:
        """What is wrong, in words; empty when every figure and the ledger equal the recount."""
        rows = self.truth()
        problems: list[str] = []
        expected = expected_figures(rows)
        if not expected:
            return ["the truth file holds no rating: the simulator sent nothing ingest took"]
        diff = compare(expected, self.figures())
        if not diff.exact:
            problems.append(f"figures: {diff}")
        bad = expected_bad_cases(rows)
        tickets = self.review_ticket_cases()
        without = sorted(set(bad) - set(tickets))
        twice = sorted(case for case, n in tickets.items() if n > 1)
        unexpected = sorted(set(tickets) - set(bad))
        if without:
            problems.append(f"ledger: {len(without)} bad review(s) without a ticket, e.g. {without[:5]}")
        if twice:
            problems.append(f"ledger: {len(twice)} bad review(s) with more than one ticket, e.g. {twice[:5]}")
        if unexpected:
            problems.append(
                f"ledger: {len(unexpected)} ticket(s) for no counted bad review, e.g. {unexpected[:5]}"
            )
        return problems

    def dump_tasks(self, wait: float = 3.0) -> list[Path]:
        """Have every live worker and the sink write each thread's stack and each asyncio task's and
        async generator's awaits, with locals, to its log (their SIGUSR1 handler,
        ``haochaping.taskdump``); the logs it went to.

        For a drill whose figures came out wrong: a process that stopped moving shows what each of its
        agents or lanes, its fetcher and its commit is waiting on, which its log lines alone cannot tell.
        """
        written = []
        for service in [*self.workers, self.sink]:
            if service is not None and service.running() and service.pid is not None:
                os.kill(service.pid, signal.SIGUSR1)
                written.append(service.log_path)
        if written:
            time.sleep(wait)
        return written

    def logs(self) -> str:
        parts = []
        for service in [self.ingest, self.sink, *self.workers, self.api, self.simulator]:
            if service is not None:
                parts.append(f"--- {service.name} ({service.log_path})\n{service.tail(15)}")
        return "\n".join(parts)


@contextmanager
def pipeline(
    var_root: Path, kafka_libs_dir: Path, *, workers: int = 1, api: bool = False
) -> Iterator[Pipeline]:
    p = Pipeline(var_root / uuid.uuid4().hex[:8], kafka_libs_dir)
    try:
        p.start(workers=workers, api=api)
        yield p
    finally:
        p.close()
