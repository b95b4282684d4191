"""Fraud flags (刷好评 and rating sprees): kept, shown, and left out of the official figures.

Event-time sliding windows over ``rated_at``, so a device that uploads its backlog late is judged by
when the ratings were given, not when they arrived. A rating is flagged when it completes a burst
(the ``count``-th top rating within the window) and so is every further one while the burst lasts;
the ratings before it were already passed on unflagged. Memory is bounded per key and in keys.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from datetime import timedelta

from haochaping.domain.config import FraudConfig
from haochaping.domain.contract import Review
from haochaping.domain.records import FraudFlag
from haochaping.domain.triage import RepeatTracker


class _DistinctCases:
    """Per rater: how many different cases were rated within the window ending at each rating."""

    def __init__(self, within: timedelta, max_keys: int, max_per_key: int = 1_000) -> None:
        self.within_s = within.total_seconds()
        self.max_keys = max_keys
        self.max_per_key = max_per_key
        self._seen: OrderedDict[str, list[tuple[float, str]]] = OrderedDict()

    def observe(self, key: str, at: float, case_no: str) -> int:
        items = self._seen.get(key)
        if items is None:
            items = self._seen[key] = []
            if len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(key)
        bisect.insort(items, (at, case_no))
        horizon = items[-1][0] - self.within_s
        drop = max(bisect.bisect_right(items, (horizon, "\U0010ffff")), len(items) - self.max_per_key)
        if drop > 0:
            del items[:drop]
        return len({case for t, case in items if at - self.within_s < t <= at}) or 1

    def __len__(self) -> int:
        return len(self._seen)


class FraudDetector:
    def __init__(self, config: FraudConfig | None = None) -> None:
        self.config = cfg = config or FraudConfig()
        self._device = RepeatTracker(timedelta(minutes=cfg.device_burst_minutes), max_keys=cfg.max_keys)
        self._staff = RepeatTracker(timedelta(minutes=cfg.staff_burst_minutes), max_keys=cfg.max_keys)
        self._rater = _DistinctCases(timedelta(minutes=cfg.rater_minutes), cfg.max_keys)

    def observe(self, review: Review, rated_at: float | None = None) -> tuple[FraudFlag, ...]:
        """The flags of this rating (in FraudFlag order); call once per accepted rating, in any order.

        ``rated_at``: ``review.rated_at.timestamp()`` when the caller has it already.
        """
        cfg = self.config
        if review.stars < cfg.top_stars and not review.rater_id:
            return ()
        at = review.rated_at.timestamp() if rated_at is None else rated_at
        flags: list[FraudFlag] = []
        if review.stars >= cfg.top_stars:
            if (
                review.device_id
                and self._device.observe_timestamp(review.device_id, at) >= cfg.device_burst_count
            ):
                flags.append(FraudFlag.DEVICE_BURST)
            if review.staff_id:
                key = f"{review.unit_code}|{review.staff_id}"
                if self._staff.observe_timestamp(key, at) >= cfg.staff_burst_count:
                    flags.append(FraudFlag.STAFF_BURST)
        if review.rater_id:
            cases = self._rater.observe(review.rater_id, at, review.case_no)
            if cases >= cfg.rater_cases:
                flags.append(FraudFlag.RATER_SPREE)
        return tuple(flags)

    @property
    def keys(self) -> int:
        """Keys held, for a memory gauge."""
        return len(self._device) + len(self._staff) + len(self._rater)
