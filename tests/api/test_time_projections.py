"""The time-first projections (migration 3) answer all-units questions, and answer them as the raw recount does.

Each query shape that the projections were added for is run three ways: through ``api.queries`` as the API
runs it, made to read the projection (``force_optimize_projection_name`` fails the query if it does not);
the same with projections switched off (the unit-first tables, the path before migration 3); and as a
recount of the raw ``reviews`` rows with projections off. All three must agree to the rating.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import clickhouse_connect
import pytest

from api.queries import Figures, Granularity, ReviewFilter, Store, plan, satisfaction, satisfaction_series
from haochaping.domain.contract import BEIJING
from haochaping.settings import Settings
from sinks.schema import TIME_PROJECTION, Target, migrate

pytestmark = pytest.mark.integration

UNITS = 120
START = datetime(2026, 3, 25, tzinfo=BEIJING)  # twelve Beijing days, across the end of March
DAYS = 12
REVIEWS = 120_000  # one granule holds 8,192 rows: enough that a unit-first read of all units costs more


def _unit(i: int) -> str:
    return f"11330102MB{i:07d}X"


@pytest.fixture
def seeded(ch_client: Any, settings: Settings) -> Any:
    db = settings.clickhouse.database
    migrate(ch_client, Target(db))
    span_ms = DAYS * 86_400_000
    # Times are spread to the millisecond, so edges that cut a second in two have rows on both sides.
    ch_client.command(
        f"""INSERT INTO reviews (event_id, channel, stars, case_no, region_code, hall_id, unit_code, unit_name,
            window_id, staff_id, item_code, rated_at, fraud_flags)
        SELECT concat('p-', toString(number)), ['hall_device', 'app', 'sms'][number % 3 + 1],
            1 + (cityHash64(number) % 5), concat('case-', toString(number)), '330102',
            concat('hall-', toString(number % 5)),
            concat('11330102MB', leftPad(toString(number % {UNITS}), 7, '0'), 'X'), 'unit',
            concat('w-', toString(number % 17)), concat('s-', toString(number % 90)),
            concat('item-', toString(number % 30)),
            fromUnixTimestamp64Milli(toInt64({int(START.timestamp() * 1000)} + intDiv(number * {span_ms}, {REVIEWS})
                + cityHash64(number, 1) % 997), 'Asia/Shanghai'),
            if(number % 19 = 0, ['device_burst'], [])
        FROM numbers({REVIEWS})
        SETTINGS max_insert_block_size = 40000, min_insert_block_size_rows = 40000"""
    )
    return ch_client


@pytest.fixture
def without_projections(settings: Settings, seeded: Any) -> Iterator[Any]:
    client = clickhouse_connect.get_client(
        dsn=settings.clickhouse.url,
        database=settings.clickhouse.database,
        settings={"optimize_use_projections": 0},
    )
    yield client
    client.close()


@pytest.fixture
def through_projections(settings: Settings, seeded: Any) -> Iterator[Any]:
    client = clickhouse_connect.get_client(
        dsn=settings.clickhouse.url,
        database=settings.clickhouse.database,
        settings={"force_optimize_projection_name": TIME_PROJECTION},
    )
    yield client
    client.close()


def _recount(client: Any, flt: ReviewFilter) -> Figures:
    unit = " AND unit_code = {unit:String}" if flt.unit_code else ""
    rows = client.query(
        "SELECT stars, count() FROM reviews WHERE rated_at >= {s:DateTime64(3)} AND rated_at < {u:DateTime64(3)}"
        f" AND empty(fraud_flags){unit} GROUP BY stars",
        parameters={"s": flt.since, "u": flt.until, "unit": flt.unit_code or ""},
    ).result_rows
    counts = dict(rows)
    return Figures(tuple(int(counts.get(s, 0)) for s in range(1, 6)))  # type: ignore[arg-type]


# The shapes the projections are for: all units, a short time, each answered by one store.
LAST_DAY = START + timedelta(days=DAYS - 1)
SHAPES: dict[str, tuple[datetime, datetime, Store]] = {
    "raw: part of a minute": (LAST_DAY + timedelta(hours=9, seconds=7.25), LAST_DAY + timedelta(hours=9, seconds=51), Store.RAW),
    "minutes: 47 of them": (LAST_DAY + timedelta(hours=10, minutes=3), LAST_DAY + timedelta(hours=10, minutes=50), Store.MINUTE),
    "hours: 5 of them": (LAST_DAY + timedelta(hours=13), LAST_DAY + timedelta(hours=18), Store.HOUR),
}  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
def test_an_all_units_question_reads_the_time_first_projection_and_counts_what_the_raw_rows_count(
    shape: str, through_projections: Any, without_projections: Any
) -> None:
    since, until, store = SHAPES[shape]
    assert [p.store for p in plan(since, until)] == [store]
    flt = ReviewFilter(since=since, until=until)
    projected = satisfaction(through_projections, flt)
    assert projected.total > 0
    assert projected == satisfaction(without_projections, flt) == _recount(without_projections, flt)


def test_whole_days_come_from_the_day_rollup_as_they_did_and_count_what_the_raw_rows_count(
    ch_client: Any, seeded: Any, without_projections: Any
) -> None:
    # The day rollup has no projection: a month of all units reads a few granules of it either way.
    flt = ReviewFilter(since=START + timedelta(days=4), until=START + timedelta(days=6))
    assert [p.store for p in plan(flt.since, flt.until)] == [Store.DAY]
    assert satisfaction(ch_client, flt) == _recount(without_projections, flt)


def test_today_per_minute_for_all_units_is_the_same_series_through_the_projection(
    through_projections: Any, without_projections: Any
) -> None:
    flt = ReviewFilter(since=LAST_DAY, until=LAST_DAY + timedelta(days=1))
    projected = satisfaction_series(through_projections, flt, Granularity.MINUTE)
    assert len(projected) == 24 * 60  # 10,000 ratings a day: every minute has some
    assert projected == satisfaction_series(without_projections, flt, Granularity.MINUTE)
    assert Figures.summed(p.figures for p in projected) == _recount(without_projections, flt)


def test_a_range_off_whole_minutes_sums_raw_edges_and_rollups_to_the_raw_recount(
    ch_client: Any, seeded: Any, without_projections: Any
) -> None:
    # What the API does by default: ClickHouse picks the order that reads less, piece by piece.
    flt = ReviewFilter(
        since=START + timedelta(hours=5, seconds=7.5), until=LAST_DAY + timedelta(hours=20, seconds=31)
    )
    assert next(p.store for p in plan(flt.since, flt.until)) is Store.RAW
    assert satisfaction(ch_client, flt) == _recount(without_projections, flt)
    one_unit = ReviewFilter(since=flt.since, until=flt.until, unit_code=_unit(17))
    assert satisfaction(ch_client, one_unit) == _recount(without_projections, one_unit)


def test_migration_3_run_again_changes_no_figure(ch_client: Any, seeded: Any, settings: Settings) -> None:
    from sinks.schema import MIGRATIONS

    flt = ReviewFilter(since=START, until=START + timedelta(days=DAYS))
    before = satisfaction(ch_client, flt)
    for stmt in MIGRATIONS[2].statements(Target(settings.clickhouse.database)):
        ch_client.command(stmt, settings={"mutations_sync": 1})
    assert satisfaction(ch_client, flt) == before
    projections = ch_client.query(
        "SELECT table, count() FROM system.projections WHERE database = currentDatabase() GROUP BY table"
    ).result_rows
    assert sorted(projections) == [("reviews", 1), ("satisfaction_hourly", 1), ("satisfaction_minute", 1)]
