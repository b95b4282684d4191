"""Stream worker benchmark: prints figures, asserts nothing.

    .venv/bin/python bench/streams_bench.py --bootstrap 127.0.0.1:19092 [--events 200000] [--rate 2000]
        [--workers 1] [--set batch_within_seconds=0.05 ...]

1. floor: a bare aiokafka consumer that only decodes the records with orjson (events/s);
2. sustained: a ``haochaping worker`` subprocess drains ``--events`` preloaded reviews (10 % bad):
   events/s from the first to the last record out (reviews.accepted);
3. latency: reviews produced at ``--rate`` events/s while the worker runs; p50 / p99 from a bad
   review's append (its broker timestamp) to its ``opened`` ledger event's append;
4. each worker's RSS and the machine's load average (other work on the box skews every figure).
Each run uses fresh topics under a unique prefix. ``bench/stage_bench.py`` measures the worker's
plain-Python stages alone on the same records (CPU per review, no Kafka, no Faust).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from haochaping.settings import KafkaSettings
from haochaping.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
UNITS = ["11330102002495613X", "11330102002495621R", "11330102MB0000001X", "11330102MB0000002X"]


def review(i: int, run: str) -> tuple[bytes, bytes]:
    unit = UNITS[i % len(UNITS)]
    bad = i % 10 == 0
    body = {
        "event_id": f"{run}-{i}",
        "channel": "hall_device",
        "stars": 1 if bad else 4 + (i % 2),
        "case_no": f"C-{i}",
        "region_code": "330102",
        "hall_id": f"hall-{i % 3}",
        "unit_code": unit,
        "unit_name": "杭州市上城区市场监督管理局",
        "window_id": f"w-{i % 20}",
        "staff_id": f"s-{i % 50}",
        "item_code": f"330102-0001-XK-{i % 30:02d}",
        "device_id": f"dev-{i % 40}",
        "rated_at": "2026-11-25T09:30:00+08:00",
        "text": "窗口要辛苦费" if bad else None,
    }
    return unit.encode(), orjson.dumps(body)


def produce(kafka: KafkaSettings, n: int, run: str, rate: float | None = None, start: int = 0) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=5, batch_size=256 * 1024)
    topic = kafka.topic("reviews.raw")
    t0 = time.perf_counter()
    for i in range(start, start + n):
        key, value = review(i, run)
        producer.send(topic, key=key, value=value)
        if rate and i % 20 == 0:
            ahead = (i - start) / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(60)
    producer.close()


async def floor(kafka: KafkaSettings, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        kafka.topic("reviews.raw"),
        bootstrap_servers=kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    seen = 0
    t0 = None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                if t0 is None:
                    t0 = time.perf_counter()
                for record in records:
                    orjson.loads(record.value)
                    seen += 1
    finally:
        await consumer.stop()
    return seen / (time.perf_counter() - (t0 or time.perf_counter()))


def last_timestamps(kafka: KafkaSettings, logical: str) -> tuple[int, int, int]:
    """(records, first append ms, last append ms) of a topic."""
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, consumer_timeout_ms=1000)
    name = kafka.topic(logical)
    tps = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    n, first, last = 0, None, 0
    for m in consumer:
        n += 1
        first = m.timestamp if first is None else min(first, m.timestamp)
        last = max(last, m.timestamp)
    consumer.close()
    return n, first or 0, last


def count(kafka: KafkaSettings, logical: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    name = kafka.topic(logical)
    tps = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
    ends = consumer.end_offsets(tps)
    consumer.close()
    return sum(ends.values())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = {
        k: v.split()[0] for k, _, v in (line.partition(":") for line in status.splitlines()) if v.split()
    }
    return int(fields["VmRSS"]) / 1024, int(fields["VmHWM"]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the partitions")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a streams setting for the worker, e.g. --set batch_within_seconds=0.1 (repeatable)",
    )
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(
        bootstrap_servers=args.bootstrap, topic_prefix=f"bench{run}.", partitions=args.partitions
    )
    ensure_topics(kafka)
    print(f"topics under prefix {kafka.topic_prefix}, {args.partitions} partitions")

    t = time.perf_counter()
    produce(kafka, args.events, run)
    print(f"preloaded {args.events} reviews in {time.perf_counter() - t:.1f}s")
    floor_rate = asyncio.run(floor(kafka, args.events))
    print(f"floor (bare aiokafka + orjson decode): {floor_rate:,.0f} events/s")

    env = {k: v for k, v in os.environ.items() if not k.startswith("HAOCHAPING_")}
    env.update(
        HAOCHAPING_KAFKA__BOOTSTRAP_SERVERS=args.bootstrap,
        HAOCHAPING_KAFKA__TOPIC_PREFIX=kafka.topic_prefix,
        HAOCHAPING_KAFKA__PARTITIONS=str(args.partitions),
        HAOCHAPING_STREAMS__STORE="memory://",
        HAOCHAPING_STREAMS__METRICS_PORT="0",
        HAOCHAPING_STREAMS__BROKER_SESSION_TIMEOUT="6",
        HAOCHAPING_STREAMS__BROKER_HEARTBEAT_INTERVAL="1",
        HAOCHAPING_VAR_DIR=f"/tmp/haochaping-bench-{run}",
    )
    for item in args.set:
        key, _, value = item.partition("=")
        env[f"HAOCHAPING_STREAMS__{key.upper()}"] = value
    log = open(f"/tmp/haochaping-bench-{run}.log", "wb")  # noqa: SIM115
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "haochaping.cli", "worker", "--loglevel", "warning"],
            cwd=ROOT,
            env={**env, "HAOCHAPING_STREAMS__DATA_DIR": f"/tmp/haochaping-bench-{run}/w{n}"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for n in range(args.workers)
    ]
    try:
        t = time.perf_counter()
        first_cpu: tuple[int, float] | None = None
        while (done := count(kafka, "reviews.accepted")) < args.events:
            for worker in workers:
                if worker.poll() is not None:
                    raise SystemExit(f"worker exited {worker.returncode}; see {log.name}")
            if done and first_cpu is None:
                first_cpu = (done, sum(cpu_seconds(w.pid) for w in workers))
            time.sleep(0.5)
            if time.perf_counter() - t > 600:
                raise SystemExit("worker did not drain the preload within 600 s")
        last_cpu = (args.events, sum(cpu_seconds(w.pid) for w in workers))
        n, first, last = last_timestamps(kafka, "reviews.accepted")
        sustained = n / max((last - first) / 1000, 1e-3)
        opened = count(kafka, "ledger.events")
        minutes = count(kafka, "satisfaction.minute")
        print(
            f"sustained end to end: {sustained:,.0f} events/s ({n} accepted, {opened} tickets opened, "
            f"{minutes} minute records); ratio to floor {sustained / floor_rate:.3f}"
        )
        if first_cpu is not None and last_cpu[1] > first_cpu[1]:
            # Wall-clock rates depend on what else the box runs; CPU per event much less so.
            per_cpu = (last_cpu[0] - first_cpu[0]) / (last_cpu[1] - first_cpu[1])
            print(f"worker CPU: {per_cpu:,.0f} events per CPU-second ({1e6 / per_cpu:.0f} µs per event)")

        # latency at a steady rate: bad review append -> its ticket's opened event append
        start = args.events
        n_latency = int(args.rate * args.latency_seconds)
        produce(kafka, n_latency, run, rate=args.rate, start=start)
        time.sleep(3)
        appended = {}
        consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, consumer_timeout_ms=2000)
        for logical in ("reviews.raw", "ledger.events"):
            name = kafka.topic(logical)
            tps = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            for m in consumer:
                if logical == "reviews.raw":
                    body = orjson.loads(m.value)
                    if int(body["event_id"].rsplit("-", 1)[1]) >= start and body["stars"] <= 2:
                        appended[body["event_id"]] = m.timestamp
                else:
                    body = orjson.loads(m.value)
                    if body["type"] == "opened" and body["ticket"]["source_id"] in appended:
                        appended[body["ticket"]["source_id"]] = (
                            m.timestamp - appended[body["ticket"]["source_id"]]
                        )
        consumer.close()
        lags = sorted(v for v in appended.values() if v < 10**9)
        missing = sum(1 for v in appended.values() if v >= 10**9)
        if lags:
            p50 = statistics.median(lags)
            p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
            print(
                f"bad review append -> ticket opened at {args.rate:,.0f} events/s: p50 {p50:.0f} ms, "
                f"p99 {p99:.0f} ms, max {lags[-1]:.0f} ms ({len(lags)} tickets, {missing} not seen)"
            )
        for n, worker in enumerate(workers):
            rss, peak = rss_mb(worker.pid)
            print(f"worker {n + 1} RSS {rss:.0f} MB (peak {peak:.0f} MB)")
        print(f"load average while measuring: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        log.close()


if __name__ == "__main__":
    main()
