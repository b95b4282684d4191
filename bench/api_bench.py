"""Query latency of the satisfaction and ranking endpoints over N seeded reviews (default 10 million).

Seeds a fresh database in ClickHouse with ``INSERT ... SELECT FROM numbers()`` (the sinks' schema, so
the minute rollup is filled by its materialized view exactly as in production), then calls the API
in process (FastAPI TestClient: the HTTP framing is left out, the routing, auth, scoping and ClickHouse
round trip are in) and prints p50 / p95 per endpoint.

    .venv/bin/python bench/api_bench.py --clickhouse http://127.0.0.1:18123 [--reviews 10000000] [--calls 200]

Needs a running ClickHouse (``make stack-test-up`` or ``haochaping stack up``). Drops its database at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import datetime, timedelta

import clickhouse_connect
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import mint_token
from haochaping.domain.contract import BEIJING
from haochaping.domain.records import Role
from haochaping.settings import ClickHouseSettings, Settings
from sinks.schema import Target, migrate

UNITS = 200  # units in the seeded city
DAYS = 90
ROLLUPS = ("satisfaction_minute", "satisfaction_hourly", "satisfaction_daily")


def unit_code(i: int) -> str:
    return f"11330102MB{i:07d}X"


def seed(client: object, n: int, start: datetime) -> float:
    t0 = time.perf_counter()
    span = DAYS * 86400
    # Stars skewed towards good ratings, per unit a little different, 5 % fraud-flagged.
    client.command(  # type: ignore[attr-defined]
        f"""INSERT INTO reviews (event_id, channel, stars, case_no, region_code, hall_id, unit_code, unit_name,
            window_id, staff_id, item_code, rated_at, fraud_flags)
        SELECT concat('b-', toString(number)),
            ['hall_device','app','sms','web'][number % 4 + 1],
            multiIf(rand(1) % 100 < 55 + number % {UNITS} % 20, 5, rand(2) % 100 < 60, 4, rand(3) % 3 = 0, 3, rand(4) % 2 = 0, 2, 1),
            concat('case-', toString(number)), '330102', concat('hall-', toString(number % 7)),
            concat('11330102MB', leftPad(toString(number % {UNITS}), 7, '0'), 'X'),
            concat('单位', toString(number % {UNITS})),
            concat('w-', toString(number % 40)), concat('s-', toString(number % 600)),
            concat('item-', toString(number % 300)),
            toDateTime64({int(start.timestamp())} + intDiv(number * {span}, {n}), 3, 'Asia/Shanghai'),
            if(rand(5) % 20 = 0, ['device_burst'], [])
        FROM numbers({n})
        SETTINGS max_insert_block_size = 1000000, max_threads = 2""",
    )
    for table in ROLLUPS:
        client.command(f"OPTIMIZE TABLE {table} FINAL")  # type: ignore[attr-defined]
    return time.perf_counter() - t0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clickhouse", default="http://127.0.0.1:18123")
    parser.add_argument("--reviews", type=int, default=10_000_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the database (to re-run without seeding)")
    args = parser.parse_args()

    database = f"bench_api_{args.reviews}"
    admin = clickhouse_connect.get_client(dsn=args.clickhouse)
    admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client = clickhouse_connect.get_client(dsn=args.clickhouse, database=database)
    report = migrate(client, Target(database))
    if report.applied:
        print(f"applied migrations {report.applied}")
    # A migration may build projections of rows already there in the background (migration 3 on a
    # database kept from before it): time the queries only once that is done.
    t0 = time.perf_counter()
    while int(
        client.query(
            "SELECT count() FROM system.mutations WHERE database = {db:String} AND NOT is_done",
            parameters={"db": database},
        ).result_rows[0][0]
    ):
        time.sleep(0.5)
    if time.perf_counter() - t0 > 1:
        print(f"waited {time.perf_counter() - t0:.0f} s for the migrations' background work")
    start = datetime.now(BEIJING).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=DAYS - 1
    )
    have = int(client.query("SELECT count() FROM reviews").result_rows[0][0])
    if have != args.reviews:
        client.command("TRUNCATE TABLE reviews")
        for table in ROLLUPS:
            client.command(f"TRUNCATE TABLE {table}")
        took = seed(client, args.reviews, start)
        print(f"seeded {args.reviews:,} reviews in {took:.1f} s ({args.reviews / took:,.0f} rows/s)")
    rows = {t: int(client.query(f"SELECT count() FROM {t}").result_rows[0][0]) for t in ROLLUPS}
    print(
        f"reviews: {args.reviews:,} over {DAYS} days, {UNITS} units; rollup rows: "
        + ", ".join(f"{t} {n:,}" for t, n in rows.items())
    )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        clickhouse=ClickHouseSettings(url=args.clickhouse, database=database),
    )
    supervisor = {"Authorization": "Bearer " + mint_token(settings.api, role=Role.SUPERVISOR, sub="bench")}
    officer = {
        "Authorization": "Bearer "
        + mint_token(settings.api, role=Role.UNIT_OFFICER, sub="bench", unit_code=unit_code(17))
    }
    rng = random.Random(1)
    end = start + timedelta(days=DAYS)

    def month_range() -> dict[str, str]:
        a = start + timedelta(days=rng.randrange(0, DAYS - 30))
        return {"since": a.isoformat(), "until": (a + timedelta(days=30)).isoformat()}

    cases = {
        "satisfaction, all units, 90 days": lambda: ("/v1/satisfaction", {"since": start.isoformat(), "until": end.isoformat()}, supervisor),
        "satisfaction, one unit (officer), 30 days, per day": lambda: ("/v1/satisfaction", {**month_range(), "granularity": "day"}, officer),
        "satisfaction, one window, 30 days, per hour": lambda: ("/v1/satisfaction", {**month_range(), "window_id": f"w-{rng.randrange(40)}", "granularity": "hour"}, supervisor),
        "satisfaction, today per minute": lambda: ("/v1/satisfaction", {"since": (end - timedelta(days=1)).isoformat(), "until": end.isoformat(), "granularity": "minute"}, supervisor),
        "satisfaction, raw path (range off whole minutes), 30 days": lambda: ("/v1/satisfaction", {"since": (start + timedelta(days=10, seconds=7)).isoformat(), "until": (start + timedelta(days=40, seconds=7)).isoformat()}, supervisor),
        "ranking of units, 30 days, worst first": lambda: ("/v1/rankings", {**month_range(), "order": "worst"}, supervisor),
        "ranking of staff, 30 days, by score": lambda: ("/v1/rankings", {**month_range(), "by": "staff", "metric": "score"}, supervisor),
        "ranking of windows, 90 days, by 差评率": lambda: ("/v1/rankings", {"since": start.isoformat(), "until": end.isoformat(), "by": "window", "metric": "bad_rate"}, supervisor),
    }  # fmt: skip

    with TestClient(create_app(settings, start_feed=False)) as api:
        print(f"\n{'endpoint':60s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s}")
        for name, make in cases.items():
            times = []
            for i in range(args.calls + 5):
                path, params, headers = make()
                t0 = time.perf_counter()
                r = api.get(path, params=params, headers=headers)
                elapsed = (time.perf_counter() - t0) * 1000
                if r.status_code != 200:
                    raise SystemExit(f"{name}: {r.status_code} {r.text[:300]}")
                if i >= 5:  # the first calls warm the pool and ClickHouse's caches
                    times.append(elapsed)
            print(
                f"{name:60s} {statistics.median(times):8.1f} {percentile(times, 95):8.1f} {max(times):8.1f}"
            )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not args.keep:
        admin.command(f"DROP DATABASE {database} SYNC")


if __name__ == "__main__":
    main()
