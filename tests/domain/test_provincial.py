"""Provincial 好差评 interface records become contract reviews; bad fields are named as the province names them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haochaping.domain.contract import BEIJING, Channel
from haochaping.domain.provincial import ProvincialRecordError, staff_id, to_review
from tests.domain.factories import UNIT_CODE


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "areaCode": "330102",
        "deptCode": UNIT_CODE,
        "proDepart": "杭州市上城区市场监督管理局",
        "taskCode": "330102-0001-XK-01",
        "taskName": "食品经营许可",
        "projectNo": "330102-2026-000137",
        "proManager": "张三",
        "satisfaction": "2",
        "evalDetail": "502,503",
        "writingEvaluation": "等了两个小时",
        "assessTime": "2026-11-25 09:30:00",
        "assessNumber": "1",
        "pf": "4",
        "userProp": "1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_a_record_maps_to_the_contract() -> None:
    review = to_review(record())
    assert review.stars == 2  # satisfaction 2 = 不满意: already stars, not the GB/T 39046 code
    assert review.is_bad
    assert review.channel is Channel.HALL_DEVICE
    assert review.rated_at == datetime(2026, 11, 25, 9, 30, tzinfo=BEIJING)
    assert review.rated_at.utcoffset().total_seconds() == 8 * 3600  # type: ignore[union-attr]
    assert (review.region_code, review.unit_code, review.case_no) == (
        "330102",
        UNIT_CODE,
        "330102-2026-000137",
    )
    assert (review.item_code, review.item_name) == ("330102-0001-XK-01", "食品经营许可")
    assert review.tags == ("502", "503")
    assert review.text == "等了两个小时"
    assert review.follow_up is False
    assert review.staff_id == staff_id("张三") and review.staff_id.startswith("pm_")
    assert review.event_id.startswith("prov_")


def test_values_may_arrive_as_numbers() -> None:
    review = to_review(record(satisfaction=5, pf=2, assessNumber=2, areaCode=330102))
    assert (review.stars, review.channel, review.follow_up, review.region_code) == (
        5,
        Channel.APP,
        True,
        "330102",
    )


def test_the_same_rating_sent_twice_gets_the_same_event_id_and_a_follow_up_another() -> None:
    first = to_review(record())
    again = to_review(record(writingEvaluation="重发"))
    follow_up = to_review(record(assessNumber="2"))
    assert first.event_id == again.event_id
    assert follow_up.event_id != first.event_id


def test_a_staff_code_stays_as_sent() -> None:
    assert to_review(record(proManager="s-1031")).staff_id == "s-1031"


def test_a_source_may_swap_the_channel_codes() -> None:
    swapped = {"6": Channel.SMS, "7": Channel.HOTLINE}
    assert to_review(record(pf="6"), channel_codes=swapped).channel is Channel.SMS
    with pytest.raises(ProvincialRecordError) as err:
        to_review(record(pf="4"), channel_codes=swapped)
    assert err.value.problems[0].pointer == "/pf"
    assert "6 sms, 7 hotline" in err.value.problems[0].message


def test_unknown_fields_are_ignored() -> None:
    assert to_review(record(platformExtra="x", id="9")).stars == 2


@pytest.mark.parametrize(
    ("overrides", "pointer", "says"),
    [
        ({"satisfaction": "6"}, "/satisfaction", "1–5"),
        ({"satisfaction": None}, "/satisfaction", "required"),
        ({"assessTime": "2026/11/25 09:30"}, "/assessTime", "YYYY-MM-DD HH:MM:SS"),
        ({"assessNumber": "3"}, "/assessNumber", "追评"),
        ({"pf": "9"}, "/pf", "unknown channel code '9'"),
        ({"userProp": "3"}, "/userProp", "legal person"),
        ({"deptCode": "123"}, "/deptCode", "统一社会信用代码"),
        ({"areaCode": "33"}, "/areaCode", "行政区划代码"),
        ({"evalDetail": "ok,不好"}, "/evalDetail", "item 1"),
        ({"projectNo": ["x"]}, "/projectNo", "string or a number"),
    ],
)
def test_problems_name_the_provincial_field(overrides: dict[str, Any], pointer: str, says: str) -> None:
    with pytest.raises(ProvincialRecordError) as err:
        to_review(record(**overrides))
    pointers = {p.pointer: p.message for p in err.value.problems}
    assert pointer in pointers, pointers
    assert says in pointers[pointer]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ProvincialRecordError) as err:
        to_review({"satisfaction": "0"})
    pointers = {p.pointer for p in err.value.problems}
    assert {
        "/areaCode",
        "/deptCode",
        "/proDepart",
        "/taskCode",
        "/projectNo",
        "/assessTime",
        "/pf",
    } <= pointers
    assert "/satisfaction" in pointers


_values = st.one_of(
    st.none(), st.text(max_size=30), st.integers(), st.floats(), st.booleans(), st.lists(st.integers())
)


@given(st.dictionaries(st.sampled_from([*record(), "x"]), _values))
def test_any_record_gives_a_review_or_named_problems(overrides: dict[str, Any]) -> None:
    try:
        to_review(record(**overrides))
    except ProvincialRecordError as exc:
        assert exc.problems
        assert all(p.pointer.startswith("/") and p.message for p in exc.problems)
