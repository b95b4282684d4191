"""What the dedupe table remembers per case and stage, and when it forgets it. Plain Python, no Faust.

Value of a ``review-dedupe`` key: ``event_id|stars|yyyymmdd``, the day (Beijing) the citizen rated.
Values written before the day was stored are ``event_id|stars`` and read as "no day" (event ids
cannot hold ``|``: ``haochaping.domain.contract.CODE_PATTERN``).

The horizon (``streams.dedupe_horizon_days``, 400 by default: a rating period of a year plus the
time appeals and 复核 of that period's ratings take) bounds the table two ways that agree:

- the review stage treats a stored rating more than the horizon before the new one as absent, so a
  second rating of the same case more than 400 days later counts as a new rating, whether or not
  the purge has run yet (:func:`beyond_horizon`);
- the purge (:func:`plan_purge`, driven per source partition by ``streams.purge``) deletes keys
  whose day is more than the horizon before today, through the changelog, so the table and its
  compacted changelog hold about a horizon's worth of ratings.

Old values without a day are stamped by the purge with the day of the run that first sees them
(one changelog write each, within the same per-batch bound), so they expire a horizon after the
purge was deployed instead of staying forever.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import date

SEPARATOR = b"|"


@dataclass(frozen=True, slots=True)
class Remembered:
    """A decoded dedupe value."""

    event_id: str
    stars: int
    day: date | None  # None: written before the day was stored


def encode_value(event_id: str, stars: int, day: date) -> bytes:
    return encode_with_day_text(event_id, stars, day_text(day))


def day_text(day: date) -> str:
    """The day as a value stores it (``yyyymmdd``)."""
    return f"{day:%Y%m%d}"


def encode_with_day_text(event_id: str, stars: int, day: str) -> bytes:
    """:func:`encode_value` with the day already formatted by :func:`day_text`.

    Formatting a date (``strftime``) cost more than the rest of the value; the review stage formats
    each day once and keeps it with the minute it belongs to.
    """
    return f"{event_id}|{stars}|{day}".encode()


def _day(raw: bytes) -> date | None:
    if len(raw) != 8 or not raw.isdigit():
        return None
    try:
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    except ValueError:
        return None


def decode_value(raw: bytes) -> Remembered:
    """Read ``event_id|stars|yyyymmdd`` or the older ``event_id|stars`` (day None)."""
    event_id, _, rest = raw.partition(SEPARATOR)
    stars, _, day = rest.partition(SEPARATOR)
    return Remembered(event_id.decode(), int(stars) if stars.isdigit() else 0, _day(day) if day else None)


def beyond_horizon(day: date, later: date, horizon_days: int) -> bool:
    """Whether ``later`` is more than ``horizon_days`` after ``day`` (exactly the horizon is within)."""
    return (later - day).days > horizon_days


@dataclass
class PurgePlan:
    """What one purge step of one partition does: deletions, stamps, and where the next step resumes."""

    deletes: list[bytes] = field(default_factory=list)
    # legacy values without a day -> the same value stamped with the day of this run
    stamps: dict[bytes, bytes] = field(default_factory=dict)
    examined: int = 0
    # the last key examined, where the next step resumes; None when the step reached the end
    resume_after: bytes | None = None


def plan_purge(
    items: Iterable[tuple[bytes, bytes]],
    today: date,
    horizon_days: int,
    max_keys: int,
    keep: Collection[bytes] = (),
) -> PurgePlan:
    """Look at up to ``max_keys`` of ``items`` (in the store's key order) and plan the step.

    A key is deleted when its day is more than ``horizon_days`` before ``today``; a value without a
    day is stamped with ``today``. Keys in ``keep`` (the ones the current batch writes) are passed
    over: the batch's own value wins. Looking at ``max_keys`` at most bounds the step's time and its
    changelog records, so a purge never stalls a batch however large the table is.
    """
    if max_keys < 1:
        raise ValueError(f"streams.dedupe_purge_keys_per_batch must be at least 1, got {max_keys}")
    plan = PurgePlan()
    stamp = b"|" + f"{today:%Y%m%d}".encode()
    last: bytes | None = None
    for key, value in items:
        if plan.examined == max_keys:
            plan.resume_after = last
            return plan
        plan.examined += 1
        last = key
        if key in keep:
            continue
        day = decode_value(value).day
        if day is None:
            plan.stamps[key] = SEPARATOR.join(value.split(SEPARATOR)[:2]) + stamp
        elif beyond_horizon(day, today, horizon_days):
            plan.deletes.append(key)
    return plan


class PurgeSchedule:
    """When each source partition's purge runs: a run starts at most every ``interval_seconds``.

    A run is a sequence of steps (one per batch of that partition), each resuming after the last key
    the previous step looked at, until a step reaches the end of the partition's keys. The first run
    of a partition starts with its first batch after the worker starts.
    """

    def __init__(self, interval_seconds: float) -> None:
        self.interval_seconds = interval_seconds
        self._resume: dict[int, bytes] = {}
        self._next_run: dict[int, float] = {}

    def due(self, partition: int, now: float) -> tuple[bool, bytes | None]:
        """Whether a step of ``partition`` is due at ``now``, and the key to resume after."""
        if partition in self._resume:
            return True, self._resume[partition]
        return now >= self._next_run.get(partition, float("-inf")), None

    def done(self, partition: int, resume_after: bytes | None, now: float) -> None:
        """Record a step that was written: resume after its last key, or end the run."""
        if resume_after is None:
            self._resume.pop(partition, None)
            self._next_run[partition] = now + self.interval_seconds
        else:
            self._resume[partition] = resume_after
