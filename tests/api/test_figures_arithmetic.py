"""The satisfaction arithmetic the API serves, checked against domain.md's definitions for all inputs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from api.queries import Figures

counts = st.tuples(*[st.integers(0, 10**9)] * 5)


@given(counts)
def test_rates_follow_the_definitions(c: tuple[int, int, int, int, int]) -> None:
    f = Figures(c)
    total = sum(c)
    if total == 0:
        assert f.satisfaction_rate is None and f.bad_rate is None and f.score is None
        return
    assert f.satisfaction_rate == (c[2] + c[3] + c[4]) / total
    assert f.bad_rate == (c[0] + c[1]) / total
    assert abs(f.satisfaction_rate + f.bad_rate - 1) < 1e-12
    assert f.score is not None and 0 <= f.score <= 10
    assert abs(f.score - (0 * c[0] + 3 * c[1] + 6 * c[2] + 8 * c[3] + 10 * c[4]) / total) < 1e-9


@given(counts)
def test_the_answer_carries_the_figures_rounded_to_six_places(c: tuple[int, int, int, int, int]) -> None:
    f = Figures(c)

    def rounded(x: float | None) -> float | None:
        return None if x is None else round(x, 6)

    assert f.as_dict() == {
        "total": f.total,
        "counts": {"1": c[0], "2": c[1], "3": c[2], "4": c[3], "5": c[4]},
        "satisfaction_rate": rounded(f.satisfaction_rate),
        "bad_rate": rounded(f.bad_rate),
        "score": rounded(f.score),
    }


def test_a_known_example() -> None:
    f = Figures((1, 1, 2, 6, 10))  # 20 ratings
    assert f.as_dict() == {
        "total": 20,
        "counts": {"1": 1, "2": 1, "3": 2, "4": 6, "5": 10},
        "satisfaction_rate": 0.9,
        "bad_rate": 0.1,
        "score": (3 + 12 + 48 + 100) / 20,
    }
