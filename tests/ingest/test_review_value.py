"""The review ingest writes is the contract's Review, byte for byte as pydantic would write it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from haochaping.domain.contract import Review
from haochaping.settings import Settings
from ingest.intake import Intake
from ingest.invitations import InvitationRegistry
from ingest.metrics import IngestMetrics
from ingest.payloads import ReviewIn
from ingest.producer import EventProducer
from tests.domain.factories import review_payload


def _intake(**keys: str) -> Intake:
    base = Settings()
    ingest = base.ingest.model_copy(
        update={"sender_keys": {k: SecretStr(v) for k, v in (keys or {"hall-dev-1": "s"}).items()}}
    )
    settings = base.model_copy(update={"ingest": ingest})
    return Intake(settings, EventProducer(settings), IngestMetrics(), InvitationRegistry(settings))


def _the_slow_way(intake: Intake, item: Any, sender: str, received_at: datetime) -> dict[str, Any]:
    """What ingest wrote before: validate the Review again from the input's fields."""
    data = item.model_dump(exclude={"rater_phone", "rater_id_number"})
    rater = intake._identity(item.rater_phone, item.rater_id_number)
    data.update(
        received_at=received_at, sender=sender, rater_id=rater, real_name=data["real_name"] or bool(rater)
    )
    return Review.model_validate(data).model_dump(mode="json")


@settings(max_examples=200, deadline=None)
@given(
    offset_minutes=st.sampled_from([0, 480, -300, 330]),
    microsecond=st.sampled_from([0, 1, 123456]),
    phone=st.sampled_from([None, "13800138000", "+86 138-0013-8000"]),
    id_number=st.sampled_from([None, "33010219900101001X"]),
    text=st.sampled_from([None, "  等了两个小时 ", "好"]),
    tags=st.lists(st.sampled_from(["502", "503", "wait"]), max_size=3),
    real_name=st.booleans(),
    received_micro=st.sampled_from([0, 7, 999999]),
)
def test_the_value_written_is_the_reviews_json(
    offset_minutes: int,
    microsecond: int,
    phone: str | None,
    id_number: str | None,
    text: str | None,
    tags: list[str],
    real_name: bool,
    received_micro: int,
) -> None:
    intake = _intake()
    zone = timezone(timedelta(minutes=offset_minutes))
    rated_at = datetime(2026, 11, 25, 9, 30, 0, microsecond, tzinfo=zone).isoformat()
    if offset_minutes == 0:
        rated_at = rated_at.replace("+00:00", "Z")
    payload = review_payload(
        rated_at=rated_at,
        rater_phone=phone,
        rater_id_number=id_number,
        text=text,
        tags=tags,
        real_name=real_name,
    )
    item = ReviewIn.model_validate(payload)
    received_at = datetime(2026, 11, 25, 10, 0, 0, received_micro, tzinfo=timezone(timedelta(hours=8)))
    value = intake.review_value(item, "hall-dev-1", received_at)
    assert orjson.loads(value) == _the_slow_way(intake, item, "hall-dev-1", received_at)
    assert list(orjson.loads(value)) == list(Review.model_fields)  # the same field order too
    review = Review.model_validate_json(value)
    assert review.rater_id is None or review.rater_id.startswith("p1_")
    for clear in filter(None, (phone, id_number)):
        assert clear.encode() not in value


def test_utc_received_time_is_written_like_pydantic_writes_it() -> None:
    intake = _intake()
    item = ReviewIn.model_validate(review_payload())
    received_at = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    value = intake.review_value(item, "hall-dev-1", received_at)
    assert orjson.loads(value) == _the_slow_way(intake, item, "hall-dev-1", received_at)


def test_a_sender_key_id_that_is_not_a_code_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match=r"sender key id .dev 1. in ingest\.sender_keys is not a valid code"):
        _intake(**{"dev 1": "secret"})


# Strings that look like the markers review_values cuts and splices at, and what JSON escapes.
_TRICKY = st.sampled_from(
    [
        ',"tags":',
        ',"follow_up":',
        ',"real_name":false',
        '},{"event_id":',
        '"',
        "\\",
        '\\"',
        "}",
        "{",
        "\n",
        "\u2028",
    ]
)
_TEXT = st.lists(st.one_of(_TRICKY, st.text(max_size=8)), max_size=6).map("".join)
_NAME = _TEXT.map(lambda s: s[:128]).filter(lambda s: s.strip())
_CODE = st.text(
    alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.:-", min_size=1, max_size=64
)


@st.composite
def _review_inputs(draw: st.DrawFn) -> Any:
    payload = review_payload(
        event_id=draw(_CODE),
        stars=draw(st.integers(1, 5)),
        unit_name=draw(_NAME),
        item_name=draw(st.none() | _NAME),
        window_id=draw(st.none() | _CODE),
        text=draw(st.none() | _TEXT),
        tags=draw(st.lists(_CODE, max_size=4)),
        real_name=draw(st.booleans()),
        follow_up=draw(st.booleans()),
        rater_phone=draw(st.sampled_from([None, "13800138000", " +86 138-0013-8001 "])),
        rater_id_number=draw(st.sampled_from([None, "33010219900101001X"])),
    )
    return ReviewIn.model_validate(payload)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(_review_inputs(), min_size=1, max_size=6), sender=_CODE)
def test_a_batchs_values_are_each_reviews_json_whatever_its_strings_hold(
    items: list[Any], sender: str
) -> None:
    intake = _intake(**{sender: "s"})
    received_at = datetime(2026, 11, 25, 10, 0, 0, 1, tzinfo=timezone(timedelta(hours=8)))
    values = intake.review_values(items, sender, received_at)
    assert len(values) == len(items)
    for item, value in zip(items, values, strict=True):
        assert orjson.loads(value) == _the_slow_way(intake, item, sender, received_at)
        assert list(orjson.loads(value)) == list(Review.model_fields)
        for clear in filter(None, (item.rater_phone, item.rater_id_number)):
            assert clear.encode() not in value
