"""The API against real ClickHouse with seeded data: figures against a recount, and who may see what."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from haochaping.domain.contract import Level
from haochaping.domain.records import Role
from haochaping.settings import Settings
from tests.api.conftest import UNIT_A, UNIT_B, UNITS, Seed

pytestmark = pytest.mark.integration


@pytest.fixture
def client(settings: Settings, seeded: Seed) -> Iterator[TestClient]:
    with TestClient(create_app(settings, start_feed=False)) as c:
        yield c


def recount(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r["stars"] for r in rows)
    total = sum(counts.values())
    return {
        "total": total,
        "counts": {str(s): counts.get(s, 0) for s in range(1, 6)},
        "satisfaction_rate": round((counts[3] + counts[4] + counts[5]) / total, 6),
        "bad_rate": round((counts[1] + counts[2]) / total, 6),
        "score": round(sum(Level(s).score * n for s, n in counts.items()) / total, 6),
    }


def day_range(seed: Seed) -> dict[str, str]:
    return {"since": seed.day_start.isoformat(), "until": (seed.day_start + timedelta(days=1)).isoformat()}


def test_satisfaction_matches_a_recount_of_the_seed(
    client: TestClient, seeded: Seed, token: Callable
) -> None:
    official = [r for r in seeded.reviews if not r["fraud_flags"]]
    r = client.get("/v1/satisfaction", params=day_range(seeded), headers=token(Role.SUPERVISOR))
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("total", "counts", "satisfaction_rate", "bad_rate", "score")} == recount(
        official
    )


def test_flagged_ratings_count_only_when_asked(client: TestClient, seeded: Seed, token: Callable) -> None:
    params = {**day_range(seeded), "include_flagged": "true"}
    body = client.get("/v1/satisfaction", params=params, headers=token(Role.AUDITOR)).json()
    assert body["total"] == len(seeded.reviews)


def test_filters_and_hourly_series_add_up(client: TestClient, seeded: Seed, token: Callable) -> None:
    params = {**day_range(seeded), "unit_code": UNIT_B, "channel": "sms", "granularity": "hour"}
    body = client.get("/v1/satisfaction", params=params, headers=token(Role.SUPERVISOR)).json()
    rows = [
        r
        for r in seeded.reviews
        if not r["fraud_flags"] and r["unit_code"] == UNIT_B and r["channel"] == "sms"
    ]
    assert body["total"] == recount(rows)["total"]
    by_hour = Counter(r["rated_at"].replace(minute=0, second=0, microsecond=0) for r in rows)
    assert [(p["at"][:13], p["total"]) for p in body["series"]] == [
        (h.isoformat()[:13], n) for h, n in sorted(by_hour.items())
    ]


def test_ranking_orders_units_and_respects_the_minimum_sample(
    client: TestClient, seeded: Seed, token: Callable
) -> None:
    official = [r for r in seeded.reviews if not r["fraud_flags"]]
    expected = sorted(
        UNITS, key=lambda u: recount([r for r in official if r["unit_code"] == u])["satisfaction_rate"]
    )
    worst = client.get(
        "/v1/rankings", params={**day_range(seeded), "order": "worst"}, headers=token(Role.SUPERVISOR)
    ).json()
    assert [i["key"] for i in worst["items"]] == expected
    assert worst["items"][0]["name"] == UNITS[expected[0]]
    best_by_bad = client.get(
        "/v1/rankings", params={**day_range(seeded), "metric": "bad_rate"}, headers=token(Role.SUPERVISOR)
    ).json()
    assert best_by_bad["items"][0]["bad_rate"] <= best_by_bad["items"][-1]["bad_rate"]
    too_big = client.get(
        "/v1/rankings", params={**day_range(seeded), "min_sample": 100_000}, headers=token(Role.SUPERVISOR)
    ).json()
    assert too_big["items"] == []


def test_tickets_show_the_newest_version_and_filter(
    client: TestClient, seeded: Seed, token: Callable
) -> None:
    body = client.get("/v1/tickets", headers=token(Role.SUPERVISOR)).json()
    assert body["total"] == 5
    a1 = next(t for t in body["items"] if t["ticket_id"] == "T-A-1")
    assert a1["status"] == "new"
    red = client.get("/v1/tickets", params={"colour": "red"}, headers=token(Role.SUPERVISOR)).json()
    assert sorted(t["ticket_id"] for t in red["items"]) == ["T-A-1", "T-B-2"]
    overdue = client.get("/v1/tickets", params={"overdue": "true"}, headers=token(Role.AUDITOR)).json()
    assert [t["ticket_id"] for t in overdue["items"]] == ["T-B-1"]
    detail = client.get("/v1/tickets/T-A-1", headers=token(Role.SUPERVISOR)).json()
    assert detail["ticket"]["unit_code"] == UNIT_A
    assert [e["type"] for e in detail["history"]] == ["opened", "opened", "opened"]


def test_monthly_report_as_csv_and_xlsx(client: TestClient, seeded: Seed, token: Callable) -> None:
    month = seeded.day_start.strftime("%Y-%m")
    official = [r for r in seeded.reviews if not r["fraud_flags"]]
    r = client.get(
        "/v1/reports/monthly", params={"month": month, "format": "csv"}, headers=token(Role.SUPERVISOR)
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    by_unit = {row["统一社会信用代码"]: row for row in table}
    for unit in UNITS:
        assert (
            float(by_unit[unit]["满意率"])
            == recount([x for x in official if x["unit_code"] == unit])["satisfaction_rate"]
        )
    # Unit B: two tickets (one overdue, one closed after a call-back).
    assert by_unit[UNIT_B]["台账问题数"] == "2"
    assert float(by_unit[UNIT_B]["整改率"]) == 0.5
    assert float(by_unit[UNIT_B]["回访率"]) == 0.5
    assert float(by_unit[UNIT_B]["超期率"]) == 0.5
    assert sorted(row["排名"] for row in table) == ["1", "2", "3"]

    x = client.get(
        "/v1/reports/monthly", params={"month": month, "format": "xlsx"}, headers=token(Role.AUDITOR)
    )
    from openpyxl import load_workbook

    ws = load_workbook(io.BytesIO(x.content)).active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0][:3] == ("排名", "统一社会信用代码", "单位") and len(rows) == 4


# -- who may see what -------------------------------------------------------------------------------


def test_no_token_and_a_forged_token_are_refused(client: TestClient, seeded: Seed) -> None:
    assert client.get("/v1/satisfaction").status_code == 401
    forged = {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4Iiwicm9sZSI6InN1cGVydmlzb3IifQ.x"}
    r = client.get("/v1/tickets", headers=forged)
    assert r.status_code == 401 and "not valid" in r.json()["detail"]


def test_unit_officer_sees_only_their_unit(client: TestClient, seeded: Seed, token: Callable) -> None:
    officer = token(Role.UNIT_OFFICER, UNIT_A)
    own = client.get("/v1/satisfaction", params=day_range(seeded), headers=officer).json()
    official_a = [r for r in seeded.reviews if not r["fraud_flags"] and r["unit_code"] == UNIT_A]
    assert own["total"] == len(official_a) and own["filter"]["unit_code"] == UNIT_A
    tickets = client.get("/v1/tickets", headers=officer).json()
    assert {t["unit_code"] for t in tickets["items"]} == {UNIT_A}
    ranking = client.get("/v1/rankings", params=day_range(seeded), headers=officer).json()
    assert [i["key"] for i in ranking["items"]] == [UNIT_A]
    report = client.get(
        "/v1/reports/monthly", params={"month": seeded.day_start.strftime("%Y-%m")}, headers=officer
    ).json()
    assert [row["unit_code"] for row in report["items"]] == [UNIT_A]


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "/v1/satisfaction", {"unit_code": UNIT_B}),
        ("GET", "/v1/rankings", {"unit_code": UNIT_B}),
        ("GET", "/v1/tickets", {"unit_code": UNIT_B}),
        ("GET", "/v1/tickets/T-B-1", {}),
        ("GET", "/v1/reports/monthly", {"unit_code": UNIT_B}),
        ("GET", "/v1/reports/monthly", {"unit_code": UNIT_B, "format": "csv"}),
        ("POST", "/v1/tickets/T-B-1/actions", {}),
    ],
)
def test_unit_officer_cannot_reach_another_unit_by_any_endpoint(
    client: TestClient, seeded: Seed, token: Callable, method: str, path: str, params: dict[str, str]
) -> None:
    body = {"action": "start_rectifying"} if method == "POST" else None
    r = client.request(method, path, params=params, json=body, headers=token(Role.UNIT_OFFICER, UNIT_A))
    assert r.status_code == 403, r.text
    detail = r.json()["detail"]
    assert UNIT_B in detail and UNIT_A in detail  # says whose it is and who asked
    assert "items" not in r.json() and "ticket" not in r.json()  # nothing of unit B leaks in the body


def test_auditor_may_read_but_not_act(client: TestClient, seeded: Seed, token: Callable) -> None:
    auditor = token(Role.AUDITOR)
    assert client.get("/v1/tickets/T-A-1", headers=auditor).status_code == 200
    r = client.post("/v1/tickets/T-A-1/actions", json={"action": "close"}, headers=auditor)
    assert r.status_code == 403 and "read-only" in r.json()["detail"]


def test_unit_officer_may_not_take_a_supervisors_decision(
    client: TestClient, seeded: Seed, token: Callable
) -> None:
    r = client.post(
        "/v1/tickets/T-A-1/actions", json={"action": "close"}, headers=token(Role.UNIT_OFFICER, UNIT_A)
    )
    assert r.status_code == 403 and "supervisor's decision" in r.json()["detail"]


def test_an_action_missing_its_payload_says_what_is_missing(
    client: TestClient, seeded: Seed, token: Callable
) -> None:
    r = client.post(
        "/v1/tickets/T-A-1/actions", json={"action": "appeal"}, headers=token(Role.UNIT_OFFICER, UNIT_A)
    )
    assert r.status_code == 422 and "reason" in r.json()["detail"]


def test_a_range_off_whole_minutes_counts_from_the_raw_reviews(
    client: TestClient, seeded: Seed, token: Callable
) -> None:
    since = seeded.day_start + timedelta(hours=2, seconds=30)
    until = seeded.day_start + timedelta(hours=5, seconds=15)
    rows = [r for r in seeded.reviews if not r["fraud_flags"] and since <= r["rated_at"] < until]
    params = {"since": since.isoformat(), "until": until.isoformat()}
    body = client.get("/v1/satisfaction", params=params, headers=token(Role.SUPERVISOR)).json()
    assert body["counts"] == recount(rows)["counts"]
