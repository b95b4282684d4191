from hypothesis import given
from hypothesis import strategies as st

from haochaping.domain.contract import PSEUDONYM_PATTERN
from haochaping.domain.privacy import pseudonym

KEY = b"test-key"


def test_spellings_of_one_phone_give_one_pseudonym() -> None:
    assert (
        pseudonym("13800138000", KEY)
        == pseudonym("+86 138-0013-8000", KEY)
        == pseudonym(" 138 0013 8000", KEY)
    )


def test_id_number_check_letter_case_is_folded() -> None:
    assert pseudonym("33010219900101123x", KEY) == pseudonym("33010219900101123X", KEY)


def test_the_key_matters_and_the_clear_value_is_not_in_the_pseudonym() -> None:
    p = pseudonym("13800138000", KEY)
    assert p != pseudonym("13800138000", b"other-key")
    assert "13800138000" not in p


@given(st.text(min_size=1, max_size=30))
def test_pseudonym_always_fits_the_contract(value: str) -> None:
    import re

    assert re.fullmatch(PSEUDONYM_PATTERN, pseudonym(value, KEY))
