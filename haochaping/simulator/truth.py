"""Recounts of a simulator run's ground truth: what the figures and the ledger must show, exactly.

A rating counts once per case and stage (一次一评): among the truth rows of one ``dedup_key`` (an
original, its retries and double taps, the gateway's repeats) the figures hold one, whichever ingest
took. Every counted 差评 opens exactly one ticket. SMS replies ingest kept without a rating count nowhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from haochaping.domain.contract import BEIJING

TAKEN = frozenset({"accepted", "duplicate"})
DIMENSIONS = ("region_code", "unit_code", "hall_id", "window_id", "staff_id", "item_code", "channel")

# (Beijing minute "YYYY-MM-DD HH:MM", the dimensions with "" for none, stars)
FigureKey = tuple[str, str, str, str, str, str, str, str, int]


def minute_of(at: str) -> str:
    return datetime.fromisoformat(at).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def counted_reviews(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """dedup_key -> the row that stands for it, for every rating the figures must hold once."""
    out: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        if row["kind"] == "review" and row.get("outcome") in TAKEN and row["dedup_key"] not in out:
            out[row["dedup_key"]] = row
    return out


def expected_figures(rows: Iterable[Mapping[str, Any]]) -> Counter[FigureKey]:
    """Ratings per minute, dimensions and stars, as the per-minute figures must hold them."""
    figures: Counter[FigureKey] = Counter()
    for row in counted_reviews(rows).values():
        dims = tuple(row.get(d) or "" for d in DIMENSIONS)
        figures[cast(FigureKey, (minute_of(row["at"]), *dims, int(row["stars"])))] += 1
    return figures


def expected_bad_cases(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """case_no -> row of every counted 差评: each must have exactly one ticket."""
    return {row["dedup_key"].split("|")[0]: row for row in counted_reviews(rows).values() if row["bad"]}


@dataclass(frozen=True)
class Difference:
    """What the store holds against what the truth says, in words a person can act on."""

    missing: int  # ratings the truth has and the store lacks
    extra: int  # ratings the store counts more than the truth (counted twice, or never sent)
    examples: tuple[str, ...]

    @property
    def exact(self) -> bool:
        return self.missing == 0 and self.extra == 0

    def __str__(self) -> str:
        if self.exact:
            return "the figures equal the recount of the ground truth"
        head = f"{self.missing} rating(s) lost, {self.extra} counted too often"
        return head + "".join(f"\n  {e}" for e in self.examples)


def compare(expected: Counter[FigureKey], actual: Counter[FigureKey], *, examples: int = 10) -> Difference:
    missing = extra = 0
    shown: list[str] = []
    for key in sorted(set(expected) | set(actual)):
        want, got = expected.get(key, 0), actual.get(key, 0)
        if want == got:
            continue
        if want > got:
            missing += want - got
        else:
            extra += got - want
        if len(shown) < examples:
            minute, *dims, stars = key
            where = ", ".join(f"{d}={v}" for d, v in zip(DIMENSIONS, dims, strict=True) if v)
            shown.append(f"{minute} {where} {stars}★: expected {want}, found {got}")
    return Difference(missing, extra, tuple(shown))
