"""End-to-end benchmark: ingest → Kafka → streams → sink → ClickHouse → API, on this machine.

    .venv/bin/python bench/e2e_bench.py            (what `make bench` runs)
    .venv/bin/python bench/e2e_bench.py --help

Starts a private pipeline (its own Kafka and ClickHouse on free ports under var/bench/) and prints:

1. latency at a steady rate (default 2,000 reviews/s from the simulated city): probe ratings posted
   one by one beside the load, each timed from its POST to (a) its figure in the API
   (``/v1/satisfaction`` of a probe unit, polled every 50 ms) and (b) for a red one (an integrity
   complaint) to its ticket in the API (``/v1/tickets`` of a second probe unit); and the same two on
   the live board's own path, the API's server-sent events (``/v1/live``: a ``satisfaction`` tick that
   counts the probe, a ``red_ticket`` event for it), which come from Kafka through the API's feed and
   not from ClickHouse;
2. sustained throughput: as many reviews as ingest takes, in batches, and the time until the API's
   figure holds them all (the reviews are made up before the clock starts and sent again under fresh
   ids, so the bench's own CPU goes to sending them); and each process's CPU per review carried;
3. the raw Kafka consume floor in the same run: a bare aiokafka consumer reading ``reviews.raw``;
4. peak RSS of each process.

The API is polled for figures and for tickets in two loops of their own, and each request is timed.
With ``--breakdown`` the latency phase also tells where a probe's time went: the bench polls ClickHouse
directly (every 20 ms) for the probes' rows, and afterwards reads the CreateTime of each probe's records
in ``reviews.raw``, ``reviews.accepted``, ``ledger.intake`` and ``ledger.events`` (set by each producer as
it appends the record); it runs the API's two queries (api/queries.py) straight against ClickHouse every
100 ms and times them; and it prints the sink's step histogram (``haochaping_sink_step_seconds``: where
its batches' time went). The ClickHouse polls add a little work to the server: compare runs with
``--breakdown`` against runs with it only.

Figures only, no assertions: compare them with the targets (≥ 10,000 reviews/s end to end, rating →
figure p99 ≤ 2 s and rating → red ticket p99 ≤ 1 s at 2,000 reviews/s).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from haochaping.domain import signing  # noqa: E402
from haochaping.domain.contract import BEIJING  # noqa: E402
from haochaping.domain.ledger import ticket_id_for  # noqa: E402
from haochaping.simulator.city import load_city  # noqa: E402
from haochaping.simulator.codes import make_unit_code  # noqa: E402
from haochaping.simulator.generator import CityGenerator, Emission, Rates, Route  # noqa: E402
from haochaping.simulator.pipeline import Pipeline  # noqa: E402
from haochaping.simulator.sender import Sender  # noqa: E402

KEY_ID, SECRET = "demo-device", "demo-secret"
# Units that the simulated city does not have, so their figures move only with the probes.
FIGURE_PROBE_UNIT = make_unit_code("330199", "99990001")
RED_PROBE_UNIT = make_unit_code("330199", "99990002")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Batching:
    """Wraps the generator: single reviews of one tick go out in batches (``/v1/reviews/batch``)."""

    def __init__(self, generator: CityGenerator, size: int, *, reviews_only: bool = False) -> None:
        self.generator = generator
        self.size = size
        # For the throughput phase: only the ratings that travel in batches (no SMS, no 12345).
        self.reviews_only = reviews_only

    @property
    def held(self) -> int:
        return self.generator.held

    def _group(self, emissions: list[Emission]) -> list[Emission]:
        if self.size <= 1:
            return emissions
        out: list[Emission] = []
        pending: list[Emission] = []
        for e in emissions:
            if e.route == Route.REVIEW:
                pending.append(e)
                if len(pending) == self.size:
                    out.append(_batch(pending))
                    pending = []
            elif not self.reviews_only:
                out.append(e)
        if pending:
            out.append(_batch(pending))
        return out

    def tick(self, now: datetime, n: int, *, hour: float | None = None) -> list[Emission]:
        return self._group(self.generator.tick(now, n, hour=hour))

    def drain(self, now: datetime) -> list[Emission]:
        return self._group(self.generator.drain(now))


class Replay:
    """The throughput phase's load: a pool of the city's review batches, made before the clock starts and
    sent again and again under fresh ids (``-r1``, ``-r2``, ... on each event id and case number, so
    nothing is a repeat to ingest or to the worker's 一次一评 check). Making up a review costs the bench
    about 26 µs of CPU, on the same two cores as the pipeline it measures; a copy with two ids changed
    costs about 1 µs."""

    def __init__(self, batching: Batching, reviews: int) -> None:
        now = datetime.now(BEIJING)
        self.pool: list[Emission] = []
        made = 0
        while made < reviews:
            batch = batching.tick(now, batching.size, hour=10)
            self.pool.extend(batch)
            made += sum(len(e.body) for e in batch)
        self.reviews = made
        self._owed = 0
        self._next = 0
        self._round = 0

    held = 0  # Sender.run's interface: nothing is held back for later

    def tick(self, now: datetime, n: int, *, hour: float | None = None) -> list[Emission]:
        """Batches for ``n`` more reviews (whole batches: the rest is owed to the next tick)."""
        self._owed += n
        out: list[Emission] = []
        while self._owed >= len(self.pool[self._next].body):
            emission = self.pool[self._next]
            self._owed -= len(emission.body)
            if self._round:
                suffix = f"-r{self._round}"
                body = [
                    {**item, "event_id": item["event_id"] + suffix, "case_no": item["case_no"] + suffix}
                    for item in emission.body
                ]
                emission = Emission(emission.route, body, emission.truth)
            out.append(emission)
            self._next += 1
            if self._next == len(self.pool):
                self._next, self._round = 0, self._round + 1
        return out

    def drain(self, now: datetime) -> list[Emission]:
        return []


def _batch(items: list[Emission]) -> Emission:
    return Emission(Route.REVIEWS_BATCH, [e.body for e in items], tuple(r for e in items for r in e.truth))


@dataclass
class Probes:
    """Probe ratings posted one by one; each timed from POST to what a supervisor sees in the API."""

    ingest: str
    api: str
    token: str
    run_id: str
    sent_figure: list[float] = field(default_factory=list)  # POST time of the i-th figure probe
    seen_figure: list[float] = field(default_factory=list)  # when the API's count first reached i+1
    sent_red: dict[str, float] = field(default_factory=dict)  # event id -> POST time
    seen_red: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # --breakdown: when each probe was first seen in ClickHouse itself (polled beside the API)
    seen_red_ch: dict[str, float] = field(default_factory=dict)
    seen_figure_ch: list[float] = field(default_factory=list)
    # The live board's path: the API's server-sent events (/v1/live)
    seen_figure_live: list[float] = field(default_factory=list)
    seen_red_live: dict[str, float] = field(default_factory=dict)  # ticket id -> when its red_ticket came
    live_ready: asyncio.Event = field(default_factory=asyncio.Event)
    # How long each API request of the pollers took, and (--breakdown) the API's own queries run directly
    request_seconds: dict[str, list[float]] = field(default_factory=dict)

    def review(self, n: int, unit: str, *, red: bool) -> dict[str, Any]:
        return {
            "event_id": f"{self.run_id}-{'red' if red else 'fig'}-{n:06d}",
            "channel": "app",
            "stars": 1 if red else 4,
            "case_no": f"330199-{self.run_id}-{'r' if red else 'f'}{n:06d}",
            "region_code": "330199",
            "unit_code": unit,
            "unit_name": "基准测试探针单位",
            "item_code": "330199-9999-QT-01",
            "rated_at": datetime.now(BEIJING).isoformat(timespec="milliseconds"),
            "text": "工作人员索要红包，不给就说材料不全。" if red else None,
        }

    async def post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> bool:
        raw = orjson.dumps({k: v for k, v in body.items() if v is not None})
        headers = signing.signed_headers(
            KEY_ID, SECRET, "POST", "/v1/reviews", raw, now=time.time(), nonce=secrets.token_urlsafe(12)
        )
        headers["Content-Type"] = "application/json"
        response = await client.post(f"{self.ingest}/v1/reviews", content=raw, headers=headers)
        if response.status_code != 202:
            self.errors.append(f"probe answered {response.status_code}: {response.text[:200]}")
            return False
        return True

    async def send(self, seconds: float, figure_hz: float = 10, red_hz: float = 2) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < seconds:
                body = self.review(n, FIGURE_PROBE_UNIT, red=False)
                t = time.time()
                if await self.post(client, body):
                    self.sent_figure.append(t)
                if n % max(1, round(figure_hz / red_hz)) == 0:
                    red = self.review(n, RED_PROBE_UNIT, red=True)
                    t = time.time()
                    if await self.post(client, red):
                        self.sent_red[red["event_id"]] = t
                n += 1
                await asyncio.sleep(max(0.0, start + n / figure_hz - time.monotonic()))

    async def watch(self, stop: asyncio.Event) -> None:
        """Poll the API for the probes: figures and tickets each in a loop of its own (every 50 ms), so
        that neither request's time is counted in the other's latency."""
        headers = {"Authorization": f"Bearer {self.token}"}
        since = (datetime.now(BEIJING) - timedelta(hours=1)).isoformat()
        async with httpx.AsyncClient(base_url=self.api, headers=headers, timeout=5) as client:

            async def figures(now: float) -> None:
                response = await client.get(
                    "/v1/satisfaction",
                    params={"unit_code": FIGURE_PROBE_UNIT, "since": since, "include_flagged": "true"},
                )
                total = int(response.json()["total"])
                while len(self.seen_figure) < min(total, len(self.sent_figure)):
                    self.seen_figure.append(now)

            async def tickets(now: float) -> None:
                response = await client.get(
                    "/v1/tickets", params={"unit_code": RED_PROBE_UNIT, "limit": 500, "colour": "red"}
                )
                for item in response.json()["items"]:
                    self.seen_red.setdefault(item["source_id"], now)

            async def poll(name: str, request: Any) -> None:
                while not stop.is_set():
                    now = time.time()
                    try:
                        await request(now)
                        self.request_seconds.setdefault(f"GET /v1/{name}", []).append(time.time() - now)
                    except (httpx.HTTPError, KeyError, ValueError) as exc:
                        if len(self.errors) < 5:
                            self.errors.append(f"API poll: {type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.05)

            await asyncio.gather(poll("satisfaction", figures), poll("tickets", tickets))

    async def watch_live(self, stop: asyncio.Event) -> None:
        """Read the board's event stream as the board does, timing each probe's arrival on it: the figure
        probes' unit in the ``satisfaction`` ticks (its count reaching i+1), the red probes' tickets in
        ``red_ticket`` events."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        counted = 0

        async def read() -> None:
            nonlocal counted
            timeout = httpx.Timeout(5, read=None)
            async with (
                httpx.AsyncClient(base_url=self.api, headers=headers, timeout=timeout) as client,
                client.stream("GET", "/v1/live") as response,
            ):
                if response.status_code != 200:
                    body = (await response.aread())[:200]
                    raise ValueError(f"/v1/live answered {response.status_code}: {body!r}")
                name = ""
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        name = line[6:].strip()
                        continue
                    if not line.startswith("data:"):
                        continue
                    now = time.time()
                    data = orjson.loads(line[5:])
                    if name == "ready":
                        self.live_ready.set()
                    elif name == "satisfaction":
                        for row in data["rows"]:
                            if row["unit_code"] == FIGURE_PROBE_UNIT:
                                counted += sum(row["counts"]) + sum(row["fraud_counts"])
                        while len(self.seen_figure_live) < min(counted, len(self.sent_figure)):
                            self.seen_figure_live.append(now)
                    elif name == "red_ticket" and data.get("unit_code") == RED_PROBE_UNIT:
                        self.seen_red_live.setdefault(data["ticket_id"], now)

        # Cancelled when the phase ends (a timeout on each line would close the stream's line iterator).
        reader = asyncio.create_task(read())
        waiter = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([reader, waiter], return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and reader.exception() is not None:
                exc = reader.exception()
                self.errors.append(f"live stream: {type(exc).__name__}: {exc}")
            elif reader.done():
                self.errors.append("live stream: the API ended the stream early")
        finally:
            for task in (reader, waiter):
                task.cancel()
            await asyncio.gather(reader, waiter, return_exceptions=True)
            self.live_ready.set()  # never leave the sender waiting

    async def watch_clickhouse(self, url: str, database: str, stop: asyncio.Event) -> None:
        """Poll ClickHouse for the probes' rows: what the sink wrote, before the API reads it."""
        figures = f"SELECT count() FROM {database}.reviews WHERE unit_code = '{FIGURE_PROBE_UNIT}' FORMAT TSV"
        red = (
            f"SELECT DISTINCT JSONExtractString(ticket, 'source_id') FROM {database}.ticket_events "
            f"WHERE unit_code = '{RED_PROBE_UNIT}' FORMAT TSV"
        )
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            while not stop.is_set():
                now = time.time()
                try:
                    total = int((await client.post("/", content=figures)).text.strip() or 0)
                    while len(self.seen_figure_ch) < min(total, len(self.sent_figure)):
                        self.seen_figure_ch.append(now)
                    for source_id in (await client.post("/", content=red)).text.split():
                        self.seen_red_ch.setdefault(source_id, now)
                except (httpx.HTTPError, ValueError) as exc:
                    if len(self.errors) < 5:
                        self.errors.append(f"ClickHouse poll: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.02)

    def watch_api_queries(self, settings: Any, stop: threading.Event) -> None:
        """Run the queries the API runs for the pollers' two requests (api/queries.py, the same filters),
        straight against ClickHouse every 100 ms, and time them: what the API's answer costs ClickHouse."""
        from api import queries
        from sinks.clickhouse import connect

        client = connect(settings.clickhouse, database=settings.clickhouse.database)
        since = datetime.now(BEIJING) - timedelta(hours=1)
        try:
            while not stop.is_set():
                t0 = time.time()
                now = datetime.now(BEIJING)
                flt = queries.ReviewFilter(
                    since=since,
                    until=now + timedelta(seconds=1),
                    unit_code=FIGURE_PROBE_UNIT,
                    include_flagged=True,
                )
                try:
                    queries.satisfaction(client, flt)
                    t1 = time.time()
                    queries.list_tickets(
                        client,
                        queries.TicketFilter(unit_code=RED_PROBE_UNIT, colour=queries.Colour.RED),
                        limit=500,
                        offset=0,
                    )
                except Exception as exc:  # a busy or restarting ClickHouse: note it, keep timing
                    if len(self.errors) < 5:
                        self.errors.append(f"API queries: {type(exc).__name__}: {exc}")
                    stop.wait(0.1)
                    continue
                t2 = time.time()
                self.request_seconds.setdefault("satisfaction queries alone", []).append(t1 - t0)
                self.request_seconds.setdefault("tickets queries alone (count + page)", []).append(t2 - t1)
                stop.wait(0.1)
        finally:
            client.close()

    def figure_latencies(self) -> list[float]:
        return [seen - sent for sent, seen in zip(self.sent_figure, self.seen_figure, strict=False)]

    def red_latencies(self) -> list[float]:
        return [self.seen_red[e] - t for e, t in self.sent_red.items() if e in self.seen_red]

    def live_figure_latencies(self) -> list[float]:
        return [seen - sent for sent, seen in zip(self.sent_figure, self.seen_figure_live, strict=False)]

    def live_red_latencies(self) -> list[float]:
        out = []
        for event_id, sent in self.sent_red.items():
            seen = self.seen_red_live.get(ticket_id_for("review", event_id))
            if seen is not None:
                out.append(seen - sent)
        return out


_PROBE_ID = re.compile(rb"(b\d+-(?:red|fig)-\d{6})")
# The hops a probe's records make, in order, each with the topic whose CreateTime marks its end.
_RED_HOPS = ("reviews.raw", "ledger.intake", "ledger.events")
_FIGURE_HOPS = ("reviews.raw", "reviews.accepted")


async def topic_times(p: Pipeline, run_id: str) -> dict[str, dict[str, float]]:
    """Per topic: probe event id -> CreateTime (s) of its first record there."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    names = sorted(set(_RED_HOPS + _FIGURE_HOPS))
    out: dict[str, dict[str, float]] = {name: {} for name in names}
    topic_name = {p.settings.kafka.topic(name): name for name in names}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=p.settings.kafka.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, partition)
            for topic in topic_name
            for partition in (consumer.partitions_for_topic(topic) or await _partitions(consumer, topic))
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        needles = (f"{run_id}-red-".encode(), f"{run_id}-fig-".encode())
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(timeout_ms=2000, max_records=20_000)
            if not batches:
                break
            for tp, records in batches.items():
                seen = out[topic_name[tp.topic]]
                for record in records:
                    if record.value and any(n in record.value for n in needles):
                        match = _PROBE_ID.search(record.value)
                        if match:
                            seen.setdefault(match.group(1).decode(), record.timestamp / 1000)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return out


async def _partitions(consumer: Any, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # a fresh consumer may not know the topic yet
    return consumer.partitions_for_topic(topic) or set()


def print_breakdown(probes: Probes, times: dict[str, dict[str, float]]) -> None:
    def row(label: str, values: list[float]) -> None:
        print(
            f"    {label:<44} n={len(values):<4} p50 {percentile(values, 0.5):.3f} s"
            f"  p99 {percentile(values, 0.99):.3f} s  max {max(values, default=float('nan')):.3f} s"
        )

    def legs(
        sent: dict[str, float], hops: tuple[str, ...], ch: dict[str, float], api: dict[str, float]
    ) -> None:
        marks: list[tuple[str, dict[str, float]]] = [("POST", sent)]
        marks += [(hop, times[hop]) for hop in hops]
        marks += [("ClickHouse", ch), ("API", api)]
        for (a, at), (b, bt) in itertools.pairwise(marks):
            row(f"{a} → {b}", [bt[e] - at[e] for e in sent if e in at and e in bt])
        row("POST → API (whole)", [api[e] - sent[e] for e in sent if e in api])

    print("  where a red probe's time went (from each record's CreateTime; ClickHouse polled every 20 ms):")
    legs(probes.sent_red, _RED_HOPS, probes.seen_red_ch, probes.seen_red)
    figure_ids = [f"{probes.run_id}-fig-{n:06d}" for n in range(len(probes.sent_figure))]
    print("  where a figure probe's time went (its count's arrival, ClickHouse and API polled):")
    legs(
        dict(zip(figure_ids, probes.sent_figure, strict=False)),
        _FIGURE_HOPS,
        dict(zip(figure_ids, probes.seen_figure_ch, strict=False)),
        dict(zip(figure_ids, probes.seen_figure, strict=False)),
    )


async def print_sink_steps(p: Pipeline) -> None:
    """Where the sink's batches spent their time (haochaping_sink_step_seconds, since the sink started),
    per table and step: the histogram bucket that holds the p50 and the p99."""
    from prometheus_client.parser import text_string_to_metric_families

    if not p.settings.sink.metrics_port:
        return
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{p.settings.sink.metrics_port}/metrics")).text
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "haochaping_sink_step_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                key = (sample.labels["table"].rsplit(".", 1)[-1], sample.labels["step"])
                buckets.setdefault(key, []).append((float(sample.labels["le"]), sample.value))

    def bound(points: list[tuple[float, float]], q: float) -> str:
        total = points[-1][1]
        for le, n in points:
            if n >= q * total:
                return f"<= {le * 1000:.0f} ms" if le != float("inf") else "> 30 s"
        return "?"

    print("  the sink's batches, where their time went (p50 / p99 as histogram bucket bounds):")
    for (table, step), points in sorted(buckets.items()):
        points.sort()
        if table in ("reviews", "ticket_events") and points[-1][1]:
            print(
                f"    {table:<14} {step:<8} n={int(points[-1][1]):<6} p50 {bound(points, 0.5):<10} p99 {bound(points, 0.99)}"
            )


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process so far (Linux); 0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_pids(p: Pipeline) -> dict[str, int | None]:
    pids: dict[str, int | None] = {
        s.name: s.pid for s in [p.ingest, *p.workers, p.sink, p.api] if s is not None
    }
    for name, server in (("kafka", p.broker), ("clickhouse", p.clickhouse)):
        try:
            pids[name] = int(server.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pids[name] = None
    return pids


async def inserts_per_table(p: Pipeline) -> dict[str, int]:
    """How many inserts the sink made into each table: every row carries its batch's token."""
    db = p.settings.clickhouse.database
    out: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=p.settings.clickhouse.url, timeout=30) as client:
        for table in ("reviews", "ticket_events", "alerts"):
            response = await client.post(
                "/", content=f"SELECT uniqExact(sink_batch) FROM {db}.{table} FORMAT TSV"
            )
            out[table] = int(response.text.strip() or 0)
    return out


def rss_mb(pid: int | None) -> str:
    if pid is None:
        return "-"
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return f"{int(line.split()[1]) / 1024:.0f} MB"
    except OSError:
        pass
    return "-"


async def latency_phase(p: Pipeline, args: argparse.Namespace, token: str) -> Probes:
    ingest = f"http://127.0.0.1:{p.settings.ingest.port}"
    probes = Probes(ingest, f"http://127.0.0.1:{p.settings.api.port}", token, f"b{int(time.time()) % 100000}")
    generator = Batching(
        CityGenerator(load_city(), seed=1, run_id=f"lat{probes.run_id}", rates=Rates(malformed=0)),
        args.batch,
        # The target is in reviews/s: the city's reviews, batched as gateways and devices send them.
        reviews_only=True,
    )
    sender = Sender(ingest, KEY_ID, SECRET, concurrency=args.concurrency, retry_for=30)
    pids = process_pids(p)
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    inserts0 = await inserts_per_table(p)
    t0 = time.monotonic()
    stop = asyncio.Event()
    watcher = asyncio.create_task(probes.watch(stop))
    live_watcher = asyncio.create_task(probes.watch_live(stop))
    await asyncio.wait_for(probes.live_ready.wait(), 30)
    ch_watcher = (
        asyncio.create_task(
            probes.watch_clickhouse(p.settings.clickhouse.url, p.settings.clickhouse.database, stop)
        )
        if args.breakdown
        else None
    )
    stop_queries = threading.Event()
    query_watcher = (
        threading.Thread(target=probes.watch_api_queries, args=(p.settings, stop_queries), daemon=True)
        if args.breakdown
        else None
    )
    if query_watcher is not None:
        query_watcher.start()
    load = asyncio.create_task(
        sender.run(generator, rate=args.rate, duration=args.latency_seconds, hour=10)  # type: ignore[arg-type]
    )
    await asyncio.sleep(3)  # let the load settle before timing
    await probes.send(args.latency_seconds - 5)
    stats = await load
    await asyncio.sleep(5)  # the last probes
    stop.set()
    stop_queries.set()
    await watcher
    await live_watcher
    if query_watcher is not None:
        query_watcher.join(10)
    if ch_watcher is not None:
        await ch_watcher
    await sender.aclose()
    wall = time.monotonic() - t0
    cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    inserts = await inserts_per_table(p)
    print(
        f"\n[latency at {args.rate:,.0f} reviews/s offered] the city sent {stats.rows_accepted:,} reviews "
        f"({stats.rows_accepted / max(stats.elapsed, 1e-9):,.0f}/s) in {stats.requests:,} requests, {stats.retries} retries, "
        f"{stats.rows_rejected + stats.failed} problems"
    )
    fig, red = probes.figure_latencies(), probes.red_latencies()
    print(
        f"  rating → figure in the API:  n={len(fig)}/{len(probes.sent_figure)}  "
        f"p50 {percentile(fig, 0.5):.3f} s  p99 {percentile(fig, 0.99):.3f} s  max {max(fig, default=float('nan')):.3f} s"
    )
    print(
        f"  rating → red ticket in API:  n={len(red)}/{len(probes.sent_red)}  "
        f"p50 {percentile(red, 0.5):.3f} s  p99 {percentile(red, 0.99):.3f} s  max {max(red, default=float('nan')):.3f} s"
    )
    for what, values, sent in (
        ("figure on the live board", probes.live_figure_latencies(), len(probes.sent_figure)),
        ("red ticket on the board", probes.live_red_latencies(), len(probes.sent_red)),
    ):
        print(
            f"  rating → {what}:  n={len(values)}/{sent}  p50 {percentile(values, 0.5):.3f} s  "
            f"p99 {percentile(values, 0.99):.3f} s  max {max(values, default=float('nan')):.3f} s  (/v1/live)"
        )
    print(
        f"  CPU over the phase ({wall:.0f} s), cores busy: "
        + ", ".join(f"{name} {seconds / wall:.2f}" for name, seconds in cpu.items())
    )
    print(
        "  sink inserts/s: "
        + ", ".join(f"{t} {(inserts[t] - inserts0.get(t, 0)) / wall:.1f}" for t in inserts)
        + f"; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    for name, seconds in probes.request_seconds.items():
        print(
            f"  {name:<40} n={len(seconds):<5} p50 {percentile(seconds, 0.5) * 1000:6.1f} ms"
            f"  p99 {percentile(seconds, 0.99) * 1000:6.1f} ms  max {max(seconds) * 1000:6.1f} ms"
        )
    if args.breakdown:
        print_breakdown(probes, await topic_times(p, probes.run_id))
        await print_sink_steps(p)
    for error in probes.errors[:5]:
        print(f"  ! {error}")
    return probes


async def throughput_phase(p: Pipeline, args: argparse.Namespace, token: str) -> None:
    ingest = f"http://127.0.0.1:{p.settings.ingest.port}"
    api = f"http://127.0.0.1:{p.settings.api.port}"
    headers = {"Authorization": f"Bearer {token}"}
    since = (datetime.now(BEIJING) - timedelta(hours=1)).isoformat()
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=10) as client:

        async def api_total() -> int:
            response = await client.get(
                "/v1/satisfaction", params={"since": since, "include_flagged": "true"}
            )
            return int(response.json()["total"])

        before = await api_total()
        # Only reviews, in backlog-sized batches: the shape that carries the most ratings per request.
        generator = Replay(
            Batching(
                CityGenerator(
                    load_city(),
                    seed=2,
                    run_id=f"tp{int(time.time()) % 100000}",
                    rates=Rates(malformed=0, duplicate=0, workorders=0, offline=0),
                ),
                args.throughput_batch,
                reviews_only=True,
            ),
            args.throughput_pool,
        )
        sender = Sender(ingest, KEY_ID, SECRET, concurrency=args.throughput_concurrency, retry_for=60)
        counted: list[int] = [0]

        def on_accepted(rows: list[dict[str, Any]], _sent: float, _acked: float) -> None:
            counted[0] += sum(1 for r in rows if r["kind"] == "review" and r["outcome"] == "accepted")

        sender.on_accepted = on_accepted
        pids = process_pids(p)
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        bench_cpu0 = time.process_time()
        t0 = time.time()
        stats = await sender.run(
            generator,  # type: ignore[arg-type]
            rate=args.throughput_rate,
            duration=args.throughput_seconds,
            hour=10,
        )
        t_ingested = time.time()
        await sender.aclose()
        target = before + counted[0]
        total = before
        deadline = time.time() + 300
        while total < target and time.time() < deadline:
            total = await api_total()
            await asyncio.sleep(0.1)
        t_visible = time.time()
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        cpu["bench (sender, polls)"] = time.process_time() - bench_cpu0
    n = total - before
    print(
        f"\n[throughput] {counted[0]:,} ratings taken by ingest in {t_ingested - t0:.1f} s "
        f"({counted[0] / (t_ingested - t0):,.0f}/s, {stats.requests:,} requests)"
    )
    print(
        f"  ingest → board: {n:,} visible in the API after {t_visible - t0:.1f} s = "
        f"{n / (t_visible - t0):,.0f} reviews/s sustained end to end"
        + ("" if total >= target else f"  (only {n:,} of {target - before:,} within 300 s)")
    )
    if n:
        # What each process spent per review carried: on a machine the pipeline had to itself, these
        # costs bound the rate whatever the tuning (cores / CPU-seconds per review).
        per_review = {name: seconds / n for name, seconds in cpu.items()}
        pipeline = sum(v for k, v in per_review.items() if not k.startswith("bench"))
        print(
            "  CPU per review carried: "
            + ", ".join(f"{name} {v * 1e6:.0f} µs" for name, v in per_review.items())
            + f"; pipeline {pipeline * 1e6:.0f} µs"
        )
        cores = os.cpu_count() or 1
        print(
            f"  at that cost {cores} cores carry at most {cores / pipeline:,.0f} reviews/s with nothing else "
            f"running, {cores / (pipeline + per_review['bench (sender, polls)']):,.0f}/s beside this sender"
            f"; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )


async def consume_floor(p: Pipeline) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        p.settings.kafka.topic("reviews.raw"),
        bootstrap_servers=p.settings.kafka.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=10_000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = consumer.assignment()
        while not partitions:
            await asyncio.sleep(0.05)
            partitions = consumer.assignment()
        ends = await consumer.end_offsets(list(partitions))
        total = sum(ends.values())
        n = 0
        t0 = time.perf_counter()
        while n < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not batches:
                break
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                n += sum(len(r) for r in batches.values())
        elapsed = time.perf_counter() - t0
    finally:
        await consumer.stop()
    print(
        f"\n[floor] a bare aiokafka consumer read and decoded {n:,} records of reviews.raw in {elapsed:.2f} s = {n / elapsed:,.0f} records/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2000, help="reviews/s of the city in the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=40)
    parser.add_argument("--batch", type=int, default=20, help="reviews per request in the latency phase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--throughput-seconds", type=float, default=30)
    parser.add_argument("--throughput-rate", type=float, default=20000, help="offered actions/s")
    parser.add_argument("--throughput-batch", type=int, default=500)
    parser.add_argument("--throughput-concurrency", type=int, default=16)
    parser.add_argument(
        "--throughput-pool",
        type=int,
        default=50_000,
        help="reviews made up before the throughput phase and sent again under fresh ids",
    )
    parser.add_argument("--workers", type=int, default=1, help="stream worker processes")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--sink-topic-partitions",
        type=int,
        default=None,
        metavar="N",
        help="partitions of the topics the sink reads (reviews.accepted, ledger.events, alerts: "
        "kafka.topic_partitions); default: as kafka.topic_partitions says, else --partitions",
    )
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="in the latency phase, also poll ClickHouse and read the topics: the time of each hop",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--sink-latency-topics",
        type=orjson.loads,
        default=None,
        metavar="JSON",
        help="the sink's per-topic time bounds (sink.latency_topics), e.g. '{\"ledger.events\": 0.15}'; "
        "'{}' puts every topic on sink.batch_seconds",
    )
    parser.add_argument("--sink-batch-seconds", type=float, default=None, help="sink.batch_seconds")
    parser.add_argument(
        "--sink-latency-insert-threads",
        type=int,
        default=None,
        help="sink.latency_insert_threads: concurrent inserts of the sink's latency lane",
    )
    args = parser.parse_args()

    p = Pipeline(REPO / "var" / "bench" / f"e2e-{os.getpid()}", REPO / "var" / "kafka" / "libs")
    p.settings.kafka.partitions = args.partitions
    if args.sink_topic_partitions is not None:
        p.settings.kafka.topic_partitions = dict.fromkeys(
            ("reviews.accepted", "ledger.events", "alerts"), args.sink_topic_partitions
        )
    if args.sink_latency_topics is not None:
        p.settings.sink.latency_topics = args.sink_latency_topics
    if args.sink_batch_seconds is not None:
        p.settings.sink.batch_seconds = args.sink_batch_seconds
    if args.sink_latency_insert_threads is not None:
        p.settings.sink.latency_insert_threads = args.sink_latency_insert_threads
    if args.breakdown:
        from haochaping.simulator.pipeline import free_port

        p.settings.sink.metrics_port = free_port()  # the sink's step times, read after the latency phase
    print(
        f"machine: {os.cpu_count()} CPUs; pipeline: 1 ingest, {args.workers} worker(s), 1 sink, 1 API, "
        f"{args.partitions} partitions; of their own: {orjson.dumps(p.settings.kafka.topic_partitions).decode()}"
    )
    print(
        f"sink: batch_seconds {p.settings.sink.batch_seconds}, "
        f"latency_topics {orjson.dumps(p.settings.sink.latency_topics).decode()}, "
        f"latency_insert_threads {getattr(p.settings.sink, 'latency_insert_threads', '-')}"
    )
    started = time.time()
    try:
        p.start(workers=args.workers, api=True)
        print(
            f"pipeline ready in {time.time() - started:.1f} s (Kafka {p.broker.version()}, ClickHouse {p.clickhouse.version()})"
        )
        from api.auth import mint_token
        from haochaping.domain.records import Role

        token = mint_token(p.settings.api, role=Role.SUPERVISOR, sub="bench")
        if not args.skip_latency:
            asyncio.run(latency_phase(p, args, token))
        if not args.skip_throughput:
            asyncio.run(throughput_phase(p, args, token))
        asyncio.run(consume_floor(p))
        print(
            "\n[peak RSS] "
            + ", ".join(
                f"{s.name} {rss_mb(s.pid)}" for s in [p.ingest, *p.workers, p.sink, p.api] if s is not None
            )
            + f", bench {rss_mb(os.getpid())}"
        )
    finally:
        p.close()


if __name__ == "__main__":
    main()
