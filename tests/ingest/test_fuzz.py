"""No input, however malformed, gets a 5xx: schemathesis over the OpenAPI spec, hypothesis over raw bytes.

Every generated request is signed like a real sender's, so it reaches the routes, and Kafka is real:
whatever a route accepts is written.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haochaping.settings import Settings
from ingest.app import create_app
from tests.ingest.conftest import SENDERS, SignedClient

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None)).openapi())  # type: ignore[call-arg]
_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def _assert_answer(answer: Any) -> None:
    assert answer.status_code < 500, answer.text
    body = answer.json()
    if answer.status_code >= 400:
        assert body.get("title") and body["status"] == answer.status_code, answer.text


@schema.parametrize()
@_FUZZ
def test_no_generated_request_gets_a_5xx(case: Any, ingest_client: Any) -> None:
    device = SignedClient(ingest_client, "hall-dev-1", SENDERS["hall-dev-1"])
    if isinstance(case.body, bytes):
        body = case.body
    elif case.body is None or type(case.body).__name__ == "NotSet":
        body = b""
    else:
        body = json.dumps(case.body).encode()
    answer = device.post(case.formatted_path, body=body)
    assert answer.status_code < 500, body
    _assert_answer(answer)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30,
)
_PATHS = [
    "/v1/reviews",
    "/v1/reviews/batch",
    "/v1/sms/invitations",
    "/v1/sms/replies",
    "/v1/hotline/workorders",
    "/v1/hotline/callbacks",
    "/v1/provincial/records",
]


@pytest.mark.parametrize("path", _PATHS)
@_FUZZ
@given(body=st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode())))
def test_any_bytes_or_json_get_an_answer_not_a_5xx(path: str, body: bytes, ingest_client: Any) -> None:
    device = SignedClient(ingest_client, "sms-gateway", SENDERS["sms-gateway"])
    _assert_answer(device.post(path, body=body))
