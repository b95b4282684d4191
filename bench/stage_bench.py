"""The worker's plain-Python stages alone (no Kafka, no Faust): CPU per review. Prints figures only.

    .venv/bin/python bench/stage_bench.py [--events 100000] [--batch 500] [--repeat 3] [--profile]

Feeds the records ``bench/streams_bench.py`` preloads (same shape, 10 % bad) through the review stage
in batches of ``--batch`` against an in-memory dedupe table, then the intakes it made through the
ledger stage, as the worker's agents would. Prints CPU µs per review for each stage: process time,
which the box's other work skews less than wall time; the best of ``--repeat`` runs, each with fresh
stages and table; and the load average next to it. ``--profile`` prints the top of a cProfile of
one run of both stages.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from collections.abc import Sequence

from streams_bench import review

from haochaping.settings import Settings
from streams.app import Stages
from streams.batch import LEDGER_INTAKE, REVIEWS_RAW, Incoming


def batches(events: int, batch: int, run: str) -> list[list[Incoming]]:
    records = [review(i, run) for i in range(events)]
    return [
        [
            Incoming(REVIEWS_RAW, 0, offset, key, value)
            for offset, (key, value) in enumerate(records[i : i + batch], i)
        ]
        for i in range(0, events, batch)
    ]


def run_reviews(stages: Stages, raw: Sequence[list[Incoming]]) -> tuple[float, list[Incoming]]:
    """Seconds the review stage took over every batch, and the intakes it emitted."""
    table: dict[bytes, bytes] = {}
    intakes: list[Incoming] = []
    started = time.process_time()
    for batch in raw:
        result = stages.reviews.process(batch, table.get)
        for writes in result.writes.values():
            table.update(writes)
        intakes.extend(
            Incoming(LEDGER_INTAKE, 0, 0, o.key, o.value) for o in result.out if o.topic == LEDGER_INTAKE
        )
    return time.process_time() - started, intakes


def run_ledger(stages: Stages, intakes: list[Incoming], batch: int) -> float:
    table: dict[bytes, bytes] = {}
    started = time.process_time()
    for i in range(0, len(intakes), batch):
        result = stages.ledger.process(intakes[i : i + batch], table.get)
        for writes in result.writes.values():
            table.update(writes)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--batch", type=int, default=500, help="records per batch (the worker's batches at ~8k/s)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    settings = Settings()
    raw = batches(args.events, args.batch, "stage")
    best_reviews = best_ledger = float("inf")
    tickets = 0
    for _ in range(args.repeat):
        stages = Stages.from_settings(settings)
        seconds, intakes = run_reviews(stages, raw)
        best_reviews = min(best_reviews, seconds)
        best_ledger = min(best_ledger, run_ledger(stages, intakes, args.batch))
        tickets = len(intakes)
    per = 1e6 / args.events
    print(f"{args.events:,} reviews in batches of {args.batch}, {tickets:,} intakes")
    print(
        f"review stage: {best_reviews * per:6.1f} µs per review ({args.events / best_reviews:,.0f} reviews/s)"
    )
    print(
        f"ledger stage: {best_ledger * per:6.1f} µs per review ({best_ledger / max(tickets, 1) * 1e6:.1f} µs per intake)"
    )
    print(f"both:         {(best_reviews + best_ledger) * per:6.1f} µs per review")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.profile:
        stages = Stages.from_settings(settings)
        profile = cProfile.Profile()
        profile.enable()
        _, intakes = run_reviews(stages, raw)
        run_ledger(stages, intakes, args.batch)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
