"""Recounting the ground truth: once per case and stage, whatever the repeats."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from haochaping.domain.contract import BEIJING
from haochaping.simulator.city import load_city
from haochaping.simulator.generator import CityGenerator, Rates
from haochaping.simulator.truth import compare, counted_reviews, expected_bad_cases, expected_figures

START = datetime(2026, 11, 25, 10, 0, tzinfo=BEIJING)


def taken_rows(outcome: str = "accepted") -> list[dict]:
    gen = CityGenerator(load_city(), seed=2, run_id="truth", rates=Rates(duplicate=0.2, offline=0.01))
    emissions = [e for s in range(10) for e in gen.tick(START + timedelta(seconds=s * 20), 300)]
    emissions += gen.drain(START + timedelta(seconds=300))
    return [{**row.as_dict(), "outcome": outcome} for e in emissions for row in e.truth]


def test_repeats_count_once_and_figures_add_up_to_the_distinct_ratings() -> None:
    rows = taken_rows()
    reviews = [r for r in rows if r["kind"] == "review"]
    distinct = {r["dedup_key"] for r in reviews}
    assert len(reviews) > len(distinct)  # there are repeats to ignore
    figures = expected_figures(rows)
    assert sum(figures.values()) == len(distinct)
    assert {k[0] for k in figures} >= {"2026-11-25 10:00", "2026-11-25 10:01"}


def test_every_counted_bad_rating_is_one_expected_ticket_and_no_good_one_is() -> None:
    rows = taken_rows()
    bad = expected_bad_cases(rows)
    counted = counted_reviews(rows)
    assert bad and len(bad) == sum(1 for r in counted.values() if r["stars"] <= 2)
    assert all(r["stars"] <= 2 for r in bad.values())


def test_sms_replies_kept_without_a_rating_count_nowhere() -> None:
    rows = taken_rows(outcome="kept")
    assert expected_figures(rows) == Counter()


def test_a_difference_says_what_was_lost_and_what_was_counted_twice() -> None:
    expected = expected_figures(taken_rows())
    actual = Counter(expected)
    lost, doubled = sorted(expected)[:2]
    actual[lost] -= 1
    actual[doubled] += 1
    diff = compare(expected, actual)
    assert (diff.missing, diff.extra, diff.exact) == (1, 1, False)
    assert "1 rating(s) lost, 1 counted too often" in str(diff)
    assert lost[1] in str(diff) and "expected" in str(diff)
    assert compare(expected, Counter(expected)).exact
