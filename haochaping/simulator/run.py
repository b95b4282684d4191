"""One simulation run: the city, the generator and the sender, with a progress display and a summary."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from haochaping.simulator.city import load_city
from haochaping.simulator.generator import CityGenerator, Rates
from haochaping.simulator.sender import AcceptedHook, Sender, SendStats, TruthWriter


@dataclass(frozen=True)
class SimulationOptions:
    ingest_url: str
    key_id: str
    secret: str
    rate: float = 200.0
    duration: float = 60.0
    truth: Path | None = None
    seed: int = 0
    run_id: str | None = None
    concurrency: int = 32
    hour: float | None = None
    day_minutes: float | None = None
    city_file: Path | None = None
    duplicate: float = 0.01
    malformed: float = 0.005
    late_sms: float = 0.15
    offline: float = 0.002
    progress: bool = True
    retry_for: float = 300.0

    def rates(self) -> Rates:
        return Rates(
            duplicate=self.duplicate, malformed=self.malformed, late_sms=self.late_sms, offline=self.offline
        )


# What asyncio raises where it cannot install signal handlers (not the main thread, not Unix).
_NO_SIGNAL_HANDLERS = (NotImplementedError, RuntimeError, ValueError)


def default_run_id() -> str:
    return f"r{int(time.time()):x}"


def _table(stats: SendStats, options: SimulationOptions, held: int) -> Table:
    elapsed = max(stats.elapsed, 1e-6)
    table = Table(title=f"示范市 → {options.ingest_url}", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    until = "until Ctrl-C" if options.duration == float("inf") else f"of {options.duration:.0f} s"
    table.add_row("elapsed", f"{elapsed:6.1f} s {until}")
    table.add_row("citizens' actions", f"{stats.happenings:,} ({stats.happenings / elapsed:,.0f}/s)")
    table.add_row(
        "requests", f"{stats.requests:,} ({stats.requests / elapsed:,.0f}/s), {stats.in_flight} in flight"
    )
    table.add_row("ratings taken", f"{stats.rows_accepted:,}")
    table.add_row("repeats taken", f"{stats.rows_duplicate:,}")
    table.add_row("SMS without a rating", f"{stats.rows_kept:,}")
    table.add_row("broken requests refused", f"{stats.malformed_refused:,}")
    table.add_row("held back (offline, late SMS)", f"{held:,}")
    table.add_row("retries", f"[yellow]{stats.retries:,}[/]" if stats.retries else "0")
    problems = stats.rows_rejected + stats.malformed_taken + stats.failed
    table.add_row("problems", f"[red]{problems:,}[/]" if problems else "0")
    return table


async def simulate(
    options: SimulationOptions,
    *,
    on_accepted: AcceptedHook | None = None,
    stop: asyncio.Event | None = None,
    console: Console | None = None,
) -> SendStats:
    city = load_city(options.city_file)
    run_id = options.run_id or default_run_id()
    generator = CityGenerator(city, seed=options.seed, run_id=run_id, rates=options.rates())
    sender = Sender(
        options.ingest_url,
        options.key_id,
        options.secret,
        concurrency=options.concurrency,
        truth=TruthWriter(options.truth),
        retry_for=options.retry_for,
        on_accepted=on_accepted,
    )
    console = console or Console(stderr=True)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Stop making new events, then send what is held and in flight: the truth file stays complete.
        # Signal handlers need the main thread of a Unix event loop; run from a test's thread (or on a
        # loop without them) the simulator simply has none, and the caller's `stop` event still works.
        with contextlib.suppress(*_NO_SIGNAL_HANDLERS):
            loop.add_signal_handler(sig, stop.set)
    live = (
        Live(_table(sender.stats, options, 0), console=console, refresh_per_second=4, transient=False)
        if options.progress
        else contextlib.nullcontext()
    )
    last = 0.0

    def on_tick(stats: SendStats) -> None:
        nonlocal last
        if isinstance(live, Live) and time.monotonic() - last > 0.25:
            last = time.monotonic()
            live.update(_table(stats, options, generator.held))

    try:
        with live:
            stats = await sender.run(
                generator,
                rate=options.rate,
                duration=options.duration,
                hour=options.hour,
                day_minutes=options.day_minutes,
                on_tick=on_tick,
                stop=stop,
            )
            on_tick(stats)
    finally:
        await sender.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(*_NO_SIGNAL_HANDLERS):
                loop.remove_signal_handler(sig)
    console.print(summary(stats, run_id, options.truth))
    for finding in stats.findings[:10]:
        console.print(f"  [red]![/] {finding}")
    return stats


def summary(stats: SendStats, run_id: str, truth: Path | None) -> str:
    latencies = sorted(stats.request_seconds)
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0
    where = f"; truth in {truth}" if truth else ""
    return (
        f"run {run_id}: {stats.happenings:,} actions in {stats.elapsed:.1f} s, {stats.requests:,} requests "
        f"(p50 {p50:.1f} ms, p99 {p99:.1f} ms), {stats.rows_accepted:,} ratings/orders taken, "
        f"{stats.rows_duplicate:,} repeats, {stats.rows_kept:,} SMS kept without rating, "
        f"{stats.malformed_refused:,} broken refused, {stats.retries:,} retries, "
        f"{stats.rows_rejected + stats.malformed_taken + stats.failed:,} problems{where}"
    )


def simulate_blocking(options: SimulationOptions) -> SendStats:
    return asyncio.run(simulate(options))
