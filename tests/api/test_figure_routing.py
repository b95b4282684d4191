"""Figures read from the coarsest rollup that covers each piece of a range are the raw recount, exactly."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from api.app import create_app
from api.queries import Granularity, Store, plan
from haochaping.domain.contract import BEIJING
from haochaping.domain.records import Role
from haochaping.settings import Settings
from tests.api.conftest import UNITS, create_tables, insert_rows, seed_reviews

_STEP = {
    Store.MINUTE: timedelta(minutes=1),
    Store.HOUR: timedelta(hours=1),
    Store.DAY: timedelta(days=1),
}
_ORIGIN = datetime(2026, 3, 1, tzinfo=BEIJING)

moments = st.integers(0, 40 * 86400 * 1000).map(lambda ms: _ORIGIN + timedelta(milliseconds=ms))
# Ranges that often start and end on whole minutes, hours and days, as supervisors' ranges do.
aligned = st.sampled_from([1, 60_000, 3_600_000, 86_400_000]).flatmap(
    lambda unit: st.integers(0, 40 * 86_400_000 // unit).map(
        lambda k: _ORIGIN + timedelta(milliseconds=k * unit)
    )
)


@given(st.one_of(moments, aligned), st.one_of(moments, aligned), st.sampled_from([None, *Granularity]))
def test_the_pieces_tile_the_range_and_each_covers_whole_buckets_of_its_store(
    a: datetime, b: datetime, granularity: Granularity | None
) -> None:
    since, until = min(a, b), max(a, b)
    pieces = plan(since, until, granularity)
    if since == until:
        assert pieces == []
        return
    assert pieces[0].since == since and pieces[-1].until == until
    assert all(p.until == q.since for p, q in pairwise(pieces))  # no gap, no overlap
    coarsest = {Granularity.MINUTE: Store.MINUTE, Granularity.HOUR: Store.HOUR}.get(granularity, Store.DAY)  # type: ignore[arg-type]
    for p in pieces:
        assert p.since < p.until and p.store <= coarsest
        if p.store is not Store.RAW:
            local = p.since.astimezone(BEIJING)
            assert (local - local.replace(hour=0, minute=0, second=0, microsecond=0)) % _STEP[
                p.store
            ] == timedelta(0)
            assert (p.until - p.since) % _STEP[p.store] == timedelta(0)
    assert len(pieces) <= 7


def test_a_month_of_whole_days_is_one_piece_of_the_day_rollup() -> None:
    since = datetime(2026, 3, 1, tzinfo=BEIJING)
    assert [p.store for p in plan(since, since + timedelta(days=30))] == [Store.DAY]
    odd = plan(since + timedelta(minutes=90, seconds=5), since + timedelta(days=3, hours=2))
    assert [p.store for p in odd] == [Store.RAW, Store.MINUTE, Store.HOUR, Store.DAY, Store.HOUR]
    assert [p.store for p in plan(since, since + timedelta(days=2), Granularity.HOUR)] == [Store.HOUR]


# -- against the real ClickHouse ------------------------------------------------------------------


@pytest.fixture
def days(ch_client: Any, settings: Settings) -> list[dict[str, Any]]:
    """4,000 reviews over four Beijing days (a month boundary among them), through the sinks' schema."""
    create_tables(ch_client, settings.clickhouse.database)
    rng = random.Random(7)
    rows: list[dict[str, Any]] = []
    start = datetime(2026, 3, 30, tzinfo=BEIJING)
    for d in range(4):
        for r in seed_reviews(rng, start + timedelta(days=d), 1000):
            r["event_id"] = f"d{d}-{r['event_id']}"
            # Spread over the whole day, not only office hours, so every piece of a range holds some.
            r["rated_at"] = start + timedelta(
                days=d, seconds=rng.randrange(86400), milliseconds=rng.randrange(1000)
            )
            rows.append(r)
    insert_rows(ch_client, "reviews", rows)
    return rows


@pytest.fixture
def api(settings: Settings, days: list[dict[str, Any]]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, start_feed=False)) as c:
        yield c


def _supervisor(settings: Settings) -> dict[str, str]:
    from api.auth import mint_token

    return {"Authorization": "Bearer " + mint_token(settings.api, role=Role.SUPERVISOR, sub="t")}


def _bucket(t: datetime, granularity: Granularity) -> str:
    t = t.astimezone(BEIJING)
    t = {
        Granularity.MINUTE: t.replace(second=0, microsecond=0),
        Granularity.HOUR: t.replace(minute=0, second=0, microsecond=0),
        Granularity.DAY: t.replace(hour=0, minute=0, second=0, microsecond=0),
        Granularity.MONTH: t.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
    }[granularity]
    return t.isoformat()[:16]


def test_any_range_and_filter_counts_what_a_recount_of_the_raw_reviews_counts(
    api: TestClient, days: list[dict[str, Any]], settings: Settings
) -> None:
    rng = random.Random(11)
    start = datetime(2026, 3, 30, tzinfo=BEIJING)
    headers = _supervisor(settings)
    for case in range(24):
        # Ends on whole days, hours, minutes or anywhere, mixed.
        def moment() -> datetime:
            t = start + timedelta(seconds=rng.randrange(4 * 86400), milliseconds=rng.randrange(1000))
            how = rng.randrange(4)
            if how == 0:
                return t.replace(hour=0, minute=0, second=0, microsecond=0)
            if how == 1:
                return t.replace(minute=0, second=0, microsecond=0)
            if how == 2:
                return t.replace(second=0, microsecond=0)
            return t

        a, b = sorted((moment(), moment()))
        if a == b:
            continue
        params: dict[str, str] = [
            {},
            {"unit_code": rng.choice(list(UNITS))},
            {"window_id": "w-2", "channel": "sms"},
            {"include_flagged": "true", "staff_id": "s-3"},
        ][case % 4]
        granularity = [None, Granularity.HOUR, Granularity.DAY, Granularity.MONTH][case % 4]
        if granularity is Granularity.HOUR and b - a > timedelta(days=2):
            granularity = Granularity.DAY

        def wanted(
            r: dict[str, Any], params: dict[str, str] = params, a: datetime = a, b: datetime = b
        ) -> bool:
            if not a <= r["rated_at"] < b:
                return False
            if r["fraud_flags"] and params.get("include_flagged") != "true":
                return False
            return all(r[k] == v for k, v in params.items() if k != "include_flagged")

        rows = [r for r in days if wanted(r)]
        query = {**params, "since": a.isoformat(), "until": b.isoformat()}
        if granularity is not None:
            query["granularity"] = granularity.value
        got = api.get("/v1/satisfaction", params=query, headers=headers)
        assert got.status_code == 200, got.text
        body = got.json()
        stars = Counter(r["stars"] for r in rows)
        assert body["counts"] == {str(s): stars[s] for s in range(1, 6)}, (case, query)
        if granularity is not None:
            per_bucket = Counter(_bucket(r["rated_at"], granularity) for r in rows)
            assert {p["at"][:16]: p["total"] for p in body["series"]} == dict(per_bucket), (case, query)


def test_rankings_over_ragged_ranges_rank_by_the_raw_recount(
    api: TestClient, days: list[dict[str, Any]], settings: Settings
) -> None:
    since = datetime(2026, 3, 30, 7, 13, 21, tzinfo=BEIJING)
    until = datetime(2026, 4, 2, 18, 40, tzinfo=BEIJING)
    body = api.get(
        "/v1/rankings",
        params={
            "since": since.isoformat(),
            "until": until.isoformat(),
            "by": "staff",
            "min_sample": 1,
            "limit": 50,
        },
        headers=_supervisor(settings),
    ).json()
    per_staff = Counter(
        r["staff_id"] for r in days if since <= r["rated_at"] < until and not r["fraud_flags"]
    )
    assert {row["key"]: row["total"] for row in body["items"]} == dict(per_staff)


def test_staff_and_item_figures_never_come_from_the_hourly_rollup_that_lacks_them() -> None:
    since = datetime(2026, 3, 1, 10, tzinfo=BEIJING)
    for dims in ({"staff_id"}, {"item_code", "unit_code"}):
        stores = {p.store for p in plan(since, since + timedelta(days=3, hours=5), Granularity.HOUR, dims)}
        assert stores == {Store.MINUTE}
        assert Store.HOUR not in {
            p.store for p in plan(since, since + timedelta(days=3, hours=5), None, dims)
        }
    assert Store.HOUR in {p.store for p in plan(since, since + timedelta(days=1), None, {"window_id"})}
