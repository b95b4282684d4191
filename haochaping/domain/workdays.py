"""The working-day clock: deadlines in Chinese working days (工作日).

Working days follow the State Council's yearly arrangement: weekends and statutory holidays are off,
make-up working days (调休) on a weekend are on. The arrangement comes from the ``chinese-calendar``
library (2004–2026 in version 1.11) and from an override file for the years it does not cover yet
(``calendar_overrides.yaml``; an override year also replaces the library's, to correct it). A date in
neither is counted Monday to Friday, and every deadline that ran through such a year carries the
warning "official calendar for YEAR missing".

The rules, all in Beijing time:

- ``add_working_days(start, n)`` for n ≥ 1 is the end (23:59:59) of the n-th working day *after* the
  start day, whatever the time of day and whether or not the start day is a working day: a case
  opened on Friday 16:00 with 1 working day is due Monday 23:59:59. n = 0 is the end of the start
  day if it is a working day, else of the next working day.
- ``add_hours(start, h)`` runs on calendar time: 急事急办 (the 2-hour red call-back) does not wait for
  office hours.
- ``working_days_between(a, b)`` counts the working days d with a < d ≤ b (dates in Beijing time), so
  ``working_days_between(start, add_working_days(start, n).at) == n`` for n ≥ 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import chinese_calendar  # type: ignore[import-untyped,unused-ignore]
import yaml

from haochaping.domain.contract import BEIJING

PACKAGED_OVERRIDES = Path(__file__).with_name("calendar_overrides.yaml")
END_OF_DAY = time(23, 59, 59)
# A deadline far beyond any real one means a mistaken input; refuse it rather than loop for long.
MAX_WORKING_DAYS = 3660

_LIB_HOLIDAYS: frozenset[date] = frozenset(chinese_calendar.holidays)
_LIB_WORKDAYS: frozenset[date] = frozenset(chinese_calendar.workdays)
_LIB_YEARS: range = range(min(_LIB_HOLIDAYS).year, max(_LIB_HOLIDAYS).year + 1)
_DEADLINES_KEPT = 4096  # (day, count) pairs remembered; tickets open on a few days with a few counts


@dataclass(frozen=True, slots=True)
class Deadline:
    at: datetime
    # Set when the count ran through a year whose official arrangement is missing.
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class YearArrangement:
    """One year's statutory holidays and make-up working days, as the State Council announced them."""

    year: int
    source: str
    holidays: frozenset[date]
    workdays: frozenset[date]


class CalendarError(ValueError):
    """An override file that cannot be used; the message names the file, the year and the entry."""


def beijing_date(moment: date | datetime) -> date:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError(
                f"a datetime without a UTC offset is ambiguous: {moment.isoformat()}; add +08:00"
            )
        return moment.astimezone(BEIJING).date()
    return moment


class WorkCalendar:
    def __init__(self, overrides: Mapping[int, YearArrangement] | None = None) -> None:
        self.overrides: dict[int, YearArrangement] = dict(overrides or {})
        # (start day, working days) -> Deadline: a deadline depends on nothing else (the overrides
        # are not changed after construction), and counting fifteen working days day by day cost
        # more than the rest of opening a ticket.
        self._deadlines: dict[tuple[date, int], Deadline] = {}

    @classmethod
    def from_file(cls, path: Path | None = None) -> WorkCalendar:
        """The packaged override file when ``path`` is None, else the given one."""
        return cls(load_overrides(path or PACKAGED_OVERRIDES))

    def is_official(self, year: int) -> bool:
        """Whether the State Council's arrangement for ``year`` is known (library or override file)."""
        return year in self.overrides or year in _LIB_YEARS

    def is_working_day(self, day: date | datetime) -> bool:
        d = beijing_date(day)
        arrangement = self.overrides.get(d.year)
        if arrangement is not None:
            return d in arrangement.workdays or (d.weekday() < 5 and d not in arrangement.holidays)
        if d.year in _LIB_YEARS:
            return d in _LIB_WORKDAYS or (d.weekday() < 5 and d not in _LIB_HOLIDAYS)
        return d.weekday() < 5

    def _warning(self, first: date, last: date) -> str | None:
        missing = [y for y in range(first.year, last.year + 1) if not self.is_official(y)]
        if not missing:
            return None
        years = ", ".join(str(y) for y in missing)
        return (
            f"official calendar for {years} missing: counted Monday to Friday there; "
            "add the State Council's arrangement to the calendar overrides file"
        )

    def add_working_days(self, start: datetime, days: int) -> Deadline:
        if days < 0:
            raise ValueError(f"days must be 0 or more, got {days}")
        if days > MAX_WORKING_DAYS:
            raise ValueError(f"days must be at most {MAX_WORKING_DAYS}, got {days}")
        first = beijing_date(start)
        known = self._deadlines.get((first, days))
        if known is not None:
            return known
        if len(self._deadlines) >= _DEADLINES_KEPT:
            self._deadlines.clear()
        deadline = self._deadlines[(first, days)] = self._count_working_days(first, days)
        return deadline

    def _count_working_days(self, first: date, days: int) -> Deadline:
        d = first
        if days == 0:
            while not self.is_working_day(d):
                d += timedelta(days=1)
        else:
            left = days
            while left:
                d += timedelta(days=1)
                if self.is_working_day(d):
                    left -= 1
        return Deadline(datetime.combine(d, END_OF_DAY, tzinfo=BEIJING), self._warning(first, d))

    def add_hours(self, start: datetime, hours: float) -> Deadline:
        """Calendar time: 急事急办 runs through nights, weekends and holidays."""
        if start.tzinfo is None:
            raise ValueError(f"a datetime without a UTC offset is ambiguous: {start.isoformat()}; add +08:00")
        return Deadline((start + timedelta(hours=hours)).astimezone(BEIJING))

    def working_days_between(self, a: date | datetime, b: date | datetime) -> int:
        """Working days d with a < d ≤ b; negative when b is before a."""
        da, db = beijing_date(a), beijing_date(b)
        if db < da:
            return -self.working_days_between(db, da)
        count = 0
        d = da
        while d < db:
            d += timedelta(days=1)
            if self.is_working_day(d):
                count += 1
        return count


def _dates(entries: Iterable[Any], where: str) -> set[date]:
    """Dates and inclusive ranges written "2027-10-01..2027-10-07"."""
    out: set[date] = set()
    for entry in entries:
        try:
            if isinstance(entry, date):
                out.add(entry)
            elif isinstance(entry, str) and ".." in entry:
                lo, hi = (date.fromisoformat(part.strip()) for part in entry.split(".."))
                if hi < lo:
                    raise ValueError("the range ends before it starts")
                out.update(lo + timedelta(days=i) for i in range((hi - lo).days + 1))
            elif isinstance(entry, str):
                out.add(date.fromisoformat(entry.strip()))
            else:
                raise ValueError("expected a date YYYY-MM-DD or a range YYYY-MM-DD..YYYY-MM-DD")
        except ValueError as exc:
            raise CalendarError(f"{where}: {entry!r} is not a date or a date range ({exc})") from exc
    return out


class _DatesAsText(yaml.SafeLoader):
    """Leaves dates as text, so that a bad one is reported with its year and list, not as a YAML error."""


_DatesAsText.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_overrides(path: Path) -> dict[int, YearArrangement]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_DatesAsText) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CalendarError(f"cannot read calendar overrides {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("version", 1) != 1:
        raise CalendarError(f"calendar overrides {path}: expected a mapping with version: 1 and years: ...")
    years = data.get("years") or {}
    if not isinstance(years, dict):
        raise CalendarError(f"calendar overrides {path}: years must be a mapping of year -> arrangement")
    result: dict[int, YearArrangement] = {}
    for key, spec in years.items():
        where = f"calendar overrides {path}, year {key}"
        if not isinstance(key, int) or not 1949 < key < 2200:
            raise CalendarError(f"{where}: the key must be a year such as 2027")
        if not isinstance(spec, dict) or not spec.get("source"):
            raise CalendarError(
                f"{where}: give the arrangement's source (the State Council notice) as source:"
            )
        holidays = _dates(spec.get("holidays") or (), f"{where}, holidays")
        workdays = _dates(spec.get("workdays") or (), f"{where}, workdays")
        for d in sorted(holidays | workdays):
            if d.year != key:
                raise CalendarError(f"{where}: {d.isoformat()} is not in {key}")
        both = sorted(holidays & workdays)
        if both:
            raise CalendarError(
                f"{where}: {both[0].isoformat()} is listed both as a holiday and as a working day"
            )
        result[key] = YearArrangement(key, str(spec["source"]), frozenset(holidays), frozenset(workdays))
    return result
