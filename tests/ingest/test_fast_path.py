"""The signature middleware answers valid reviews and batches itself: the same answers and records as
the FastAPI routes give (a query string sends a request the routes' way)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.domain.factories import review_payload
from tests.ingest.conftest import SignedClient

pytestmark = pytest.mark.integration


def _without_times(value: bytes) -> dict[str, Any]:
    record = orjson.loads(value)
    record.pop("received_at")
    record.pop("event_id")
    return record


def test_a_review_answered_either_way_is_the_same(
    as_sender: Callable[[str], SignedClient], read_topic: Callable[..., list[Any]]
) -> None:
    device = as_sender("hall-dev-1")
    fast = device.post("/v1/reviews", review_payload(event_id="fast-1", rater_phone="13800138000"))
    routed = device.post(
        "/v1/reviews?via=route", review_payload(event_id="routed-1", rater_phone="13800138000")
    )
    assert (fast.status_code, fast.json()) == (202, {"status": "accepted", "event_id": "fast-1"})
    assert (routed.status_code, routed.json()) == (202, {"status": "accepted", "event_id": "routed-1"})
    assert fast.headers["content-type"] == routed.headers["content-type"]
    records = read_topic("reviews.raw", 2)
    assert sorted(orjson.loads(r.value)["event_id"] for r in records) == ["fast-1", "routed-1"]
    assert _without_times(records[0].value) == _without_times(records[1].value)


def test_a_batch_answered_either_way_is_the_same(as_sender: Callable[[str], SignedClient]) -> None:
    device = as_sender("hall-dev-1")
    for path, prefix in (("/v1/reviews/batch", "f"), ("/v1/reviews/batch?via=route", "r")):
        items = [review_payload(event_id=f"{prefix}-1"), review_payload(event_id=f"{prefix}-2")]
        answer = device.post(path, {"reviews": items})
        assert answer.status_code == 202, answer.text
        assert answer.json() == {
            "accepted": 2,
            "duplicate": 0,
            "rejected": 0,
            "results": [
                {"index": 0, "status": "accepted", "event_id": f"{prefix}-1"},
                {"index": 1, "status": "accepted", "event_id": f"{prefix}-2"},
            ],
        }


def test_a_batch_with_a_bad_item_is_answered_item_by_item(as_sender: Callable[[str], SignedClient]) -> None:
    device = as_sender("hall-dev-1")
    items = [
        review_payload(event_id="b-1"),
        review_payload(event_id="b-1"),
        review_payload(event_id="b-3", stars=9),
    ]
    answer = device.post("/v1/reviews/batch", {"reviews": items})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (1, 1, 1)
    assert body["results"][2]["problems"][0]["pointer"] == "/reviews/2/stars"
