"""Error answers a person can act on: which field (JSON pointer), what was wrong, what would be right."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from haochaping.domain.problems import PATTERN_HINTS, Problem, json_pointer, problems_from_validation
from ingest.payloads import IDENTITY_FIELDS


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem_response(
    status: int,
    title: str,
    problems: Iterable[Problem] = (),
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"status": status, "title": title, **extra}
    listed = [p.as_dict() for p in problems]
    if listed or status in (400, 422):
        body["problems"] = listed
    return JSONResponse(body, status_code=status, headers=headers)


def redact(problems: Iterable[Problem]) -> list[Problem]:
    """Never echo a phone or ID number, not even the wrong one a sender just sent."""
    out = []
    for problem in problems:
        field = problem.pointer.rsplit("/", 1)[-1]
        if field in IDENTITY_FIELDS and "; got " in problem.message:
            problem = Problem(problem.pointer, problem.message.split("; got ", 1)[0], problem.type)
        out.append(problem)
    return out


def problems_of(error: ValidationError, prefix: Sequence[int | str] = ()) -> list[Problem]:
    return redact(problems_from_validation(error, prefix=prefix))


async def request_validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems: list[Problem] = []
    invalid_json = False
    for item in exc.errors():
        loc = list(item.get("loc", ()))
        if loc and loc[0] == "body":
            loc = loc[1:]
        kind = str(item.get("type", "invalid"))
        if kind == "json_invalid":
            invalid_json = True
            detail = (item.get("ctx") or {}).get("error", "")
            problems.append(
                Problem("", f"the body is not valid JSON ({detail}); send one JSON document", kind)
            )
            continue
        message = str(item.get("msg", "invalid"))
        if kind == "missing" and not loc:
            message = "the body is empty; send the JSON document described in the OpenAPI spec"
        elif kind == "extra_forbidden":
            message = f"{message}: this field is not part of the contract; remove it (see the OpenAPI spec)"
        elif kind == "string_pattern_mismatch":
            pattern = (item.get("ctx") or {}).get("pattern")
            message = f"expected {PATTERN_HINTS[pattern]}" if pattern in PATTERN_HINTS else message
        elif kind == "timezone_aware":
            message = f"{message}: give a UTC offset, e.g. 2026-11-25T09:30:00+08:00"
        problems.append(Problem(json_pointer(loc), message, kind))
    if invalid_json:
        return problem_response(400, "the body is not valid JSON", problems)
    return problem_response(422, "the request does not follow the contract", redact(problems))
