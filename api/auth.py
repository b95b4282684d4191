"""Signed tokens (JWT, HS256) and what each role may see and do.

A token carries ``sub`` (the user), ``role`` (supervisor / unit_officer / auditor) and, for a unit
officer, ``unit_code``: the one unit whose figures, tickets and actions they own. Scoping happens
here, on the server, for every query and action; the board and any other page only display.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import jwt

from haochaping.domain.contract import UNIT_PATTERN
from haochaping.domain.records import Actor, CommandAction, Role
from haochaping.settings import ApiSettings

ALGORITHM = "HS256"


class AuthError(Exception):
    """The request carries no token or one that cannot be trusted (401)."""


class Forbidden(Exception):
    """The principal is known but may not see or do this (403)."""


def mint_token(
    settings: ApiSettings,
    *,
    role: Role,
    sub: str,
    unit_code: str | None = None,
    ttl_minutes: int | None = None,
    now: datetime | None = None,
) -> str:
    if role is Role.UNIT_OFFICER and not unit_code:
        raise ValueError("a unit officer's token needs unit_code: the 统一社会信用代码 of their unit")
    if unit_code is not None and not re.match(UNIT_PATTERN, unit_code):
        raise ValueError(
            f"unit_code {unit_code!r} is not an 18-character 统一社会信用代码 (e.g. 11330102002495613X)"
        )
    if role is not Role.UNIT_OFFICER and unit_code:
        raise ValueError(f"only a unit officer's token carries unit_code; a {role.value} sees every unit")
    issued = now or datetime.now(UTC)
    claims: dict[str, object] = {
        "iss": settings.token_issuer,
        "sub": sub,
        "role": role.value,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(minutes=ttl_minutes or settings.token_ttl_minutes)).timestamp()),
    }
    if unit_code:
        claims["unit_code"] = unit_code
    return jwt.encode(claims, settings.token_secret.get_secret_value(), algorithm=ALGORITHM)


def decode_token(settings: ApiSettings, token: str) -> Actor:
    try:
        claims = jwt.decode(
            token,
            settings.token_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            issuer=settings.token_issuer,
            options={"require": ["exp", "iss", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("the token has expired; ask for a new one (haochaping token)") from exc
    except jwt.InvalidIssuerError as exc:
        raise AuthError(f"the token was not issued by {settings.token_issuer!r}") from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"the token is not valid: {exc}") from exc
    try:
        role = Role(claims.get("role"))
    except ValueError as exc:
        raise AuthError(
            f"the token's role {claims.get('role')!r} is not one of {', '.join(r.value for r in Role)}"
        ) from exc
    unit_code = claims.get("unit_code")
    if role is Role.UNIT_OFFICER and not unit_code:
        raise AuthError("a unit officer's token must name their unit (claim unit_code)")
    return Actor(
        user_id=str(claims["sub"]), role=role, unit_code=unit_code if role is Role.UNIT_OFFICER else None
    )


def scope_unit(actor: Actor, requested: str | None) -> str | None:
    """The unit a query is limited to: the officer's own, whatever was asked; None means all units.

    A unit officer who names another unit is refused, not quietly given their own figures or an
    empty list, so a mistake in a link is visible.
    """
    if actor.role is not Role.UNIT_OFFICER:
        return requested
    if requested is not None and requested != actor.unit_code:
        raise Forbidden(
            f"a unit officer of {actor.unit_code} may not see unit {requested}; "
            f"leave unit_code out or set it to {actor.unit_code}"
        )
    return actor.unit_code


# 谁办理谁负责: the unit works its own ticket (assign within the unit, rectify, appeal, explain);
# the supervisors decide (call-back, appeals, not-fixable, 销号) so the unit never signs off itself.
UNIT_OFFICER_ACTIONS = frozenset(
    {
        CommandAction.ASSIGN,
        CommandAction.START_RECTIFYING,
        CommandAction.REPORT_RECTIFIED,
        CommandAction.APPEAL,
        CommandAction.REQUEST_NOT_FIXABLE,
    }
)


def check_action(actor: Actor, action: CommandAction, ticket_unit: str, payload: dict[str, object]) -> None:
    if actor.role is Role.AUDITOR:
        raise Forbidden("an auditor has read-only access and may not act on tickets")
    if actor.role is Role.SUPERVISOR:
        return
    if ticket_unit != actor.unit_code:
        raise Forbidden(
            f"the ticket belongs to unit {ticket_unit}; a unit officer of {actor.unit_code} may not act on it"
        )
    if action not in UNIT_OFFICER_ACTIONS:
        allowed = ", ".join(sorted(a.value for a in UNIT_OFFICER_ACTIONS))
        raise Forbidden(f"{action.value} is a supervisor's decision; a unit officer may: {allowed}")
    target = payload.get("unit_code")
    if action is CommandAction.ASSIGN and target is not None and target != actor.unit_code:
        raise Forbidden(
            "a unit officer may assign within their own unit only; a supervisor hands a ticket to another unit"
        )
