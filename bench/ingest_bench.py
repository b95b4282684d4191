"""Ingest benchmark: prints figures, asserts nothing.

    .venv/bin/python bench/ingest_bench.py [--bootstrap 127.0.0.1:19092] [--seconds 15] [--concurrency 32]

Starts ``haochaping ingest`` as its own process (as in production: uvicorn, one process) against a
Kafka broker: the one given by ``--bootstrap``, or else a broker of its own on free ports under
var/bench (started and stopped here). Fresh topics under a unique prefix. Then, from a small raw
HTTP/1.1 client (keep-alive connections, each request signed anew like a real sender's):

1. single: signed ``POST /v1/reviews`` with ``--concurrency`` requests in flight: req/s, p50 / p99;
2. batch: signed ``POST /v1/reviews/batch`` of ``--batch`` reviews: reviews/s, p50 / p99 per request;
3. the ingest process's RSS at the end and the share of a core it used.

Each line also gives the ingest process's CPU per request (or per review) and what that makes per
second of one core: on a shared machine that figure moves less with the load than the rate does.
``--only single`` or ``--only batch`` runs one of the two.

Every 202 means Kafka acknowledged the records (acks=all); the run counts the records on the topic
at the end to show nothing was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from haochaping.domain.signing import signed_headers

ROOT = Path(__file__).resolve().parents[1]
KEY_ID, SECRET = "bench-device", "bench-secret"
UNITS = ["11330102002495613X", "11330102002495621R", "11330102MB0000001X", "11330102MB0000002X"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def review(n: int, run: str) -> dict[str, Any]:
    return {
        "event_id": f"{run}-{n}",
        "channel": "hall_device",
        "stars": 5 - n % 5,
        "case_no": f"330102-2026-{n:08d}",
        "region_code": "330102",
        "hall_id": "hall-01",
        "unit_code": UNITS[n % len(UNITS)],
        "unit_name": "杭州市上城区市场监督管理局",
        "window_id": f"w-{n % 20:02d}",
        "staff_id": f"s-{n % 97:04d}",
        "item_code": "330102-0001-XK-01",
        "device_id": f"dev-{n % 50:04d}",
        "rated_at": "2026-11-25T09:30:00+08:00",
        "rater_phone": f"138{n % 10**8:08d}",
        "text": "办理很快，窗口人员态度很好" if n % 3 else None,
    }


class Connection:
    """One keep-alive HTTP/1.1 connection; enough of the protocol for our own server's answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes) -> int:
        headers = signed_headers(
            KEY_ID, SECRET, "POST", path, body, now=time.time(), nonce=secrets.token_hex(12)
        )
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])


async def drive(
    port: int, path: str, make_body: Any, seconds: float, concurrency: int
) -> tuple[list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = time.perf_counter() + seconds
    counter = iter(range(10**12))

    async def worker() -> None:
        conn = await Connection.open(port)
        while time.perf_counter() < stop_at:
            body = make_body(next(counter))
            started = time.perf_counter()
            status = await conn.post(path, body)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
        conn.writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] * 1000 if len(values) > 1 else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def count_records(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="a running broker; default: start one of our own")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--only", choices=("single", "batch"), help="run only this part")
    args = parser.parse_args()

    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        from haochaping.stack.kafka import KafkaBroker

        broker = KafkaBroker(ROOT / "var" / "bench", free_port(), free_port())
        broker.install()
        broker.start()
        broker.wait_ready(120)
        bootstrap = broker.bootstrap_servers
    run = uuid.uuid4().hex[:8]
    prefix = f"bench{run}."
    port = free_port()
    env = {
        **os.environ,
        "HAOCHAPING_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "HAOCHAPING_KAFKA__TOPIC_PREFIX": prefix,
        "HAOCHAPING_INGEST__SENDER_KEYS": json.dumps({KEY_ID: SECRET}),
        "HAOCHAPING_INGEST__MAX_BATCH": str(args.batch),
    }
    server = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "haochaping"), "ingest", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError as exc:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"ingest did not start: {server.stderr.read().decode() if server.stderr else ''}"
                    ) from exc
                time.sleep(0.2)

        # Bodies are made once and given fresh event ids per request by a byte replace: building and
        # dumping 500 dicts per request cost the client 4.6 us per review (a tenth of what ingest spent),
        # on the same two cores.
        singles = [json.dumps(review(n, run + "s~")).encode() for n in range(1000)]
        batch_body = json.dumps({"reviews": [review(i, run + "b~") for i in range(args.batch)]}).encode()

        def one(n: int) -> bytes:
            return singles[n % len(singles)].replace(b"~", b"%d" % (n // len(singles)), 1)

        def many(n: int) -> bytes:
            return batch_body.replace(b"~", b"%d" % n)

        _, warm = asyncio.run(
            drive(port, "/v1/reviews", one, 2.0, 8)
        )  # warm-up: metadata, connections, caches
        accepted = warm.get(202, 0)
        print(f"ingest bench: broker {bootstrap}, {os.cpu_count()} cores, ingest pid {server.pid}")

        if args.only != "batch":
            cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
            lat, statuses = asyncio.run(drive(port, "/v1/reviews", one, args.seconds, args.concurrency))
            accepted += statuses.get(202, 0)
            cpu1, elapsed = cpu_seconds(server.pid), time.perf_counter() - t0
            per = (cpu1 - cpu0) / max(len(lat), 1)
            print(
                f"single  : {len(lat) / elapsed:8.0f} req/s   p50 {pct(lat, 0.5):6.1f} ms   p99 {pct(lat, 0.99):6.1f} ms"
                f"   concurrency {args.concurrency}   ingest CPU {(cpu1 - cpu0) / elapsed:.0%}"
                f" ({per * 1e6:.0f} us/request = {1 / per:.0f} req per CPU-second)   statuses {statuses}"
            )
            print(f"          load average {os.getloadavg()[0]:.1f}")

        if args.only != "single":
            cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
            lat, statuses = asyncio.run(
                drive(port, "/v1/reviews/batch", many, args.seconds, args.batch_concurrency)
            )
            accepted += statuses.get(202, 0) * args.batch
            cpu1, elapsed = cpu_seconds(server.pid), time.perf_counter() - t0
            per = (cpu1 - cpu0) / max(len(lat) * args.batch, 1)
            print(
                f"batch   : {len(lat) * args.batch / elapsed:8.0f} reviews/s ({args.batch} per request)   "
                f"p50 {pct(lat, 0.5):6.1f} ms   p99 {pct(lat, 0.99):6.1f} ms   concurrency {args.batch_concurrency}   "
                f"ingest CPU {(cpu1 - cpu0) / elapsed:.0%} ({per * 1e6:.1f} us/review = {1 / per:.0f} reviews"
                f" per CPU-second)   statuses {statuses}"
            )
            print(f"          load average {os.getloadavg()[0]:.1f}")
        print(f"ingest RSS: {rss_mb(server.pid):.0f} MB")
        print(
            f"records on {prefix}reviews.raw: {count_records(bootstrap, prefix + 'reviews.raw')}"
            f" (acknowledged to senders: {accepted})"
        )
        print(f"load average during the run: {os.getloadavg()[0]:.1f} (other processes share these cores)")
    finally:
        server.terminate()
        server.wait(30)
        if broker is not None:
            broker.stop()
            # Keep the jars (libs/) for the next run; the broker's data and logs were this run's only.
            shutil.rmtree(broker.data_dir, ignore_errors=True)
            broker.config_file.unlink(missing_ok=True)
            broker.log_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
