from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haochaping.domain.config import SpikeConfig
from haochaping.domain.contract import BEIJING
from haochaping.domain.satisfaction import Figures, Spike, SpikeDetector, add_counts

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=BEIJING)
stars_lists = st.lists(st.integers(1, 5), max_size=200)


class TestFigures:
    def test_the_domain_formulas(self) -> None:
        # 5★ ×4, 4★ ×3, 3★ ×1, 2★ ×1, 1★ ×1
        f = Figures.from_counts([1, 1, 1, 3, 4])
        assert (f.total, f.satisfied, f.bad) == (10, 8, 2)
        assert f.satisfaction_rate == pytest.approx(0.8)
        assert f.bad_rate == pytest.approx(0.2)
        assert f.score == pytest.approx((0 + 3 + 6 + 3 * 8 + 4 * 10) / 10)
        assert f.score_100 == pytest.approx(73.0)

    def test_no_ratings_have_no_rates(self) -> None:
        f = Figures.from_counts([0, 0, 0, 0, 0])
        assert (f.total, f.satisfaction_rate, f.bad_rate, f.score, f.score_100) == (0, None, None, None, None)

    def test_basically_satisfied_counts_toward_satisfaction(self) -> None:
        assert Figures.from_stars([3]).satisfaction_rate == 1.0

    @pytest.mark.parametrize(("counts", "message"), [([1, 2], "5 entries"), ([0, 0, -1, 0, 0], "negative")])
    def test_bad_counts_are_refused(self, counts: list[int], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            Figures.from_counts(counts)

    @given(stars_lists, stars_lists)
    def test_figures_of_a_sum_are_the_figures_of_the_union(self, a: list[int], b: list[int]) -> None:
        assert Figures.from_stars(a) + Figures.from_stars(b) == Figures.from_stars(a + b)

    @given(stars_lists, stars_lists, stars_lists)
    def test_adding_is_associative_and_commutative(self, a: list[int], b: list[int], c: list[int]) -> None:
        fa, fb, fc = Figures.from_stars(a), Figures.from_stars(b), Figures.from_stars(c)
        assert (fa + fb) + fc == fa + (fb + fc) == (fc + fb) + fa

    @given(stars_lists)
    def test_rates_add_up_and_stay_in_range(self, stars: list[int]) -> None:
        f = Figures.from_stars(stars)
        if f.total:
            assert f.satisfaction_rate is not None and f.bad_rate is not None and f.score is not None
            assert f.satisfaction_rate + f.bad_rate == pytest.approx(1.0)
            assert 0 <= f.score <= 10
        assert add_counts(f.counts, (0, 0, 0, 0, 0)) == f.counts


def feed(
    detector: SpikeDetector, minutes: range, total: int, bad: int, start: datetime = T0
) -> list[tuple[int, Spike]]:
    out = []
    for m in minutes:
        spike = detector.observe("U1", start + timedelta(minutes=m), (bad, 0, 0, 0, total - bad))
        if spike:
            out.append((m, spike))
    return out


class TestSpikes:
    def test_a_jump_above_the_units_own_baseline_alerts_once(self) -> None:
        detector = SpikeDetector(SpikeConfig())
        # three calm hours at 5 % bad, 20 ratings a minute
        assert feed(detector, range(0, 180), 20, 1) == []
        baseline = detector.baseline("U1")
        assert baseline == pytest.approx(0.05)
        # then 30 % bad: an alert within a few minutes, then quiet during the cooldown
        spikes = feed(detector, range(180, 220), 20, 6)
        assert len(spikes) == 1
        minute, spike = spikes[0]
        assert minute < 185
        assert spike.window_rate >= 2 * spike.baseline_rate
        assert "against a usual 5%" in spike.detail(15)

    def test_a_unit_that_is_always_bad_does_not_alert(self) -> None:
        detector = SpikeDetector(SpikeConfig())
        assert feed(detector, range(0, 300), 20, 8) == []

    def test_too_few_ratings_never_alert(self) -> None:
        detector = SpikeDetector(SpikeConfig())
        feed(detector, range(0, 180), 2, 0)
        assert feed(detector, range(180, 200), 1, 0) == []
        assert [m for m, _ in feed(detector, range(200, 203), 1, 1)] == []  # 3 bad < min_bad 5

    def test_no_baseline_no_alert(self) -> None:
        assert feed(SpikeDetector(SpikeConfig()), range(0, 30), 20, 20) == []

    def test_deltas_of_one_minute_add_up_and_order_does_not_matter(self) -> None:
        a, b = SpikeDetector(), SpikeDetector()
        for m in range(200):
            a.observe("U", T0 + timedelta(minutes=m), (1, 0, 0, 0, 19))
        for m in range(200):
            for _ in range(2):  # the same minute in two deltas
                b.observe("U", T0 + timedelta(minutes=m), (0, 0, 0, 0, 9))
            b.observe("U", T0 + timedelta(minutes=m), (1, 0, 0, 0, 1))
        assert a.baseline("U") == pytest.approx(b.baseline("U"))

    def test_memory_is_bounded(self) -> None:
        detector = SpikeDetector(SpikeConfig(max_units=10))
        for i in range(100):
            detector.observe(f"U{i}", T0, (0, 0, 0, 0, 1))
        assert len(detector) == 10

    @given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 5), st.integers(0, 20)), max_size=100))
    def test_deterministic_and_never_raises(self, feedings: list[tuple[int, int, int]]) -> None:
        runs = []
        for _ in range(2):
            detector = SpikeDetector(SpikeConfig(min_baseline_ratings=5, min_bad=1))
            runs.append(
                [detector.observe("U", T0 + timedelta(minutes=m), (b, 0, 0, 0, g)) for m, b, g in feedings]
            )
        assert runs[0] == runs[1]
