"""The city file: every unit code is a valid 统一社会信用代码; mistakes are explained."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haochaping.domain.contract import UNIT_PATTERN
from haochaping.simulator.city import CityFileError, load_city
from haochaping.simulator.codes import USCC_ALPHABET, make_unit_code, unit_code_problem


def test_the_default_city_has_regions_halls_units_windows_staff_and_items() -> None:
    city = load_city()
    assert len(city.regions) == len(city.halls) >= 3
    assert len(city.units) >= 20
    assert all(u.items and u.windows and all(w.staff_ids for w in u.windows) for u in city.units)
    assert len({w.window_id for w in city.windows}) == len(city.windows)
    assert len({i.code for u in city.units for i in u.items}) == sum(len(u.items) for u in city.units)


def test_every_generated_unit_code_is_valid_and_unique() -> None:
    city = load_city()
    codes = [u.code for u in city.units]
    assert len(set(codes)) == len(codes)
    for unit in city.units:
        assert re.fullmatch(UNIT_PATTERN, unit.code)
        assert unit_code_problem(unit.code) is None
        assert unit.code[2:8] == unit.region_code  # the county the unit is registered in


@pytest.mark.parametrize("code", ["91350100M000100Y43", "91110000802100433B", "11100000000013127D"])
def test_real_codes_check(code: str) -> None:
    # The worked example of GB 32100-2015 and codes of real registered bodies.
    assert unit_code_problem(code) is None


@given(
    region=st.from_regex(r"[1-6][0-9]{5}", fullmatch=True),
    body=st.from_regex(r"[0-9]{8}", fullmatch=True),
)
def test_made_codes_are_valid_and_any_changed_check_character_is_caught(region: str, body: str) -> None:
    code = make_unit_code(region, body)
    assert re.fullmatch(UNIT_PATTERN, code)
    assert unit_code_problem(code) is None
    wrong = USCC_ALPHABET[(USCC_ALPHABET.index(code[17]) + 1) % 31]
    problem = unit_code_problem(code[:17] + wrong)
    assert problem and f"should be {code[17]!r}" in problem


def test_non_ascii_digits_are_not_a_unit_code() -> None:
    # Positions 3–8 are \d in UNIT_PATTERN, which a regex engine also reads as Arabic-Indic digits.
    problem = unit_code_problem("1133010\u0660" + "010200110C")
    assert problem and "digits and capitals" in problem


def test_a_unit_with_a_wrong_check_character_is_refused_with_the_right_one(tmp_path: Path) -> None:
    good = make_unit_code("330102", "01020011")
    bad = good[:17] + ("0" if good[17] != "0" else "1")
    city = tmp_path / "city.yaml"
    city.write_text(
        "name: t\nregions: [{code: '330102', name: 上城区}]\n"
        f"units: [{{key: amr, name: x, serial: 11, code: '{bad}', items: [[XK-01, 许可]]}}]\n",
        encoding="utf-8",
    )
    with pytest.raises(CityFileError) as err:
        load_city(city)
    assert str(city) in str(err.value) and f"should be {good[17]!r}" in str(err.value)


def test_a_city_file_with_a_missing_field_names_it(tmp_path: Path) -> None:
    city = tmp_path / "city.yaml"
    city.write_text("name: t\nregions: [{code: '3301', name: 上城区}]\nunits: []\n", encoding="utf-8")
    with pytest.raises(CityFileError) as err:
        load_city(city)
    message = str(err.value)
    assert "regions.0.code" in message and "units" in message
