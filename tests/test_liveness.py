"""The worker's own stall check (haochaping/liveness.py): a worker with records waiting that has moved for
a long time is stalled; a moving worker, or an idle one, is not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from haochaping.liveness import Liveness


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_worker_that_stops_moving_with_records_waiting_is_stalled_after_the_bound() -> None:
    clock = Clock()
    liveness = Liveness(60.0, clock=clock)
    assert liveness.check(10, {"reviews.raw[0]": 50}) is None
    clock.now += 59
    assert liveness.check(10, {"reviews.raw[0]": 80}) is None
    clock.now += 2
    reason = liveness.check(10, {"reviews.raw[0]": 80, "ledger.intake[1]": 3, "reviews.raw[1]": 0})
    assert reason is not None
    # says how long, how much waits, and where: what the engineer reads in the log
    assert "for 61 s" in reason and "83 record(s) wait on 2 assigned partition(s)" in reason
    assert "reviews.raw[0] 80" in reason and "reviews.raw[1]" not in reason


def test_a_moving_worker_is_never_stalled_however_long_its_backlog() -> None:
    clock = Clock()
    liveness = Liveness(60.0, clock=clock)
    for moved in range(100):
        clock.now += 30
        assert liveness.check(moved, {"reviews.raw[0]": 10_000}) is None


def test_an_idle_worker_is_not_stalled_and_its_idle_time_does_not_count_once_records_arrive() -> None:
    clock = Clock()
    liveness = Liveness(60.0, clock=clock)
    liveness.check(5, {})
    clock.now += 3600  # an hour with nothing to read
    assert liveness.check(5, {"reviews.raw[0]": 0}) is None
    clock.now += 5  # records arrive; the worker has not fetched them yet
    assert liveness.check(5, {"reviews.raw[0]": 20}) is None
    clock.now += 30
    assert liveness.check(5, {"reviews.raw[0]": 20}) is None
    clock.now += 31
    assert liveness.check(5, {"reviews.raw[0]": 20}) is not None


def test_zero_turns_the_check_off() -> None:
    clock = Clock()
    liveness = Liveness(0.0, clock=clock)
    liveness.check(1, {"reviews.raw[0]": 5})
    clock.now += 10**6
    assert liveness.check(1, {"reviews.raw[0]": 5}) is None


@given(st.lists(st.tuples(st.floats(0, 100), st.booleans(), st.integers(0, 1000)), max_size=50))
def test_stalled_only_after_the_bound_without_movement_and_with_records_waiting(
    steps: list[tuple[float, bool, int]],
) -> None:
    clock = Clock()
    liveness = Liveness(60.0, clock=clock)
    moved, still_since = 0, clock.now
    liveness.check(moved, {})
    for dt, moves, waiting in steps:
        clock.now += dt
        if moves:
            moved += 1
        if moves or waiting == 0:
            still_since = clock.now
        reason = liveness.check(moved, {"reviews.raw[0]": waiting})
        assert (reason is not None) == (clock.now - still_since >= 60.0)


def test_moving_says_whether_the_count_changed_since_the_last_check() -> None:
    liveness = Liveness(60.0, clock=Clock())
    assert liveness.moving(0)  # nothing checked yet
    liveness.check(3, {})
    assert not liveness.moving(3)
    assert liveness.moving(4)
