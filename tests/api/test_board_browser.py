"""The live board in headless Chromium (Debian's chromium, driven by Playwright): numbers on load, then
live updates over SSE without a reload.

Two ways in. ``test_board_end_to_end`` runs the whole chain as processes (ingest, the Faust worker, the
sink and the API, ``real_pipeline``): reviews are posted, signed, to ingest and the board must show
exactly that many more ratings and the new red ticket. ``test_board_shows_figures_and_a_new_red_ticket_live``
produces the stream's output itself on the shared test broker (a satisfaction tick on
satisfaction.minute, a red ticket's OPENED event on ledger.events), so the board's own arithmetic is
checked against figures chosen here, without the worker.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from api.auth import mint_token
from haochaping.domain.contract import BEIJING, Channel
from haochaping.domain.records import LedgerEvent, LedgerEventType, MinuteCounts, Role, Ticket
from haochaping.settings import Settings
from haochaping.topics import ensure_topics
from tests.api.conftest import (
    UNIT_A,
    UNIT_B,
    UNITS,
    RunningApi,
    Seed,
    api_url,
    hall_review,
    insert_rows,
    ledger_event_row,
    post_to_ingest,
    seed_reviews,
    ticket_row,
    wait_until,
    with_logs_on_failure,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

    from haochaping.simulator.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)"
)


def launch(p: Playwright) -> Browser:
    """Debian's chromium, not a downloaded one; quiet and without a sandbox (CI runs as root)."""
    return p.chromium.launch(
        executable_path=str(CHROMIUM),
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"],
    )  # fmt: skip


@needs_chromium
def test_board_shows_figures_and_a_new_red_ticket_live(
    settings: Settings,
    kafka_stack: object,
    seeded: Seed,
    ch_client: Any,
    running_api: Callable[[], RunningApi],
) -> None:
    from kafka import KafkaProducer
    from playwright.sync_api import expect, sync_playwright

    # Today's ratings so far: 200 within the last half hour, but never before midnight in Beijing
    # (the board's "today"), whatever time of day the test runs.
    now = datetime.now(BEIJING)
    since_midnight = now - now.replace(hour=0, minute=0, second=0, microsecond=0)
    spread = min(timedelta(minutes=30), since_midnight * 0.9)
    today = seed_reviews(random.Random(7), now - timedelta(hours=9), 200)
    for i, row in enumerate(today):
        row["event_id"] = f"today-{i}"
        row["rated_at"] = now - spread * ((1 + i % 30) / 31)
    insert_rows(ch_client, "reviews", today)
    official_today = sum(1 for r in today if not r["fraud_flags"])

    ensure_topics(settings.kafka)
    api = running_api()
    deadline = time.monotonic() + 30
    while httpx.get(api.base_url + "/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    token = mint_token(settings.api, role=Role.SUPERVISOR, sub="wall")

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.goto(f"{api.base_url}/board#token={token}")
        expect(page.locator("#status")).to_have_text("实时", timeout=15_000)
        expect(page.locator("#kpi-rate")).to_contain_text("%")
        expect(page.locator("#count-red")).to_have_text("1")  # open red tickets: T-A-1 (T-B-2 is closed)
        expect(page.locator("#kpi-total")).to_have_text(f"{official_today:,}")
        before = official_today

        producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        now = datetime.now(BEIJING).replace(second=0, microsecond=0)
        tick = MinuteCounts(
            minute=now, region_code="330102", hall_id="hall-1", unit_code=UNIT_A, window_id="w-1",
            staff_id="s-1", item_code="330102-0001-XK-01", channel=Channel.HALL_DEVICE, counts=(1, 0, 0, 0, 9),
        )  # fmt: skip
        producer.send(settings.kafka.topic("satisfaction.minute"), value=tick.model_dump_json().encode())
        live_row = ticket_row(
            "T-LIVE-1",
            UNIT_A,
            colour="red",
            status="new",
            opened_at=datetime.now(UTC),
            text="窗口工作人员索要好处费",
        )
        ticket = Ticket.model_validate(live_row)
        opened = LedgerEvent(
            event_id="T-LIVE-1:1", ticket_id="T-LIVE-1", type=LedgerEventType.OPENED,
            at=datetime.now(UTC), actor="system", ticket=ticket,
        )  # fmt: skip
        producer.send(
            settings.kafka.topic("ledger.events"), key=b"T-LIVE-1", value=opened.model_dump_json().encode()
        )
        producer.flush()
        producer.close()

        # The stream announced them; until the sink writes them the board's figures stay ClickHouse's.
        newest = page.locator("#red-list li").first
        expect(newest).to_contain_text("窗口工作人员索要好处费", timeout=10_000)
        expect(newest).to_contain_text(UNITS[UNIT_A])
        expect(page.locator("#kpi-total")).to_have_text(f"{before:,}")
        expect(page.locator("#count-red")).to_have_text("1")

        # The sink writes the ten ratings of the tick and the ticket: the board re-reads and shows them.
        written = seed_reviews(random.Random(8), now, 10)
        for i, row in enumerate(written):
            row.update(event_id=f"live-{i}", unit_code=UNIT_A, unit_name=UNITS[UNIT_A], fraud_flags=[])
            row.update(stars=1 if i == 0 else 5, rated_at=now)
        insert_rows(ch_client, "reviews", written)
        insert_rows(ch_client, "ticket_events", [ledger_event_row(live_row)])
        with KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers) as again:
            again.send(settings.kafka.topic("satisfaction.minute"), value=tick.model_dump_json().encode())
        expect(page.locator("#kpi-total")).to_have_text(f"{before + 10:,}", timeout=10_000)
        expect(page.locator("#count-red")).to_have_text("2", timeout=10_000)
        expect(newest).to_contain_text("窗口工作人员索要好处费")
        # Ticks keep arriving; the figures must not drift above what ClickHouse holds.
        time.sleep(3)
        expect(page.locator("#kpi-total")).to_have_text(f"{before + 10:,}")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "board-standin.png"), full_page=True)
        browser.close()


def _today_total(p: Pipeline, token: str) -> int:
    r = httpx.get(api_url(p, "/v1/board/summary"), headers={"Authorization": f"Bearer {token}"}, timeout=10)
    r.raise_for_status()
    return int(r.json()["today"]["total"])


def _good_review(unit: str, case_no: str, stars: int) -> dict[str, Any]:
    # 3 and 4 stars: never the top rating, so no device or staff burst can flag them as fraud.
    return hall_review(unit, case_no, stars=stars, text="办理顺利")


@needs_chromium
def test_board_end_to_end(real_pipeline: Pipeline) -> None:
    """Reviews posted to ingest reach the open board through the worker, the sink and the API."""
    with with_logs_on_failure(real_pipeline):
        _board_end_to_end(real_pipeline)


def _board_end_to_end(pipe: Pipeline) -> None:
    from playwright.sync_api import expect, sync_playwright

    run = uuid.uuid4().hex[:8]
    token = mint_token(pipe.settings.api, role=Role.SUPERVISOR, sub="wall")

    # Ratings already in before the board opens: it must show them from its first snapshot.
    earlier = [_good_review(UNIT_B, f"330102-{run}-e{i}", stars=3 + i % 2) for i in range(4)]
    for review in earlier:
        assert post_to_ingest(pipe, review).status_code == 202
    before = wait_until(
        lambda: (n := _today_total(pipe, token)) >= len(earlier) and n,
        60,
        "the earlier ratings in ClickHouse",
    )

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.goto(f"{api_url(pipe, '/board')}#token={token}")
        expect(page.locator("#status")).to_have_text("实时", timeout=15_000)
        expect(page.locator("#kpi-total")).to_have_text(f"{before:,}")
        red_before = int(page.locator("#count-red").inner_text())

        red_text = "窗口工作人员索要好处费"
        posted = [_good_review(UNIT_A, f"330102-{run}-n{i}", stars=3 + i % 2) for i in range(5)]
        posted.append(hall_review(UNIT_A, f"330102-{run}-red", stars=1, text=red_text))
        for review in posted:
            answer = post_to_ingest(pipe, review)
            assert answer.status_code == 202, answer.text

        expect(page.locator("#kpi-total")).to_have_text(f"{before + len(posted):,}", timeout=30_000)
        newest = page.locator("#red-list li").first
        expect(newest).to_contain_text(red_text, timeout=30_000)
        expect(newest).to_contain_text(UNITS[UNIT_A])
        expect(page.locator("#count-red")).to_have_text(str(red_before + 1))
        # The board re-reads the summary 3 s after a ticket change; the count must not move then
        # (a tick counted both live and in the re-read snapshot would show here).
        page.wait_for_timeout(5_000)
        expect(page.locator("#kpi-total")).to_have_text(f"{before + len(posted):,}")
        expect(page.locator("#red-list li").first).to_contain_text(red_text)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "board.png"), full_page=True)
        browser.close()
