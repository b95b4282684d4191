"""Benchmark: reviews per second from ``reviews.accepted`` into ClickHouse, through the real writer.

Produces N review records (pre-produced, so the producer does not share the clock), then starts the
sink writer and times until every review is in ClickHouse and every offset is committed. Prints
rows/s, the CPU spent per review by the writer (and by ClickHouse, given its pid), per-batch insert
latency p50/p99 and the peak RSS of this process. On a shared box the CPU per review is the figure to
compare: it hardly moves with the load average, the rows/s do.

    .venv/bin/python bench/sink_bench.py --bootstrap 127.0.0.1:19092 --clickhouse http://127.0.0.1:18123 -n 500000

Uses a fresh topic prefix and database each run and drops the database afterwards.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry

from haochaping.settings import ClickHouseSettings, KafkaSettings, Settings, SinkSettings
from sinks.clickhouse import INSERT_SETTINGS, connect
from sinks.metrics import SinkMetrics
from sinks.schema import Target, migrate
from sinks.writer import SinkWriter, WriterThread


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:19092")
    ap.add_argument("--clickhouse", default="http://127.0.0.1:18123")
    ap.add_argument("-n", type=int, default=300_000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--batch-rows", type=int, default=SinkSettings().batch_rows)
    ap.add_argument("--insert-threads", type=int, default=2)
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
    args = ap.parse_args()
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
            batch_seconds=1.0,
            group_id=f"bench-{tag}",
            insert_threads=args.insert_threads,
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
