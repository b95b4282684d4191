"""Tokens and scoping rules, without any server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.auth import AuthError, Forbidden, check_action, decode_token, mint_token, scope_unit
from haochaping.domain.records import Actor, CommandAction, Role
from haochaping.settings import ApiSettings

SETTINGS = ApiSettings(token_secret="a-test-secret-that-is-long-enough-for-hs256")
UNIT_A = "11330102002495613X"
UNIT_B = "11330102MB1234567A"
units = st.from_regex(r"\A[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}\Z")


def test_a_token_round_trips_to_the_same_principal() -> None:
    token = mint_token(SETTINGS, role=Role.UNIT_OFFICER, sub="wang", unit_code=UNIT_A)
    assert decode_token(SETTINGS, token) == Actor(user_id="wang", role=Role.UNIT_OFFICER, unit_code=UNIT_A)


def test_expired_foreign_and_tampered_tokens_are_refused_with_a_reason() -> None:
    old = mint_token(SETTINGS, role=Role.SUPERVISOR, sub="li", now=datetime.now(UTC) - timedelta(days=2))
    with pytest.raises(AuthError, match="expired"):
        decode_token(SETTINGS, old)
    other = ApiSettings(token_secret=SETTINGS.token_secret, token_issuer="elsewhere")
    with pytest.raises(AuthError, match="not issued by 'haochaping'"):
        decode_token(SETTINGS, mint_token(other, role=Role.SUPERVISOR, sub="li"))
    good = mint_token(SETTINGS, role=Role.AUDITOR, sub="zhao")
    with pytest.raises(AuthError, match="not valid"):
        decode_token(SETTINGS, good[:-2] + ("AA" if not good.endswith("AA") else "BB"))


def test_an_officer_token_needs_a_valid_unit() -> None:
    with pytest.raises(ValueError, match="needs unit_code"):
        mint_token(SETTINGS, role=Role.UNIT_OFFICER, sub="wang")
    with pytest.raises(ValueError, match="18-character"):
        mint_token(SETTINGS, role=Role.UNIT_OFFICER, sub="wang", unit_code="330102")


@given(own=units, asked=st.one_of(st.none(), units))
def test_an_officer_query_is_always_their_own_unit_or_refused(own: str, asked: str | None) -> None:
    officer = Actor(user_id="o", role=Role.UNIT_OFFICER, unit_code=own)
    if asked is None or asked == own:
        assert scope_unit(officer, asked) == own
    else:
        with pytest.raises(Forbidden, match=own):
            scope_unit(officer, asked)


@given(asked=st.one_of(st.none(), units), role=st.sampled_from([Role.SUPERVISOR, Role.AUDITOR]))
def test_supervisors_and_auditors_see_what_they_ask_for(asked: str | None, role: Role) -> None:
    assert scope_unit(Actor(user_id="s", role=role), asked) == asked


@given(action=st.sampled_from(list(CommandAction)), ticket_unit=st.sampled_from([UNIT_A, UNIT_B]))
def test_who_may_act(action: CommandAction, ticket_unit: str) -> None:
    officer = Actor(user_id="o", role=Role.UNIT_OFFICER, unit_code=UNIT_A)
    check_action(Actor(user_id="s", role=Role.SUPERVISOR), action, ticket_unit, {})
    with pytest.raises(Forbidden, match="read-only"):
        check_action(Actor(user_id="a", role=Role.AUDITOR), action, ticket_unit, {})
    decides = action in {
        CommandAction.RECORD_CALLBACK, CommandAction.ACCEPT_APPEAL, CommandAction.REJECT_APPEAL,
        CommandAction.APPROVE_NOT_FIXABLE, CommandAction.REJECT_NOT_FIXABLE, CommandAction.CLOSE,
    }  # fmt: skip
    if ticket_unit != UNIT_A or decides:
        with pytest.raises(Forbidden):
            check_action(officer, action, ticket_unit, {})
    else:
        check_action(officer, action, ticket_unit, {})


def test_an_officer_cannot_hand_a_ticket_to_another_unit() -> None:
    officer = Actor(user_id="o", role=Role.UNIT_OFFICER, unit_code=UNIT_A)
    with pytest.raises(Forbidden, match="own unit only"):
        check_action(officer, CommandAction.ASSIGN, UNIT_A, {"unit_code": UNIT_B, "responsible_person": "x"})
