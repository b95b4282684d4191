"""Benchmark of the domain core alone (no Kafka, no Faust): what one core can do per step.

    .venv/bin/python bench/domain_bench.py [--reviews 20000] [--seed 7]

Prints operations per second and microseconds per operation for triage, the repeat tracker, fraud
flags, opening tickets, deadline checks and the spike detector, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TypeVar

from haochaping.domain.contract import Review
from haochaping.domain.fraud import FraudDetector
from haochaping.domain.ledger import DeadlinePolicy, check_deadlines, open_ticket
from haochaping.domain.satisfaction import Figures, SpikeDetector
from haochaping.domain.triage import RepeatTracker, Triage, TriageRules, repeat_keys
from haochaping.domain.workdays import WorkCalendar

T = TypeVar("T")

TEXTS = [
    "窗口人员态度很差，还要我跑了好几趟，排队两个多小时",
    "乱收费",
    None,
    "系统卡顿",
    "一般般吧" * 10,
]


def review_factory(**fields: object) -> Review:
    payload: dict[str, object] = {
        "channel": "hall_device",
        "case_no": f"330102-2026-{fields['event_id']}",
        "region_code": "330102",
        "hall_id": "hall-01",
        "unit_code": "11330102002495613X",
        "unit_name": "杭州市上城区市场监督管理局",
        "window_id": f"w-{hash(fields['event_id']) % 40}",
        "item_code": "330102-0001-XK-01",
    }
    return Review.model_validate(payload | fields)


def measure(name: str, fn: Callable[[T], object], items: Iterable[T]) -> None:
    items = list(items)
    started = time.perf_counter()
    for item in items:
        fn(item)
    elapsed = time.perf_counter() - started
    print(f"{name:40s} {len(items) / elapsed:12,.0f} /s  {elapsed / len(items) * 1e6:8.1f} µs each")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reviews", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    reviews = [
        review_factory(
            event_id=f"e{i}",
            stars=rng.randint(1, 5),
            text=rng.choice(TEXTS),
            device_id=f"d{i % 50}",
            staff_id=f"s{i % 200}",
            rated_at=f"2026-11-25T09:{i % 60:02d}:00+08:00",
        )
        for i in range(args.reviews)
    ]
    bad = [r for r in reviews if r.is_bad]
    triage = Triage(TriageRules.load(None))
    calendar = WorkCalendar.from_file(None)
    policy = DeadlinePolicy.load(None)
    repeats = RepeatTracker.from_policy(triage.rules.repeats)
    fraud = FraudDetector()
    spikes = SpikeDetector()

    print(f"{len(reviews):,} reviews, {len(bad):,} bad")
    measure("triage_review (all reviews)", triage.triage_review, reviews)
    measure(
        "RepeatTracker.observe (window key)",
        lambda r: repeats.observe(repeat_keys(r)[0], r.rated_at),
        reviews,
    )
    measure("FraudDetector.observe", fraud.observe, reviews)
    result = triage.triage_review(bad[0])
    assert result is not None

    def open_one(review: object) -> object:
        return open_ticket(
            source="review",
            source_id=bad[0].event_id,
            opened_at=bad[0].rated_at,
            triage=result,
            review=bad[0],
            calendar=calendar,
            policy=policy,
        )

    measure("open_ticket (bad reviews)", open_one, bad)
    ticket = open_ticket(
        source="review",
        source_id="x",
        opened_at=bad[0].rated_at,
        triage=result,
        review=bad[0],
        calendar=calendar,
        policy=policy,
    ).ticket
    later = ticket.opened_at + timedelta(hours=1)
    measure(
        "check_deadlines", lambda _: check_deadlines(ticket, later, calendar, policy), range(len(reviews))
    )
    measure(
        "SpikeDetector.observe", lambda r: spikes.observe(r.unit_code, r.rated_at, (1, 0, 0, 0, 3)), reviews
    )
    measure("Figures.from_counts", lambda _: Figures.from_counts((1, 2, 3, 4, 5)), range(len(reviews)))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
