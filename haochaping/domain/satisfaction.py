"""The satisfaction arithmetic (满意率, 差评率, score) and the bad-review spike detector.

Figures are computed from counts per level only, so counts can be added up in any grouping (per
minute, per day, per unit, per region) and the figures of the sum are those of all the ratings
together.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from haochaping.domain.config import SpikeConfig
from haochaping.domain.contract import Level

Counts = tuple[int, int, int, int, int]  # index i: ratings with i + 1 stars
_SCORES = tuple(Level(stars).score for stars in range(1, 6))


@dataclass(frozen=True, slots=True)
class Figures:
    counts: Counts
    total: int
    satisfied: int  # 基本满意 and better
    bad: int  # 差评: 不满意 and 非常不满意
    satisfaction_rate: float | None  # 满意率; None when there is no rating
    bad_rate: float | None  # 差评率
    score: float | None  # mean of the level scores, 0–10
    score_100: float | None  # the same on the 100-point scale

    @classmethod
    def from_counts(cls, counts: Sequence[int]) -> Figures:
        if len(counts) != 5:
            raise ValueError(f"counts must have 5 entries (1 to 5 stars), got {len(counts)}")
        if any(c < 0 for c in counts):
            raise ValueError(f"counts cannot be negative, got {tuple(counts)}")
        c: Counts = (counts[0], counts[1], counts[2], counts[3], counts[4])
        total = sum(c)
        bad = c[0] + c[1]
        satisfied = total - bad
        if total == 0:
            return cls(c, 0, 0, 0, None, None, None, None)
        score = sum(s * n for s, n in zip(_SCORES, c, strict=True)) / total
        return cls(c, total, satisfied, bad, satisfied / total, bad / total, score, score * 10)

    @classmethod
    def from_stars(cls, stars: Iterable[int]) -> Figures:
        counts = [0, 0, 0, 0, 0]
        for s in stars:
            counts[Level(s) - 1] += 1
        return cls.from_counts(counts)

    def __add__(self, other: Figures) -> Figures:
        return Figures.from_counts(add_counts(self.counts, other.counts))


def add_counts(a: Sequence[int], b: Sequence[int]) -> Counts:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4])


@dataclass(frozen=True, slots=True)
class Spike:
    unit_code: str
    minute: datetime
    window_total: int
    window_bad: int
    window_rate: float
    baseline_rate: float

    def detail(self, window_minutes: int) -> str:
        return (
            f"差评率 {self.window_rate:.0%} over the last {window_minutes} minutes "
            f"({self.window_bad} of {self.window_total}) against a usual {self.baseline_rate:.0%}"
        )


@dataclass(slots=True)
class _UnitState:
    window: dict[int, list[int]] = field(default_factory=dict)  # epoch minute -> [total, bad]
    newest: int = 0
    base_total: float = 0.0
    base_bad: float = 0.0
    base_at: int | None = None
    last_alert: int | None = None


def _epoch_minute(minute: datetime) -> int:
    if minute.tzinfo is None:
        raise ValueError(f"minute needs a UTC offset: {minute.isoformat()}")
    return int(minute.timestamp() // 60)


class SpikeDetector:
    """A unit's bad-review rate over the last minutes against its own recent baseline.

    Fed with per-minute counts, in any order and in several deltas per minute. Minutes older than the
    window are folded into an exponentially weighted baseline (half-life ``baseline_half_life_minutes``,
    weighted by ratings, so quiet minutes weigh little). A spike is raised when the window's rate is at
    least ``factor`` times the baseline and ``min_increase`` above it, with at least ``min_bad`` bad
    reviews in the window and ``min_baseline_ratings`` behind the baseline; then not again for that unit
    within ``cooldown_minutes``. Memory: one window per unit, at most ``max_units`` units (least recently
    fed evicted first). Deterministic given the same sequence of calls.
    """

    def __init__(self, config: SpikeConfig | None = None) -> None:
        self.config = config or SpikeConfig()
        self._units: OrderedDict[str, _UnitState] = OrderedDict()

    def observe(self, unit_code: str, minute: datetime, counts: Sequence[int]) -> Spike | None:
        cfg = self.config
        m = _epoch_minute(minute)
        total, bad = sum(counts), counts[0] + counts[1]
        state = self._units.get(unit_code)
        if state is None:
            state = self._units[unit_code] = _UnitState(newest=m)
            if len(self._units) > cfg.max_units:
                self._units.popitem(last=False)
        else:
            self._units.move_to_end(unit_code)
        if m <= state.newest - cfg.window_minutes:
            # a late delta for a minute already folded: it belongs to the baseline
            state.base_total += total
            state.base_bad += bad
            return None
        cell = state.window.setdefault(m, [0, 0])
        cell[0] += total
        cell[1] += bad
        if m > state.newest:
            state.newest = m
            self._fold(state)
        w_total = sum(c[0] for c in state.window.values())
        w_bad = sum(c[1] for c in state.window.values())
        if state.base_total < cfg.min_baseline_ratings or w_total == 0 or w_bad < cfg.min_bad:
            return None
        baseline = state.base_bad / state.base_total
        rate = w_bad / w_total
        if rate < baseline * cfg.factor or rate - baseline < cfg.min_increase:
            return None
        if state.last_alert is not None and state.newest - state.last_alert < cfg.cooldown_minutes:
            return None
        state.last_alert = state.newest
        return Spike(
            unit_code=unit_code,
            minute=datetime.fromtimestamp(state.newest * 60, UTC),
            window_total=w_total,
            window_bad=w_bad,
            window_rate=rate,
            baseline_rate=baseline,
        )

    def _fold(self, state: _UnitState) -> None:
        horizon = state.newest - self.config.window_minutes
        for m in sorted(k for k in state.window if k <= horizon):
            t, b = state.window.pop(m)
            if state.base_at is not None and m > state.base_at:
                decay = 0.5 ** ((m - state.base_at) / self.config.baseline_half_life_minutes)
                state.base_total *= decay
                state.base_bad *= decay
            state.base_total += t
            state.base_bad += b
            state.base_at = m if state.base_at is None else max(state.base_at, m)

    def baseline(self, unit_code: str) -> float | None:
        state = self._units.get(unit_code)
        if state is None or state.base_total == 0:
            return None
        return state.base_bad / state.base_total

    def __len__(self) -> int:
        return len(self._units)
