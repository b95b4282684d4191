"""Fixtures of the API tests: seeded ClickHouse tables, tokens, a running app, and the whole real
pipeline (``real_pipeline``: ingest, worker, sink and API as processes) for the end-to-end tests.

The tables are the sinks' own (``sinks.schema.migrate``); tickets are seeded as ledger events, the way
the sink writes them, and reach ``tickets`` through the sinks' materialized view.
"""

from __future__ import annotations

import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from api.auth import mint_token
from haochaping.domain.contract import BEIJING
from haochaping.domain.records import Role
from haochaping.settings import Settings

if TYPE_CHECKING:
    from haochaping.simulator.pipeline import Pipeline

UNITS = {
    "11330102002495613X": "杭州市上城区市场监督管理局",
    "11330102MB1234567A": "杭州市上城区人力资源和社会保障局",
    "11330102MB7654321B": "杭州市上城区不动产登记中心",
}
UNIT_A, UNIT_B, UNIT_C = UNITS


def create_tables(client: Any, database: str) -> None:
    """The sinks' own schema (``sinks.schema``), so the API is tested against the tables it will read."""
    from sinks.schema import Target, migrate

    migrate(client, Target(database))


@dataclass
class Seed:
    """What was written, to recount in plain Python."""

    reviews: list[dict[str, Any]]
    tickets: list[dict[str, Any]]
    day_start: datetime


REVIEW_COLUMNS = (
    "event_id", "rated_at", "channel", "stars", "case_no", "stage", "region_code", "hall_id",
    "unit_code", "unit_name", "window_id", "staff_id", "item_code", "fraud_flags",
)  # fmt: skip


def seed_reviews(rng: random.Random, day_start: datetime, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        unit = rng.choice(list(UNITS))
        # Units differ on purpose so that rankings have a clear order.
        weights = {UNIT_A: [1, 1, 2, 6, 20], UNIT_B: [3, 3, 4, 6, 8], UNIT_C: [6, 5, 4, 3, 3]}[unit]
        rows.append(
            {
                "event_id": f"seed-{i}",
                "rated_at": day_start
                + timedelta(minutes=rng.randrange(0, 8 * 60), seconds=rng.randrange(60)),
                "channel": rng.choice(["hall_device", "app", "sms"]),
                "stars": rng.choices([1, 2, 3, 4, 5], weights)[0],
                "case_no": f"case-{i}",
                "stage": "overall",
                "region_code": "330102",
                "hall_id": "hall-1",
                "item_name": "食品经营许可",
                "unit_code": unit,
                "unit_name": UNITS[unit],
                "window_id": f"w-{rng.randrange(1, 5)}",
                "staff_id": f"s-{rng.randrange(1, 9)}",
                "item_code": rng.choice(["330102-0001-XK-01", "330102-0002-XK-01"]),
                "fraud_flags": ["device_burst"] if rng.random() < 0.05 else [],
            }
        )
    return rows


def ticket_row(
    ticket_id: str, unit: str, *, colour: str, status: str, opened_at: datetime, version: int = 1,
    overdue: bool = False, callback_ok: bool | None = None, text: str = "窗口人员态度差",
) -> dict[str, Any]:  # fmt: skip
    """A ticket as the ledger's snapshot (JSON-able), as ``records.Ticket`` validates it."""
    return {
        "ticket_id": ticket_id, "version": version, "source": "review", "source_id": f"src-{ticket_id}",
        "opened_at": opened_at, "colour": colour, "original_colour": colour, "reasons": [], "region_code": "330102",
        "hall_id": "hall-1", "window_id": "w-1", "staff_id": "s-1", "item_code": "330102-0001-XK-01",
        "channel": "hall_device", "stars": 1, "case_no": f"case-{ticket_id}", "text": text,
        "real_name": True, "unit_code": unit, "unit_name": UNITS[unit], "responsible_person": None,
        "measures": [], "callback_due": opened_at + timedelta(hours=2), "due": opened_at + timedelta(days=1),
        "status": status, "warned": False, "overdue": overdue, "callback_ok": callback_ok, "closed_at": None,
    }  # fmt: skip


def ledger_event_row(
    ticket: dict[str, Any], event_type: str = "opened", command_id: str = ""
) -> dict[str, Any]:
    from haochaping.domain.records import Ticket

    snapshot = Ticket.model_validate(ticket).model_dump_json()
    return {
        "event_id": f"{ticket['ticket_id']}:{ticket['version']}", "ticket_id": ticket["ticket_id"],
        "type": event_type, "at": ticket["opened_at"], "actor": "system", "command_id": command_id,
        "reason": "", "ticket": snapshot,
    }  # fmt: skip


def insert_rows(client: Any, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        columns = list(rows[0])
        client.insert(table, [[r[c] for c in columns] for r in rows], column_names=columns)


@pytest.fixture
def seeded(ch_client: Any, settings: Settings) -> Seed:
    create_tables(ch_client, settings.clickhouse.database)
    rng = random.Random(20261125)
    now = datetime.now(BEIJING)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    reviews = seed_reviews(rng, day_start, 3000)
    insert_rows(ch_client, "reviews", reviews)
    t0 = day_start + timedelta(hours=1)
    tickets = [
        ticket_row("T-A-1", UNIT_A, colour="red", status="new", opened_at=t0),
        ticket_row("T-A-2", UNIT_A, colour="blue", status="rectified", opened_at=t0, callback_ok=None),
        ticket_row("T-B-1", UNIT_B, colour="yellow", status="assigned", opened_at=t0, overdue=True),
        ticket_row("T-B-2", UNIT_B, colour="red", status="closed", opened_at=t0, callback_ok=True),
        ticket_row("T-C-1", UNIT_C, colour="blue", status="rectifying", opened_at=t0),
    ]
    # T-A-1 is opened, then voided by mistake and reopened: the newest version (3, "new") must show.
    events = [
        ledger_event_row({**tickets[0], "version": 1}),
        ledger_event_row({**tickets[0], "version": 2, "status": "void"}),
    ]
    events += [ledger_event_row(t) for t in tickets]
    events[2]["event_id"] = "T-A-1:3"
    tickets[0]["version"] = 3
    events[2]["ticket"] = events[2]["ticket"].replace('"version":1', '"version":3')
    insert_rows(ch_client, "ticket_events", events)
    return Seed(reviews, tickets, day_start)


@pytest.fixture
def token(settings: Settings) -> Callable[..., dict[str, str]]:
    """``token(Role.UNIT_OFFICER, UNIT_A)`` -> the Authorization header of such a principal."""

    def make(role: Role, unit: str | None = None, sub: str = "tester") -> dict[str, str]:
        return {"Authorization": "Bearer " + mint_token(settings.api, role=role, sub=sub, unit_code=unit)}

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningApi:
    base_url: str
    settings: Settings


@pytest.fixture
def running_api(settings: Settings) -> Iterator[Callable[[], RunningApi]]:
    """Start the app under uvicorn in a thread (a real HTTP server, for the browser and SSE tests)."""
    servers: list[tuple[Any, threading.Thread]] = []

    def start() -> RunningApi:
        import uvicorn

        from api.app import create_app

        port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start within 20 s")
            time.sleep(0.05)
        servers.append((server, thread))
        return RunningApi(f"http://127.0.0.1:{port}", settings)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


# -- the whole chain: ingest, worker, sink and API as processes -----------------------------------


@pytest.fixture(scope="module")
def real_pipeline(kafka_libs_dir: Path) -> Iterator[Pipeline]:
    """Kafka, ClickHouse, ingest, one Faust worker, the sink and the API, each a real process on
    private servers and free ports (``haochaping.simulator.pipeline``); once per module, since
    starting it all takes 15–30 s."""
    from haochaping.simulator.pipeline import REPO_ROOT, pipeline

    root = REPO_ROOT / "var" / "api-e2e"
    root.mkdir(parents=True, exist_ok=True)
    with pipeline(root, kafka_libs_dir, workers=1, api=True) as p:
        with with_logs_on_failure(p):
            wait_until(lambda: httpx.get(api_url(p, "/readyz")).status_code == 200, 60, "the API ready")
        yield p


@contextmanager
def with_logs_on_failure(p: Pipeline) -> Iterator[None]:
    """A failed assertion about the chain carries the tails of every process's log: the cause is there."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{p.logs()}") from exc


def api_url(p: Pipeline, path: str) -> str:
    return f"http://127.0.0.1:{p.settings.api.port}{path}"


def ingest_url(p: Pipeline, path: str) -> str:
    return f"http://127.0.0.1:{p.settings.ingest.port}{path}"


def wait_until(check: Callable[[], object], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, KeyError, IndexError) as exc:
            last_error, value = exc, None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"waited {timeout:.0f} s for {what}; last error: {last_error!r}")


def hall_review(unit: str, case_no: str, *, stars: int, text: str) -> dict[str, Any]:
    """A review as a hall device sends it to ingest, rated just now."""
    return {
        "event_id": f"e2e-{case_no}", "channel": "hall_device", "stars": stars, "case_no": case_no,
        "region_code": "330102", "hall_id": "hall-1", "unit_code": unit, "unit_name": UNITS[unit],
        "window_id": "w-1", "staff_id": "s-1", "item_code": "330102-0001-XK-01", "item_name": "食品经营许可",
        "device_id": "dev-e2e", "rated_at": datetime.now(BEIJING).isoformat(), "text": text, "real_name": True,
    }  # fmt: skip


def post_to_ingest(p: Pipeline, review: dict[str, Any]) -> httpx.Response:
    """Signed as a device would sign it (``signing.signed_headers``), with the pipeline's sender key."""
    from haochaping.domain.signing import signed_headers

    key_id, secret = next(iter(p.settings.ingest.sender_keys.items()))
    body = orjson.dumps(review)
    headers = signed_headers(
        key_id, secret.get_secret_value(), "POST", "/v1/reviews", body,
        now=time.time(), nonce=secrets.token_hex(12),
    )  # fmt: skip
    return httpx.post(
        ingest_url(p, "/v1/reviews"),
        content=body,
        headers={"Content-Type": "application/json", **headers},
        timeout=15,
    )


def pipeline_token(p: Pipeline, role: Role, unit: str | None = None, sub: str = "tester") -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(p.settings.api, role=role, sub=sub, unit_code=unit)}
