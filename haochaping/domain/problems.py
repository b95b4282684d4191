"""Validation problems a person can act on: which field (JSON pointer), what was wrong, what is right."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from pydantic import BaseModel, ValidationError

from haochaping.domain import contract


@dataclass(frozen=True, slots=True)
class Problem:
    pointer: str  # RFC 6901 JSON pointer into the submitted document, "" for the whole document
    message: str  # what was wrong and what would be right
    type: str  # a stable machine code, e.g. "missing", "greater_than_equal", "extra_forbidden"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def json_pointer(loc: Sequence[int | str]) -> str:
    def escape(part: int | str) -> str:
        return str(part).replace("~", "~0").replace("/", "~1")

    return "".join("/" + escape(part) for part in loc)


# Regular expressions say little to a device vendor: say it in words.
PATTERN_HINTS = {
    contract.CODE_PATTERN: "1–64 characters of A–Z a–z 0–9 _ . : -",
    contract.REGION_PATTERN: "a 行政区划代码 of 6, 9 or 12 digits, e.g. 330102",
    contract.UNIT_PATTERN: "an 18-character 统一社会信用代码 (digits and capitals except I O S V Z), e.g. 11330102002495613X",
    contract.PSEUDONYM_PATTERN: "a pseudonym made by ingest (p1_ and 32 hex digits); send the phone or ID to ingest instead",
    contract.STAGE_PATTERN: "a lower-case stage name such as overall, accept, approve or deliver",
}

_HINTS = {
    "missing": "add it (see the JSON Schema: haochaping schema)",
    "extra_forbidden": "this field is not part of the contract; remove it (see the JSON Schema)",
    "timezone_aware": "give a UTC offset, e.g. 2026-11-25T09:30:00+08:00",
}


def problems_from_validation(
    error: ValidationError, *, model: type[BaseModel] | None = None, prefix: Sequence[int | str] = ()
) -> list[Problem]:
    out: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = [part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
        kind = item["type"]
        message = item["msg"]
        hint = _HINTS.get(kind)
        if hint and hint not in message.lower():
            message = f"{message}: {hint}"
        pattern = (item.get("ctx") or {}).get("pattern")
        if kind == "string_pattern_mismatch" and pattern in PATTERN_HINTS:
            message = f"expected {PATTERN_HINTS[pattern]}"
        if kind not in ("missing",) and "input" in item and not isinstance(item["input"], dict | list):
            message = f"{message}; got {_short(item['input'])}"
        out.append(Problem(pointer=json_pointer([*prefix, *loc]), message=message, type=kind))
    return out


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def problem_dicts(problems: Iterable[Problem]) -> list[dict[str, str]]:
    return [p.as_dict() for p in problems]
