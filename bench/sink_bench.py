"""Benchmark: reviews per second from ``reviews.accepted`` into ClickHouse, through the real writer.

Produces N review records (pre-produced, so the producer does not share the clock), then starts the
sink writer and times until every review is in ClickHouse and every offset is committed. Prints
rows/s, the CPU spent per review by the writer (and by ClickHouse, given its pid), per-batch insert
latency p50/p99 and the peak RSS of this process. On a shared box the CPU per review is the figure to
compare: it hardly moves with the load average, the rows/s do.

    .venv/bin/python bench/sink_bench.py --bootstrap 127.0.0.1:19092 --clickhouse http://127.0.0.1:18123 -n 500000

Uses a fresh topic prefix and database each run and drops the database afterwards. ``--private`` starts
a Kafka broker and a ClickHouse of its own (under var/bench/) and measures ClickHouse's CPU without
``--clickhouse-pid``.

``--steady SECONDS`` measures what the time bounds cost instead: reviews at ``--rate`` per second and
one ledger event (a ticket opened) for each bad review (``--bad-share``) are produced while the writers
that ``haochaping sink`` runs (sinks.writer.lanes) write them; it prints the inserts per second into each
table and the CPU of the writer and of ClickHouse per second of the run, merges included. Compare
``--latency-topics '{}'`` (every topic on ``--batch-seconds``) with the default bounds:

    .venv/bin/python bench/sink_bench.py --private --steady 60 --rate 2000 [--latency-topics '{}']
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry

from haochaping.settings import ClickHouseSettings, KafkaSettings, Settings, SinkSettings
from sinks.clickhouse import INSERT_SETTINGS, connect
from sinks.metrics import STEPS, SinkMetrics
from sinks.schema import Target, migrate
from sinks.writer import SinkWriter, WriterThread, lanes


def produce(settings: Settings, n: int) -> float:
    import asyncio

    import orjson
    from aiokafka import AIOKafkaProducer  # the bench's producer must outpace the sink under test

    units = [f"11330102{i:010d}" for i in range(40)]

    async def main() -> float:
        p = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            linger_ms=20,
            max_batch_size=512 * 1024,
            acks=1,
        )
        await p.start()
        t0 = time.perf_counter()
        topic = settings.kafka.topic("reviews.accepted")
        base = {
            "schema_version": 1,
            "case_no": "330102-2026-000137",
            "stage": "overall",
            "region_code": "330102",
            "unit_name": "杭州市上城区市场监督管理局",
            "item_name": "食品经营许可",
            "device_id": "dev-0042",
            "received_at": "2026-11-25T09:30:01+08:00",
            "tags": [],
            "text": None,
            "real_name": False,
            "rater_id": None,
            "follow_up": False,
            "sender": "demo-device",
        }
        pending = []
        for i in range(n):
            rec = dict(
                base,
                event_id=f"bench-{i:09d}",
                channel=("hall_device", "app", "sms", "web")[i % 4],
                stars=(i * 7) % 5 + 1,
                hall_id=f"hall-{i % 7}",
                unit_code=units[i % len(units)],
                window_id=f"w-{i % 23}",
                staff_id=f"s-{i % 101}",
                item_code=f"item-{i % 50}",
                rated_at=f"2026-11-25T{9 + (i // 60000) % 10:02d}:{(i // 1000) % 60:02d}:{i % 60:02d}+08:00",
                fraud_flags=["device_burst"] if i % 97 == 0 else [],
            )
            pending.append(await p.send(topic, orjson.dumps(rec), key=rec["unit_code"].encode()))
            if len(pending) >= 20000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await p.stop()
        return time.perf_counter() - t0

    return asyncio.run(main())


def produce_steady(settings: Settings, rate: float, bad_share: float, seconds: float) -> tuple[int, int]:
    """Reviews at ``rate``/s and a ticket-opened ledger event per bad review, in 50 ms ticks, for ``seconds``."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    import orjson
    from aiokafka import AIOKafkaProducer

    units = [f"11330102{i:010d}" for i in range(40)]
    tick = 0.05

    async def main() -> tuple[int, int]:
        p = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5, acks=1)
        await p.start()
        reviews_topic = settings.kafka.topic("reviews.accepted")
        ledger_topic = settings.kafka.topic("ledger.events")
        n_reviews = n_events = 0
        owed = 0.0
        t0 = time.monotonic()
        next_at = t0
        while time.monotonic() - t0 < seconds:
            owed += rate * tick
            now = datetime.now(UTC)
            for _ in range(int(owed)):
                i = n_reviews
                bad = (i * 0.618034) % 1.0 < bad_share  # spread evenly, not in runs
                unit = units[i % len(units)]
                review = {
                    "schema_version": 1,
                    "event_id": f"steady-{i:09d}",
                    "channel": ("hall_device", "app", "sms", "web")[i % 4],
                    "stars": 1 if bad else 4 + i % 2,
                    "case_no": f"330102-2026-{i:09d}",
                    "stage": "overall",
                    "region_code": "330102",
                    "unit_code": unit,
                    "unit_name": "杭州市上城区市场监督管理局",
                    "hall_id": f"hall-{i % 7}",
                    "window_id": f"w-{i % 23}",
                    "staff_id": f"s-{i % 101}",
                    "item_code": f"item-{i % 50}",
                    "rated_at": now.isoformat(),
                    "received_at": now.isoformat(),
                    "tags": [],
                    "fraud_flags": [],
                }
                await p.send(reviews_topic, orjson.dumps(review), key=unit.encode())
                if bad:
                    ticket_id = f"tk-steady-{i:09d}"
                    ticket = {
                        "ticket_id": ticket_id,
                        "version": 1,
                        "source": "review",
                        "source_id": review["event_id"],
                        "opened_at": now.isoformat(),
                        "colour": "blue",
                        "original_colour": "blue",
                        "reasons": [],
                        "region_code": "330102",
                        "unit_code": unit,
                        "unit_name": review["unit_name"],
                        "stars": 1,
                        "case_no": review["case_no"],
                        "callback_due": (now + timedelta(days=1)).isoformat(),
                        "due": (now + timedelta(days=21)).isoformat(),
                        "status": "new",
                    }
                    event = {
                        "event_id": f"{ticket_id}:1",
                        "ticket_id": ticket_id,
                        "type": "opened",
                        "at": now.isoformat(),
                        "actor": "system",
                        "ticket": ticket,
                    }
                    await p.send(ledger_topic, orjson.dumps(event), key=ticket_id.encode())
                    n_events += 1
                n_reviews += 1
            owed -= int(owed)
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await p.flush()
        await p.stop()
        return n_reviews, n_events

    return asyncio.run(main())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux), 0 without a pid."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for_merges(client: object, database: str, timeout: float = 120.0) -> float:
    """Wait until ClickHouse runs no merge of the database (parts written late are merged after the
    writer is done; their cost belongs to the run). Returns the seconds waited."""
    t0 = time.perf_counter()
    quiet = 0
    while time.perf_counter() - t0 < timeout and quiet < 3:
        busy = client.query(  # type: ignore[attr-defined]
            "SELECT count() FROM system.merges WHERE database = {db:String}", parameters={"db": database}
        ).result_rows[0][0]
        quiet = 0 if busy else quiet + 1
        time.sleep(1.0)
    return time.perf_counter() - t0


def _inserts(client: object, database: str) -> dict[str, int]:
    """Inserts per table so far: every row carries its batch's token."""
    return {
        t: int(client.query(f"SELECT uniqExact(sink_batch) FROM {database}.{t}").result_rows[0][0])  # type: ignore[attr-defined]
        for t in ("reviews", "ticket_events")
    }


def steady(args: argparse.Namespace, settings: Settings, client: object) -> None:
    db = settings.clickhouse.database
    metrics = SinkMetrics(CollectorRegistry())
    metrics.keep_samples()
    writers = lanes(settings, metrics)
    print(
        f"steady: {args.rate:,.0f} reviews/s, {args.bad_share:.0%} bad (a ledger event each), {args.steady:.0f} s; "
        f"batch_seconds {settings.sink.batch_seconds}, latency_topics "
        f"{json.dumps(settings.sink.latency_topics)}; writers: "
        + ", ".join(f"{w.lane} ({', '.join(sorted(w.table_of.values()))})" for w in writers)
    )
    produced: list[tuple[int, int]] = []
    seen = Visibility(settings.clickhouse)
    with WriterThread(writers) as writing, seen:
        time.sleep(3)  # the group forms before the clock starts
        t0 = time.perf_counter()
        # Only ClickHouse's CPU: the producer runs in this process beside the writers.
        ch_cpu0 = _cpu_seconds(args.clickhouse_pid)
        producer = threading.Thread(
            target=lambda: produced.append(produce_steady(settings, args.rate, args.bad_share, args.steady))
        )
        producer.start()
        producer.join()
        n_reviews, n_events = produced[0]
        tables = {f"{db}.reviews": n_reviews, f"{db}.ticket_events": n_events}
        while any(sum(w.rows_written.get(t, 0) for w in writers) < n for t, n in tables.items()):
            if not writing.is_alive():
                break  # the writer failed: leaving the block raises its error
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        ch_cpu = _cpu_seconds(args.clickhouse_pid) - ch_cpu0
    settled = _wait_for_merges(client, db) if args.clickhouse_pid else 0.0
    ch_cpu_settled = _cpu_seconds(args.clickhouse_pid) - ch_cpu0
    inserts = _inserts(client, db)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(
        f"written: {n_reviews:,} reviews, {n_events:,} ledger events in {elapsed:.1f} s; inserts/s: "
        + ", ".join(f"{t} {n / elapsed:.1f}" for t, n in inserts.items())
    )
    for table in (f"{db}.reviews", f"{db}.ticket_events"):
        n, quantile = _batch_seconds(metrics, table)
        print(
            f"{table}: {n} batches; repeat check + insert p50 <= {quantile(0.5)} s, p99 <= {quantile(0.99)} s"
        )
    print_steps(metrics)
    for table, ages in seen.ages.items():
        print(
            f"produced → visible in ClickHouse, {table}: n={len(ages):,} p50 {_quantile(ages, 0.5):.3f} s "
            f"p99 {_quantile(ages, 0.99):.3f} s max {max(ages, default=float('nan')):.3f} s"
        )
    if args.clickhouse_pid:
        print(
            f"ClickHouse CPU: {ch_cpu / elapsed:.3f} cores while writing, {ch_cpu_settled:.1f} s in all with the "
            f"merges that followed ({settled:.0f} s) = {ch_cpu_settled / elapsed:.3f} cores over the run"
        )


def print_steps(metrics: SinkMetrics) -> None:
    """Where each table's batches spent their time, step by step (sinks.metrics.STEPS), p50 / p99 / max."""
    assert metrics.step_samples is not None
    for table in sorted({t for t, _ in metrics.step_samples}):
        print(f"where a batch's time goes, {table} (ms, p50 / p99 / max):")
        for step, meaning in STEPS.items():
            values = list(metrics.step_samples.get((table, step), ()))
            if values:
                print(
                    f"    {step:<7} n={len(values):<6} {_quantile(values, 0.5) * 1000:7.1f} / "
                    f"{_quantile(values, 0.99) * 1000:7.1f} / {max(values) * 1000:7.1f}   {meaning}"
                )


def _batch_seconds(metrics: SinkMetrics, table: str) -> tuple[int, Callable[[float], str]]:
    """The writer's batches into ``table`` and a quantile of their insert time (a histogram bucket's bound)."""
    samples = [
        s
        for m in metrics.batch_seconds.collect()
        for s in m.samples
        if s.name.endswith("_bucket") and s.labels["table"] == table
    ]
    total = max((s.value for s in samples), default=0)

    def quantile(q: float) -> str:
        for s in samples:
            if s.value >= q * total:
                return s.labels["le"]
        return "?"

    return int(total), quantile


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


_TIME_COLUMN = {"reviews": "rated_at", "ticket_events": "at"}


class Visibility:
    """Polls ClickHouse every 20 ms for the rows that appeared since the last poll: each row's age then
    (now minus its own time, which the steady producer sets to the time it sent the record) is how long
    it took from the producer to a reader of ClickHouse, poll interval included."""

    def __init__(self, settings: ClickHouseSettings) -> None:
        self.settings = settings
        self.ages: dict[str, list[float]] = {t: [] for t in _TIME_COLUMN}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="visibility", daemon=True)

    def _main(self) -> None:
        client = connect(self.settings)
        # Batches land out of their records' time order (partitions are cut apart), so new rows are
        # found by the batch token every row carries, not by time.
        seen: dict[str, set[str]] = {t: set() for t in _TIME_COLUMN}
        try:
            while not self._stop.is_set():
                for table, column in _TIME_COLUMN.items():
                    rows = client.query(
                        f"SELECT sink_batch, groupArray(toUnixTimestamp64Milli({column})) "
                        f"FROM {self.settings.database}.{table} "
                        "WHERE sink_batch NOT IN {seen:Array(String)} GROUP BY sink_batch",
                        parameters={"seen": list(seen[table])},
                    ).result_rows
                    now_ms = time.time() * 1000
                    for batch, times in rows:
                        seen[table].add(batch)
                        self.ages[table].extend((now_ms - t) / 1000 for t in times)
                time.sleep(0.02)
        finally:
            client.close()

    def __enter__(self) -> Visibility:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@contextlib.contextmanager
def private_stack(args: argparse.Namespace) -> Iterator[None]:
    """A Kafka broker and a ClickHouse of this run's own; fills in their addresses and ClickHouse's pid."""
    from haochaping.simulator.pipeline import free_ports
    from haochaping.stack.clickhouse import ClickHouseServer
    from haochaping.stack.kafka import KafkaBroker

    repo = Path(__file__).resolve().parents[1]
    var = repo / "var" / "bench" / f"sink-{os.getpid()}"
    kafka_port, controller_port, http_port, tcp_port = free_ports(4)
    broker = KafkaBroker(var, kafka_port, controller_port, libs_dir=repo / "var" / "kafka" / "libs")
    clickhouse = ClickHouseServer(var, http_port, tcp_port)
    try:
        broker.start()
        clickhouse.start()
        broker.wait_ready(120)
        clickhouse.wait_ready(60)
        args.bootstrap = f"127.0.0.1:{kafka_port}"
        args.clickhouse = f"http://127.0.0.1:{http_port}"
        args.clickhouse_pid = int(clickhouse.pid_file.read_text().split()[0])
        yield
    finally:
        broker.stop()
        clickhouse.stop()
        shutil.rmtree(var, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:19092")
    ap.add_argument("--clickhouse", default="http://127.0.0.1:18123")
    ap.add_argument("-n", type=int, default=300_000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--batch-rows", type=int, default=SinkSettings().batch_rows)
    ap.add_argument("--insert-threads", type=int, default=SinkSettings().insert_threads)
    ap.add_argument(
        "--latency-insert-threads",
        type=int,
        default=SinkSettings().latency_insert_threads,
        help="sink.latency_insert_threads: concurrent inserts of the latency lane (--steady)",
    )
    ap.add_argument(
        "--insert-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra ClickHouse setting on every insert, to try one (e.g. parallel_view_processing=1)",
    )
    ap.add_argument(
        "--clickhouse-pid",
        type=int,
        default=0,
        help="the local ClickHouse's process id: print its CPU per review too (figures that hold under load)",
    )
    ap.add_argument("--private", action="store_true", help="start a Kafka and a ClickHouse of its own")
    ap.add_argument(
        "--steady", type=float, default=0, metavar="SECONDS", help="the steady-rate mode (see above)"
    )
    ap.add_argument("--rate", type=float, default=2000, help="reviews/s in --steady")
    ap.add_argument(
        "--bad-share", type=float, default=0.1, help="share of bad reviews (a ticket each) in --steady"
    )
    ap.add_argument("--batch-seconds", type=float, default=SinkSettings().batch_seconds)
    ap.add_argument(
        "--latency-topics",
        type=json.loads,
        default=None,
        metavar="JSON",
        help="sink.latency_topics, e.g. '{\"ledger.events\": 0.15}'; '{}' puts every topic on --batch-seconds",
    )
    args = ap.parse_args()
    with private_stack(args) if args.private else contextlib.nullcontext():
        run(args)


def run(args: argparse.Namespace) -> None:
    for item in args.insert_setting:
        name, _, value = item.partition("=")
        INSERT_SETTINGS[name] = value

    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka=KafkaSettings(
            bootstrap_servers=args.bootstrap, topic_prefix=f"bench{tag}.", partitions=args.partitions
        ),
        clickhouse=ClickHouseSettings(url=args.clickhouse, database=f"bench_{tag}"),
        sink=SinkSettings(
            batch_rows=args.batch_rows,
            batch_seconds=args.batch_seconds,
            **({} if args.latency_topics is None else {"latency_topics": args.latency_topics}),
            group_id=f"bench-{tag}",
            insert_threads=args.insert_threads,
            latency_insert_threads=args.latency_insert_threads,
            metrics_port=0,
        ),
    )
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    topics = [settings.kafka.topic(t) for t in ("reviews.accepted", "ledger.events", "alerts", "deadletter")]
    admin.create_topics([NewTopic(t, args.partitions, 1) for t in topics])
    client = connect(settings.clickhouse)
    migrate(client, Target(settings.clickhouse.database))
    try:
        if args.steady:
            steady(args, settings, client)
            return
        produced_s = produce(settings, args.n)
        print(
            f"produced {args.n:,} reviews in {produced_s:.1f}s ({args.n / produced_s:,.0f}/s; not the figure)"
        )
        metrics = SinkMetrics(CollectorRegistry())
        writer = SinkWriter(settings, metrics=metrics)
        table = f"{settings.clickhouse.database}.reviews"
        t0 = time.perf_counter()
        cpu0, ch_cpu0 = time.process_time(), _cpu_seconds(args.clickhouse_pid)
        with WriterThread(writer):
            while writer.rows_written.get(table, 0) < args.n:
                time.sleep(0.02)
            elapsed = time.perf_counter() - t0
            cpu, ch_cpu = time.process_time() - cpu0, _cpu_seconds(args.clickhouse_pid) - ch_cpu0
        settled = _wait_for_merges(client, settings.clickhouse.database) if args.clickhouse_pid else 0.0
        ch_cpu_settled = _cpu_seconds(args.clickhouse_pid) - ch_cpu0
        in_ch = int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])
        db = settings.clickhouse.database
        counted = "sum(n1+n2+n3+n4+n5+f1+f2+f3+f4+f5)"
        rollups = {
            t: int(client.query(f"SELECT {counted} FROM {db}.{t}").result_rows[0][0])
            for t in ("satisfaction_minute", "satisfaction_hourly", "satisfaction_daily")
        }
        total, quantile = _batch_seconds(metrics, table)

        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"reviews into ClickHouse: {args.n:,} in {elapsed:.2f}s = {args.n / elapsed:,.0f} reviews/s")
        print(
            f"rows in reviews: {in_ch:,}; ratings counted in "
            + ", ".join(f"{t} {n:,}" for t, n in rollups.items())
        )
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
        print(
            f"CPU per review: writer {cpu / args.n * 1e6:.1f} us"
            + (
                f", ClickHouse {ch_cpu / args.n * 1e6:.1f} us while writing,"
                f" {ch_cpu_settled / args.n * 1e6:.1f} us with the merges that followed ({settled:.0f} s)"
                if args.clickhouse_pid
                else ""
            )
        )
        print(f"batches: {int(total)}; insert latency p50 <= {quantile(0.5)} s, p99 <= {quantile(0.99)} s")
        print(f"peak RSS of the writer process: {rss_mb:,.0f} MB")
    finally:
        client.command(f"DROP DATABASE IF EXISTS {settings.clickhouse.database} SYNC")
        client.close()
        admin.delete_topics(topics)
        admin.close()


if __name__ == "__main__":
    main()
