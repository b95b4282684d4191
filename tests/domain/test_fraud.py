from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from haochaping.domain.config import FraudConfig
from haochaping.domain.contract import BEIJING, Review
from haochaping.domain.fraud import FraudDetector
from haochaping.domain.records import FraudFlag
from tests.domain.factories import review_factory

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=BEIJING)
RATER = "p1_" + "a" * 32


def rating(i: int, seconds: float, **kw: object) -> Review:
    defaults: dict[str, object] = {
        "event_id": f"e{i}",
        "case_no": f"case-{i}",
        "stars": 5,
        "rated_at": (T0 + timedelta(seconds=seconds)).isoformat(),
    }
    defaults.update(kw)
    return review_factory(**defaults)


def flags_of(detector: FraudDetector, reviews: list[Review]) -> list[tuple[FraudFlag, ...]]:
    return [detector.observe(r) for r in reviews]


class TestBursts:
    def test_eight_top_ratings_from_one_device_in_three_minutes(self) -> None:
        reviews = [rating(i, i * 20, staff_id=f"s{i}") for i in range(10)]  # every 20 s
        flags = flags_of(FraudDetector(), reviews)
        assert flags[:7] == [()] * 7
        assert flags[7:] == [(FraudFlag.DEVICE_BURST,)] * 3

    def test_spread_out_ratings_are_not_a_burst(self) -> None:
        reviews = [rating(i, i * 60, staff_id=f"s{i}") for i in range(20)]  # one a minute: 3 in 3 min
        assert set(flags_of(FraudDetector(), reviews)) == {()}

    def test_only_top_ratings_count(self) -> None:
        reviews = [rating(i, i, stars=4, staff_id=f"s{i}") for i in range(20)]
        assert set(flags_of(FraudDetector(), reviews)) == {()}

    def test_staff_burst_across_devices(self) -> None:
        reviews = [rating(i, i * 10, device_id=f"d{i}") for i in range(9)]
        flags = flags_of(FraudDetector(), reviews)
        assert flags[7] == (FraudFlag.STAFF_BURST,) and flags[6] == ()

    def test_late_backlog_is_judged_by_when_it_was_rated(self) -> None:
        detector = FraudDetector()
        # a device uploads yesterday's ratings, an hour apart, long after: no burst
        reviews = [rating(i, -86400 + i * 3600, staff_id=f"s{i}") for i in range(10)]
        assert set(flags_of(detector, reviews)) == {()}

    def test_rater_spree(self) -> None:
        reviews = [
            rating(i, i * 60, stars=3, rater_id=RATER, device_id=f"d{i}", staff_id=f"s{i}") for i in range(6)
        ]
        flags = flags_of(FraudDetector(), reviews)
        assert flags[3] == () and flags[4] == (FraudFlag.RATER_SPREE,)

    def test_same_case_stages_are_not_a_spree(self) -> None:
        reviews = [
            rating(i, i * 60, stars=3, rater_id=RATER, case_no="case-1", device_id=f"d{i}", staff_id=f"s{i}")
            for i in range(10)
        ]
        assert set(flags_of(FraudDetector(), reviews)) == {()}

    def test_configurable(self) -> None:
        detector = FraudDetector(FraudConfig(device_burst_count=2, device_burst_minutes=1))
        flags = flags_of(detector, [rating(0, 0, staff_id="a"), rating(1, 30, staff_id="b")])
        assert flags == [(), (FraudFlag.DEVICE_BURST,)]

    def test_memory_is_bounded(self) -> None:
        detector = FraudDetector(FraudConfig(max_keys=50))
        for i in range(500):
            detector.observe(rating(i, i, device_id=f"d{i}", staff_id=f"s{i}", rater_id=f"p1_{i:032x}"))
        assert detector.keys <= 150


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1800), st.integers(1, 5)), max_size=80))
def test_deterministic(events: list[tuple[int, int, int]]) -> None:
    reviews = [
        rating(i, sec, stars=stars, device_id=f"d{dev}", staff_id=f"s{dev}", rater_id=f"p1_{dev:032x}")
        for i, (dev, sec, stars) in enumerate(events)
    ]
    assert flags_of(FraudDetector(), reviews) == flags_of(FraudDetector(), reviews)
