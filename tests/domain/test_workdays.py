from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haochaping.domain.contract import BEIJING
from haochaping.domain.workdays import CalendarError, WorkCalendar, YearArrangement, load_overrides

CAL = WorkCalendar.from_file()


def at(y: int, m: int, d: int, hh: int = 10, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=BEIJING)


def due(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 23, 59, 59, tzinfo=BEIJING)


class TestOfficialCalendar:
    def test_national_day_2026_and_its_make_up_saturday(self) -> None:
        assert not CAL.is_working_day(date(2026, 10, 1))
        assert not CAL.is_working_day(date(2026, 10, 7))
        assert CAL.is_working_day(date(2026, 10, 8))
        assert CAL.is_working_day(date(2026, 10, 10))  # Saturday, 调休
        assert CAL.is_working_day(date(2026, 9, 20))  # Sunday, 调休

    def test_deadline_runs_over_the_holiday_and_counts_the_make_up_day(self) -> None:
        start = at(2026, 9, 30, 16)
        assert CAL.add_working_days(start, 1) == CAL.add_working_days(start, 1)
        assert [CAL.add_working_days(start, n).at for n in (1, 2, 3)] == [
            due(2026, 10, 8),
            due(2026, 10, 9),
            due(2026, 10, 10),
        ]
        assert CAL.add_working_days(start, 1).warning is None

    def test_friday_afternoon_one_working_day_is_monday_night(self) -> None:
        assert CAL.add_working_days(at(2026, 11, 27, 16), 1).at == due(2026, 11, 30)

    def test_opened_on_a_holiday(self) -> None:
        assert CAL.add_working_days(at(2026, 10, 3), 1).at == due(2026, 10, 8)
        assert CAL.add_working_days(at(2026, 10, 3), 0).at == due(2026, 10, 8)
        assert CAL.add_working_days(at(2026, 11, 25), 0).at == due(2026, 11, 25)

    def test_fifteen_working_days(self) -> None:
        # 2026-11-25 (Wed) + 15 working days: three weeks, no holiday in between.
        assert CAL.add_working_days(at(2026, 11, 25), 15).at == due(2026, 12, 16)

    def test_time_zone_is_beijing(self) -> None:
        # 2026-11-27 20:00 UTC is Saturday 04:00 in Beijing: the count starts from Saturday.
        utc = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
        assert CAL.add_working_days(utc, 1).at == due(2026, 11, 30)

    def test_naive_datetime_is_refused_with_the_fix(self) -> None:
        with pytest.raises(ValueError, match=r"add \+08:00"):
            CAL.add_working_days(datetime(2026, 11, 25), 1)

    def test_negative_days_refused(self) -> None:
        with pytest.raises(ValueError, match="days must be 0 or more, got -1"):
            CAL.add_working_days(at(2026, 11, 25), -1)


class TestHours:
    def test_red_callback_runs_on_calendar_time_through_the_night_and_holidays(self) -> None:
        assert CAL.add_hours(at(2026, 10, 1, 23), 2).at == at(2026, 10, 2, 1)
        assert CAL.add_hours(at(2026, 10, 1, 23), 2).warning is None


class TestMissingYears:
    def test_2027_is_counted_monday_to_friday_with_a_warning(self) -> None:
        deadline = CAL.add_working_days(at(2026, 12, 30), 5)
        # Dec 31 (Thu), Jan 1 (Fri: surely a holiday, but not yet announced), Jan 4, 5, 6.
        assert deadline.at == due(2027, 1, 6)
        assert deadline.warning is not None
        assert deadline.warning.startswith("official calendar for 2027 missing")

    def test_a_deadline_within_2026_has_no_warning(self) -> None:
        assert CAL.add_working_days(at(2026, 12, 1), 5).warning is None

    def test_override_year_is_used_and_silences_the_warning(self, tmp_path: Path) -> None:
        path = tmp_path / "overrides.yaml"
        path.write_text(
            "version: 1\nyears:\n  2027:\n    source: test arrangement\n"
            "    holidays: [2027-01-01, '2027-02-08..2027-02-12']\n    workdays: [2027-02-06]\n",
            encoding="utf-8",
        )
        cal = WorkCalendar.from_file(path)
        assert not cal.is_working_day(date(2027, 1, 1))
        assert not cal.is_working_day(date(2027, 2, 10))
        assert cal.is_working_day(date(2027, 2, 6))  # a Saturday made a working day
        deadline = cal.add_working_days(at(2026, 12, 31), 1)
        assert deadline == cal.add_working_days(at(2026, 12, 31), 1)
        assert deadline.at == due(2027, 1, 4)
        assert deadline.warning is None

    def test_override_replaces_a_library_year(self) -> None:
        arrangement = YearArrangement(2026, "correction", frozenset({date(2026, 11, 25)}), frozenset())
        assert not WorkCalendar({2026: arrangement}).is_working_day(date(2026, 11, 25))

    def test_packaged_file_announces_no_year_it_does_not_know(self) -> None:
        assert CAL.overrides == {}
        assert not CAL.is_official(2027)
        assert CAL.is_official(2004) and CAL.is_official(2026)

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ("years:\n  2027:\n    holidays: [2027-01-01]\n", "give the arrangement's source"),
            ("years:\n  2027:\n    source: x\n    holidays: [2028-01-01]\n", "2028-01-01 is not in 2027"),
            ("years:\n  2027:\n    source: x\n    holidays: [2027-13-01]\n", "'2027-13-01' is not a date"),
            (
                "years:\n  2027:\n    source: x\n    holidays: [2027-01-02]\n    workdays: [2027-01-02]\n",
                "2027-01-02 is listed both as a holiday and as a working day",
            ),
            ("version: 3\n", "expected a mapping with version: 1"),
        ],
    )
    def test_bad_override_files_say_what_and_where(self, tmp_path: Path, body: str, message: str) -> None:
        path = tmp_path / "overrides.yaml"
        path.write_text(body, encoding="utf-8")
        with pytest.raises(CalendarError, match=message):
            load_overrides(path)


starts = st.datetimes(min_value=datetime(2004, 1, 1), max_value=datetime(2028, 12, 31)).map(
    lambda d: d.replace(tzinfo=BEIJING)
)
days = st.integers(0, 40)


@given(starts, days)
def test_deadline_is_the_end_of_a_working_day_never_before_start(start: datetime, n: int) -> None:
    deadline = CAL.add_working_days(start, n)
    assert CAL.is_working_day(deadline.at)
    assert deadline.at.time() == datetime.max.time().replace(microsecond=0)
    assert deadline.at >= start
    if n >= 1:
        assert deadline.at.date() > start.date()


@given(starts, days, days)
def test_deadline_is_monotone_in_days(start: datetime, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert CAL.add_working_days(start, lo).at <= CAL.add_working_days(start, hi).at
    if lo < hi:
        assert CAL.add_working_days(start, lo).at < CAL.add_working_days(start, hi).at


@given(starts, st.integers(1, 40))
def test_working_days_between_inverts_add(start: datetime, n: int) -> None:
    deadline = CAL.add_working_days(start, n).at
    assert CAL.working_days_between(start, deadline) == n
    assert CAL.working_days_between(deadline, start) == -n
    # the day before the deadline is one working day short
    assert CAL.working_days_between(start, deadline - timedelta(days=1)) == n - 1


@given(starts, days)
def test_warning_exactly_when_the_count_leaves_the_known_years(start: datetime, n: int) -> None:
    deadline = CAL.add_working_days(start, n)
    assert (deadline.warning is not None) == (deadline.at.year > 2026 or start.year > 2026)


@given(starts, days, st.integers(0, 86_399), st.sampled_from([0, 8, -5, 13]))
def test_a_remembered_deadline_is_the_one_counted_afresh(
    start: datetime, n: int, second_of_day: int, offset_hours: int
) -> None:
    # Another moment of the same Beijing day, written with another UTC offset, has the same deadline.
    day_start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    other = (day_start + timedelta(seconds=second_of_day)).astimezone(timezone(timedelta(hours=offset_hours)))
    remembered = CAL.add_working_days(start, n)
    assert CAL.add_working_days(other, n) == remembered
    assert WorkCalendar.from_file().add_working_days(other, n) == remembered
