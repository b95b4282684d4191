"""Refused requests say what was wrong: the failed signature check, or each bad field by JSON pointer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from haochaping.domain.signing import HEADER_NONCE, HEADER_SIGNATURE
from tests.domain.factories import review_payload
from tests.ingest.conftest import SignedClient

pytestmark = pytest.mark.integration

Sender = Callable[[str], SignedClient]


def refused(answer: Any, check: str) -> str:
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert body["check"] == check
    return str(body["detail"])


def test_unsigned_requests_are_refused_naming_the_missing_header(ingest_client: Any) -> None:
    answer = ingest_client.post("/v1/reviews", json=review_payload())
    assert "X-HCP-Key is missing" in refused(answer, "missing_header")


def test_an_unknown_key_is_refused(ingest_client: Any) -> None:
    client = SignedClient(ingest_client, "stranger", "whatever")
    assert "'stranger' is not configured" in refused(
        client.post("/v1/reviews", review_payload()), "unknown_key"
    )


def test_expired_and_future_timestamps_are_refused(as_sender: Sender) -> None:
    device = as_sender("hall-dev-1")
    old = device.post("/v1/reviews", review_payload(), now=time.time() - 3600)
    assert "at most 300 s" in refused(old, "expired_timestamp")
    future = device.post("/v1/reviews", review_payload(), now=time.time() + 3600)
    assert "in the future" in refused(future, "future_timestamp")


def test_a_wrong_secret_or_a_changed_body_is_a_bad_signature(ingest_client: Any, as_sender: Sender) -> None:
    wrong = SignedClient(ingest_client, "hall-dev-1", "not-the-secret")
    assert "does not match" in refused(wrong.post("/v1/reviews", review_payload()), "bad_signature")
    # Signed for one body, sent with another: the digest in the signature covers the body.
    device = as_sender("hall-dev-1")
    signed = device.post("/v1/reviews", review_payload())
    assert signed.status_code == 202
    tampered = ingest_client.post(
        "/v1/reviews",
        content=b'{"stars": 1}',
        headers={**dict(signed.request.headers), "Content-Type": "application/json"},
    )
    assert tampered.status_code == 401 and tampered.json()["check"] == "bad_signature"


def test_a_replayed_request_is_refused(ingest_client: Any, as_sender: Sender) -> None:
    first = as_sender("hall-dev-1").post("/v1/reviews", review_payload(), nonce="nonce-replay-01")
    assert first.status_code == 202
    headers = dict(first.request.headers)
    replay = ingest_client.post("/v1/reviews", content=first.request.content, headers=headers)
    assert "already used" in refused(replay, "replayed_nonce")
    assert headers[HEADER_NONCE.lower()] == "nonce-replay-01" and headers[HEADER_SIGNATURE.lower()]


def test_a_malformed_nonce_is_refused(as_sender: Sender) -> None:
    answer = as_sender("hall-dev-1").post("/v1/reviews", review_payload(), nonce="short")
    assert "8–64 characters" in refused(answer, "malformed_header")


def test_bad_fields_are_named_by_json_pointer(as_sender: Sender) -> None:
    payload = review_payload(stars=6, rated_at="2026-11-25T09:30:00", surprise=1, rater_phone="not a phone")
    del payload["case_no"]
    answer = as_sender("hall-dev-1").post("/v1/reviews", payload)
    assert answer.status_code == 422, answer.text
    problems = {p["pointer"]: p["message"] for p in answer.json()["problems"]}
    assert set(problems) == {"/stars", "/rated_at", "/surprise", "/case_no", "/rater_phone"}
    assert "less than or equal to 5" in problems["/stars"]
    assert "+08:00" in problems["/rated_at"]
    assert "not part of the contract" in problems["/surprise"]
    assert "required" in problems["/case_no"].lower()
    assert "not a phone" not in answer.text  # an identity is never echoed back


def test_invalid_json_is_400(as_sender: Sender) -> None:
    answer = as_sender("hall-dev-1").post("/v1/reviews", body=b'{"stars": 5,')
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["problems"][0]["message"]


def test_a_body_that_is_not_json_is_415(ingest_client: Any, as_sender: Sender) -> None:
    answer = as_sender("hall-dev-1").post(
        "/v1/reviews", body=b"stars=5", headers={"Content-Type": "text/plain"}
    )
    assert answer.status_code == 415
    assert "application/json" in answer.json()["detail"]


def test_a_body_too_large_is_413(as_sender: Sender) -> None:
    answer = as_sender("hall-dev-1").post("/v1/reviews", body=b"[" + b"1," * 200_000 + b"1]")
    assert answer.status_code == 413
    assert "at most 262144 bytes" in answer.json()["detail"]
