"""Each sender's request ends as the expected record on the expected topic with the expected key."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import pytest

from haochaping.domain.contract import Review
from haochaping.domain.privacy import pseudonym
from tests.domain.factories import UNIT_CODE, review_payload
from tests.ingest.conftest import SignedClient

pytestmark = pytest.mark.integration

Sender = Callable[[str], SignedClient]
Reader = Callable[..., list[Any]]


def test_a_device_review_lands_keyed_by_unit_with_receive_time_and_pseudonym(
    as_sender: Sender, read_topic: Reader
) -> None:
    answer = as_sender("hall-dev-1").post(
        "/v1/reviews", review_payload(stars=2, rater_phone="+86 138-0013-8000")
    )
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"status": "accepted", "event_id": "dev-0042-20261125-000137"}

    [record] = read_topic("reviews.raw", 1)
    assert record.key == UNIT_CODE.encode()
    assert b"13800138000" not in record.value and b"138-0013" not in record.value
    review = Review.model_validate(orjson.loads(record.value))
    assert review.stars == 2 and review.sender == "hall-dev-1"
    assert review.rater_id == pseudonym("13800138000", b"test-pseudonym-key")
    assert review.real_name is True
    assert review.received_at is not None
    assert abs((datetime.now(review.received_at.tzinfo) - review.received_at).total_seconds()) < 30


def test_a_backlog_batch_answers_per_item(as_sender: Sender, read_topic: Reader) -> None:
    items = [
        review_payload(event_id="b-1"),
        review_payload(event_id="b-2", stars=1),
        review_payload(event_id="b-1"),
        review_payload(event_id="b-3", stars=9, unit_code="nope"),
    ]
    answer = as_sender("hall-dev-1").post("/v1/reviews/batch", {"reviews": items})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 1, 1)
    assert [r["status"] for r in body["results"]] == ["accepted", "accepted", "duplicate", "rejected"]
    pointers = {p["pointer"] for p in body["results"][3]["problems"]}
    assert pointers == {"/reviews/3/stars", "/reviews/3/unit_code"}

    records = read_topic("reviews.raw", 2)
    assert sorted(orjson.loads(r.value)["event_id"] for r in records) == ["b-1", "b-2"]
    assert read_topic("reviews.raw", 3, timeout=1.0) == records  # nothing else was written


def test_a_batch_larger_than_allowed_is_refused_whole(as_sender: Sender) -> None:
    answer = as_sender("hall-dev-1").post(
        "/v1/reviews/batch", {"reviews": [review_payload(event_id=f"x-{i}") for i in range(51)]}
    )
    assert answer.status_code == 413
    assert answer.json()["problems"][0]["pointer"] == "/reviews"
    assert "at most 50" in answer.json()["problems"][0]["message"]


INVITATION = {
    "ref": "inv-0001",
    "case_no": "330102-2026-000137",
    "region_code": "330102",
    "unit_code": UNIT_CODE,
    "unit_name": "杭州市上城区市场监督管理局",
    "item_code": "330102-0001-XK-01",
    "hall_id": "hall-01",
    "window_id": "w-07",
}


def test_an_sms_reply_becomes_a_review_of_the_invited_case(as_sender: Sender, read_topic: Reader) -> None:
    assert as_sender("invitations").post("/v1/sms/invitations", INVITATION).status_code == 202
    reply = {"message_id": "gw-1", "ref": "inv-0001", "content": "２ 等了两个小时", "phone": "13800138000"}
    answer = as_sender("sms-gateway").post("/v1/sms/replies", reply)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "accepted" and answer.json()["stars"] == 2

    [record] = read_topic("reviews.raw", 1)
    assert record.key == UNIT_CODE.encode()
    assert b"13800138000" not in record.value
    review = Review.model_validate(orjson.loads(record.value))
    assert (review.channel.value, review.stars, review.text) == ("sms", 2, "等了两个小时")
    assert (review.case_no, review.window_id, review.hall_id) == ("330102-2026-000137", "w-07", "hall-01")
    assert review.rater_id == pseudonym("13800138000", b"test-pseudonym-key")

    # The gateway delivers the same message again: the same event id, so it counts once downstream.
    again = as_sender("sms-gateway").post("/v1/sms/replies", reply)
    assert again.json()["event_id"] == answer.json()["event_id"]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ({"message_id": "gw-2", "ref": "inv-0001", "content": "窗口的人态度很好"}, "no level found"),
        ({"message_id": "gw-3", "ref": "inv-unknown", "content": "5"}, "no invitation is registered"),
    ],
)
def test_an_sms_reply_that_cannot_become_a_review_is_kept_with_the_reason(
    as_sender: Sender, read_topic: Reader, reply: dict[str, str], reason: str
) -> None:
    assert as_sender("invitations").post("/v1/sms/invitations", INVITATION).status_code == 202
    answer = as_sender("sms-gateway").post("/v1/sms/replies", {**reply, "phone": "13800138000"})
    assert answer.status_code == 200  # the gateway must not retry
    assert answer.json()["status"] == "kept" and reason in answer.json()["reason"]

    [record] = read_topic("deadletter", 1)
    letter = orjson.loads(record.value)
    assert letter["stage"] == "ingest.sms" and reason in letter["reason"]
    original = base64.b64decode(letter["original_b64"])
    assert orjson.loads(original)["content"] == reply["content"]
    assert b"13800138000" not in record.value and b"13800138000" not in original
    assert read_topic("reviews.raw", 1, timeout=0.5) == []


def test_a_work_order_and_its_callback_land_keyed_by_order(as_sender: Sender, read_topic: Reader) -> None:
    hotline = as_sender("hotline-12345")
    order = {
        "order_id": "12345-20261125-0001",
        "version": 2,
        "kind": "complaint",
        "urgency": "extra_urgent",
        "region_code": "330102",
        "unit_code": UNIT_CODE,
        "unit_name": "杭州市上城区市场监督管理局",
        "text": "办理营业执照等了两个小时",
        "created_at": "2026-11-25T10:00:00+08:00",
        "caller_phone": "13800138000",
    }
    answer = hotline.post("/v1/hotline/workorders", order)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"status": "accepted", "order_id": "12345-20261125-0001", "version": 2}
    callback = {
        "order_id": "12345-20261125-0001",
        "callback_id": "cb-1",
        "stars": 1,
        "resolved": False,
        "called_at": "2026-11-27T15:00:00+08:00",
    }
    assert hotline.post("/v1/hotline/callbacks", callback).status_code == 202

    first, second = read_topic("workorders.raw", 2)
    assert first.key == second.key == b"12345-20261125-0001"
    assert first.partition == second.partition  # one order's events stay in order
    wo, cb = orjson.loads(first.value), orjson.loads(second.value)
    assert (
        wo["type"] == "workorder" and wo["data"]["version"] == 2 and wo["data"]["urgency"] == "extra_urgent"
    )
    assert wo["data"]["caller_id"].startswith("p1_") and b"13800138000" not in first.value
    assert wo["data"]["sender"] == "hotline-12345" and wo["data"]["received_at"]
    assert cb["type"] == "callback" and cb["data"]["callback_id"] == "cb-1" and cb["data"]["stars"] == 1


PROVINCIAL = {
    "areaCode": "330102",
    "deptCode": UNIT_CODE,
    "proDepart": "杭州市上城区市场监督管理局",
    "taskCode": "330102-0001-XK-01",
    "taskName": "食品经营许可",
    "projectNo": "330102-2026-000137",
    "proManager": "张三",
    "satisfaction": "1",
    "evalDetail": "502",
    "writingEvaluation": "吃拿卡要",
    "assessTime": "2026-11-25 09:30:00",
    "assessNumber": "1",
    "pf": "4",
    "userProp": "1",
}


def test_provincial_records_land_as_reviews(as_sender: Sender, read_topic: Reader) -> None:
    records = [PROVINCIAL, {**PROVINCIAL, "projectNo": "330102-2026-000138", "pf": "x"}]
    answer = as_sender("prov-zj").post("/v1/provincial/records", records)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["problems"][0]["pointer"] == "/1/pf"

    [record] = read_topic("reviews.raw", 1)
    review = Review.model_validate(orjson.loads(record.value))
    assert record.key == UNIT_CODE.encode()
    assert (review.stars, review.channel.value, review.sender) == (1, "hall_device", "prov-zj")
    assert review.rated_at.isoformat() == "2026-11-25T09:30:00+08:00"


def test_metrics_count_what_was_accepted_and_rejected(as_sender: Sender, ingest_client: Any) -> None:
    as_sender("hall-dev-1").post("/v1/reviews", review_payload())
    as_sender("hall-dev-1").post("/v1/reviews/batch", {"reviews": [review_payload(stars=0)]})
    text = ingest_client.get("/metrics").text
    assert 'hcp_ingest_records_total{channel="hall_device",outcome="accepted",reason=""} 1.0' in text
    assert 'outcome="rejected",reason="greater_than_equal"} 1.0' in text
    assert 'hcp_ingest_request_seconds_count{endpoint="/v1/reviews",status="202"} 1.0' in text
