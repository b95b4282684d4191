"""Reading ``ledger.intake`` and writing the ticket table: the fast paths equal the plain ones."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from haochaping.domain.ledger import DeadlinePolicy, make_intake, open_from_intake
from haochaping.domain.triage import Triage, TriageRules
from haochaping.domain.workdays import WorkCalendar
from streams.intake import DeadlineTick, parse_intake
from streams.ledger import APPLIED_KEPT, _State
from tests.domain.factories import review_factory

RULES = TriageRules.load()
TRIAGE = Triage(RULES)
CALENDAR = WorkCalendar.from_file(None)
POLICY = DeadlinePolicy(RULES.config.deadlines)


def reference_parse(raw: bytes) -> Any:
    """How ``parse_intake`` read every record before it validated JSON directly."""
    from haochaping.domain.records import LedgerIntake

    data = orjson.loads(raw)
    if isinstance(data, dict) and data.get("kind") == "tick":
        return DeadlineTick.model_validate(data)
    return LedgerIntake.model_validate(data)


def intake_json(text: str | None, stars: int = 1) -> bytes:
    review = review_factory(event_id="ev-1", stars=stars, text=text)
    triaged = TRIAGE.triage_review(review)
    assert triaged is not None
    intake = make_intake(
        source="review", source_id=review.event_id, at=review.rated_at, triage=triaged, review=review
    )
    return intake.model_dump_json().encode()


def outcome(parse: Any, raw: bytes) -> Any:
    try:
        return parse(raw)
    except ValidationError as exc:
        return ("invalid", exc.title, exc.errors(include_url=False))
    except ValueError as exc:
        return ("not json", type(exc), str(exc))


@given(text=st.one_of(st.none(), st.text(max_size=80)), stars=st.integers(1, 2))
def test_an_intake_reads_the_same_through_either_path(text: str | None, stars: int) -> None:
    raw = intake_json(text, stars)
    assert parse_intake(raw) == reference_parse(raw)


INTAKE = orjson.loads(intake_json("窗口要辛苦费"))
BAD_RECORDS = [
    b"",
    b"not json",
    b"[1, 2]",
    b'{"kind":"tick","ticket_id":"TK-1"}',  # a tick without its moment
    b'{"kind":"tick","ticket_id":"TK-1","now":"2026-11-25T10:00:00+08:00"}',
    b'{"ticket_id":"TK-1","now":"2026-11-25T10:00:00+08:00","kind":"tick"}',  # kind not first
    orjson.dumps({**INTAKE, "colour": "purple"}),
    orjson.dumps({**INTAKE, "extra": 1}),
    orjson.dumps(INTAKE).replace(b'"stars":1', b'"stars":1000000000000000000000000000000', 1),
    orjson.dumps({k: v for k, v in INTAKE.items() if k != "at"}),
    orjson.dumps(INTAKE)[:-1] + b',"at":"later"}',  # a repeated key: the last one counts
    orjson.dumps(INTAKE).replace(b'"review"', b'"review":null,"review"', 1),
]


@pytest.mark.parametrize("raw", BAD_RECORDS)
def test_a_record_that_is_not_an_intake_fails_or_reads_as_before(raw: bytes) -> None:
    assert outcome(parse_intake, raw) == outcome(reference_parse, raw)


@given(
    text=st.one_of(st.none(), st.text(max_size=80)),
    partition=st.integers(0, 500),
    applied=st.lists(st.text(max_size=12), max_size=APPLIED_KEPT + 5),
)
def test_a_stored_ticket_is_written_as_its_json_dump_would_be(
    text: str | None, partition: int, applied: list[str]
) -> None:
    from haochaping.domain.records import LedgerIntake

    intake = LedgerIntake.model_validate_json(intake_json(text))
    ticket = open_from_intake(intake, calendar=CALENDAR, policy=POLICY).ticket
    state = _State(partition, ticket, applied)
    expected = orjson.dumps(
        {"p": partition, "ticket": ticket.model_dump(mode="json"), "applied": applied[-APPLIED_KEPT:]}
    )
    assert state.encode() == expected
    again = _State.decode(state.encode())
    assert (again.partition, again.ticket, again.applied) == (partition, ticket, applied[-APPLIED_KEPT:])
