from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from haochaping.domain.contract import (
    CONTRACTS,
    PROVINCIAL_CHANNEL_CODES,
    Channel,
    Level,
    Review,
    json_schema,
)
from haochaping.domain.problems import problems_from_validation
from tests.domain.factories import callback_factory, review_factory, review_payload, workorder_factory


def problems_of(payload: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        Review.model_validate(payload)
    return {p.pointer: p.message for p in problems_from_validation(info.value)}


class TestLevels:
    @pytest.mark.parametrize(
        ("stars", "score", "bad", "satisfied", "label"),
        [
            (5, 10, False, True, "非常满意"),
            (4, 8, False, True, "满意"),
            (3, 6, False, True, "基本满意"),
            (2, 3, True, False, "不满意"),
            (1, 0, True, False, "非常不满意"),
        ],
    )
    def test_domain_table(self, stars: int, score: int, bad: bool, satisfied: bool, label: str) -> None:
        level = Level.from_stars(stars)
        assert (level.score, level.is_bad, level.is_satisfied, level.label) == (score, bad, satisfied, label)

    def test_gbt39046_runs_the_other_way(self) -> None:
        assert Level.from_gbt39046(1) is Level.VERY_SATISFIED
        assert Level.from_gbt39046(5) is Level.VERY_DISSATISFIED
        assert Level.SATISFIED.to_gbt39046() == 2

    @given(st.integers(min_value=1, max_value=5))
    def test_gbt39046_round_trip(self, code: int) -> None:
        assert Level.from_gbt39046(code).to_gbt39046() == code

    @given(st.integers().filter(lambda n: not 1 <= n <= 5))
    def test_gbt39046_out_of_range_is_refused(self, code: int) -> None:
        with pytest.raises(ValueError, match=r"1\.\.5"):
            Level.from_gbt39046(code)


class TestChannels:
    def test_provincial_codes_cover_all_seven_channels(self) -> None:
        assert set(PROVINCIAL_CHANNEL_CODES.values()) == set(Channel)
        assert PROVINCIAL_CHANNEL_CODES["4"] is Channel.HALL_DEVICE

    def test_on_site(self) -> None:
        assert Channel.HALL_DEVICE.on_site and not Channel.APP.on_site


class TestReview:
    def test_valid_review(self) -> None:
        review = review_factory(stars=2, text="等了两个小时")
        assert review.level is Level.DISSATISFIED and review.is_bad
        assert review.stage == "overall" and review.schema_version == 1
        assert review.dedup_key == "330102-2026-000137|overall|r"

    def test_follow_up_has_its_own_dedup_slot(self) -> None:
        assert review_factory(follow_up=True).dedup_key != review_factory().dedup_key

    def test_errors_name_each_field_by_json_pointer_and_say_what_is_right(self) -> None:
        problems = problems_of(
            review_payload(
                stars=7, channel="fax", region_code="33", rated_at="2026-11-25T09:00:00", colour="red"
            )
        )
        assert set(problems) == {"/stars", "/channel", "/region_code", "/rated_at", "/colour"}
        assert "less than or equal to 5" in problems["/stars"]
        assert "'hall_device'" in problems["/channel"] and "got 'fax'" in problems["/channel"]
        assert "6, 9 or 12 digits" in problems["/region_code"]
        assert "+08:00" in problems["/rated_at"]
        assert "not part of the contract" in problems["/colour"]

    def test_missing_field(self) -> None:
        payload = review_payload()
        del payload["unit_code"]
        assert problems_of(payload) == {
            "/unit_code": "Field required: add it (see the JSON Schema: haochaping schema)"
        }

    def test_nested_pointer_for_tags(self) -> None:
        problems = problems_of(review_payload(tags=["ok", "bad tag!"]))
        assert list(problems) == ["/tags/1"]

    def test_clear_phone_number_is_refused_as_rater_id(self) -> None:
        problems = problems_of(review_payload(rater_id="13800138000"))
        assert "send the phone or ID to ingest" in problems["/rater_id"]

    def test_unit_code_must_be_a_credit_code(self) -> None:
        assert "/unit_code" in problems_of(review_payload(unit_code="11330102002495613I"))

    def test_codes_take_ascii_digits_only(self) -> None:
        # "\d" would let Arabic-Indic or full-width digits through into keys and ClickHouse.
        problems = problems_of(review_payload(region_code="33010٢", unit_code="113301020024956١3X"))
        assert set(problems) == {"/region_code", "/unit_code"}


_codes = st.from_regex(r"[0-9A-Za-z_.:\-]{1,20}", fullmatch=True)
_optional_codes = st.none() | _codes
_aware = st.datetimes(
    min_value=datetime(2020, 1, 1),
    max_value=datetime(2035, 12, 31),
    timezones=st.sampled_from([timezone(timedelta(hours=8)), UTC]),
)


@given(
    event_id=_codes,
    channel=st.sampled_from(list(Channel)),
    stars=st.integers(1, 5),
    case_no=_codes,
    stage=st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True),
    hall_id=_optional_codes,
    window_id=_optional_codes,
    staff_id=_optional_codes,
    rated_at=_aware,
    received_at=st.none() | _aware,
    tags=st.lists(_codes, max_size=5).map(tuple),
    text=st.none() | st.text(max_size=200).map(str.strip),
    real_name=st.booleans(),
    rater_id=st.none() | st.from_regex(r"p1_[0-9a-f]{32}", fullmatch=True),
    follow_up=st.booleans(),
)
def test_any_valid_review_round_trips_through_json_unchanged(**fields: object) -> None:
    review = review_factory(**fields)
    wire = json.dumps(review.model_dump(mode="json"), ensure_ascii=False)
    again = Review.model_validate_json(wire)
    assert again == review
    assert again.rated_at == review.rated_at and again.rated_at.utcoffset() == review.rated_at.utcoffset()


class TestWorkOrders:
    def test_work_order_and_callback(self) -> None:
        order = workorder_factory(kind="report", urgency="extra_urgent")
        assert order.version == 1 and order.kind == "report"
        assert callback_factory(stars=2).level.is_bad

    def test_unknown_type_is_refused_with_the_allowed_values(self) -> None:
        with pytest.raises(ValidationError) as info:
            workorder_factory(kind="gossip")
        [problem] = problems_from_validation(info.value)
        assert problem.pointer == "/kind" and "'complaint'" in problem.message


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_json_schema_validates_the_examples(name: str) -> None:
    schema = json_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    example = {
        "review": lambda: review_factory().model_dump(mode="json", exclude_none=True),
        "workorder": lambda: workorder_factory().model_dump(mode="json", exclude_none=True),
        "workorder-callback": lambda: callback_factory().model_dump(mode="json", exclude_none=True),
    }[name]()
    jsonschema.validate(example, schema)
    bad = dict(example, unexpected=1)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
