"""A ticket's whole life through the real chain: ingest → Kafka → the Faust worker → sink → ClickHouse → API.

A bad review is posted, signed, to the real ingest API; the worker triages it and opens a ticket, the sink
writes it, and the API lists it. Then a unit officer and a supervisor walk it through its life with the
action endpoint, and each answer (200 with the new state, 409 with the ledger's reason) is the real
ledger's, decided by the worker, not a stand-in's.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from haochaping.domain.records import Role
from tests.api.conftest import (
    UNIT_A,
    UNIT_B,
    UNITS,
    api_url,
    hall_review,
    pipeline_token,
    post_to_ingest,
    wait_until,
    with_logs_on_failure,
)

if TYPE_CHECKING:
    from haochaping.simulator.pipeline import Pipeline

pytestmark = pytest.mark.integration


def _ticket_of_case(p: Pipeline, case_no: str, headers: dict[str, str]) -> dict[str, Any] | None:
    r = httpx.get(api_url(p, "/v1/tickets"), params={"unit_code": UNIT_A}, headers=headers, timeout=10)
    r.raise_for_status()
    return next((t for t in r.json()["items"] if t["case_no"] == case_no), None)


def test_a_bad_review_becomes_a_ticket_that_the_real_ledger_walks_through_its_life(
    real_pipeline: Pipeline,
) -> None:
    p = real_pipeline
    supervisor = pipeline_token(p, Role.SUPERVISOR, sub="supervisor-li")
    officer = pipeline_token(p, Role.UNIT_OFFICER, UNIT_A, sub="officer-wang")
    stranger = pipeline_token(p, Role.UNIT_OFFICER, UNIT_B, sub="officer-zhao")
    case_no = f"330102-2026-{uuid.uuid4().hex[:8]}"

    posted = post_to_ingest(p, hall_review(UNIT_A, case_no, stars=1, text="窗口人员态度差，问了三遍才回答"))
    assert posted.status_code == 202, posted.text

    with with_logs_on_failure(p):
        ticket = wait_until(lambda: _ticket_of_case(p, case_no, supervisor), 60, f"a ticket for {case_no}")
    assert ticket["status"] == "new" and ticket["unit_code"] == UNIT_A
    assert ticket["unit_name"] == UNITS[UNIT_A] and ticket["stars"] == 1
    ticket_id = ticket["ticket_id"]
    actions = api_url(p, f"/v1/tickets/{ticket_id}/actions")

    def act(headers: dict[str, str], **body: object) -> httpx.Response:
        return httpx.post(actions, json=body, headers=headers, timeout=20)

    # Another unit's officer can neither act on it nor read it; the answer names whose it is.
    foreign = act(stranger, action="start_rectifying")
    assert foreign.status_code == 403, foreign.text
    assert UNIT_A in foreign.text and UNIT_B in foreign.text
    peek = httpx.get(api_url(p, f"/v1/tickets/{ticket_id}"), headers=stranger, timeout=10)
    assert peek.status_code == 403 and UNIT_A in peek.text

    # 销号 before the call-back: the ledger refuses and says why; the ticket is unchanged.
    early = act(supervisor, action="close")
    assert early.status_code == 409, early.text
    assert early.json()["status"] == "refused"
    assert early.json()["reason"] == "cannot close a ticket in status new: it must be called back first"
    assert early.json()["ticket"]["status"] == "new"

    steps: list[tuple[dict[str, str], dict[str, object], str]] = [
        (supervisor, {"action": "assign", "responsible_person": "王科长", "measures": ["当日电话致歉"]}, "assigned"),
        (officer, {"action": "start_rectifying"}, "rectifying"),
        (officer, {"action": "report_rectified", "note": "已约谈窗口人员并整改"}, "rectified"),
        (supervisor, {"action": "record_callback", "satisfied": True, "note": "群众表示满意"}, "called_back"),
        (supervisor, {"action": "close"}, "closed"),
    ]  # fmt: skip
    version = ticket["version"]
    for headers, body, status in steps:
        answer = act(headers, **body)
        assert answer.status_code == 200, f"{body['action']}: {answer.status_code} {answer.text}"
        assert answer.json()["status"] == "applied"
        assert answer.json()["ticket"]["status"] == status
        assert answer.json()["ticket"]["version"] == version + 1
        version += 1
    assert answer.json()["ticket"]["responsible_person"] == "王科长"
    assert answer.json()["ticket"]["callback_ok"] is True

    # A closed ticket is final: even a supervisor's action is refused.
    late = act(supervisor, action="assign", responsible_person="张三")
    assert late.status_code == 409 and "final" in late.json()["reason"], late.text

    def closed_history() -> dict[str, Any] | None:
        r = httpx.get(api_url(p, f"/v1/tickets/{ticket_id}"), headers=officer, timeout=10)
        r.raise_for_status()
        detail: dict[str, Any] = r.json()
        # The refusal after the close travels in the sink's next batch when the two were cut apart.
        done = detail["ticket"]["status"] == "closed" and detail["history"][-1]["type"] == "refused"
        return detail if done else None

    detail = wait_until(closed_history, 30, f"the sink to write {ticket_id} closed and the refusal after it")
    history = [(e["type"], e["actor"]) for e in detail["history"]]
    assert history == [
        ("opened", "system"),
        ("refused", "supervisor-li"),
        ("assigned", "supervisor-li"),
        ("rectifying", "officer-wang"),
        ("rectified", "officer-wang"),
        ("called_back", "supervisor-li"),
        ("closed", "supervisor-li"),
        ("refused", "supervisor-li"),
    ]
