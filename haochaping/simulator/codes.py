"""统一社会信用代码 (GB 32100-2015) and the 组织机构代码 (GB 11714-1997) inside it: check digits.

A unit code is 18 characters: registry (1 = 机构编制, government bodies), kind (1 = 机关), the 6-digit
行政区划代码, the 9-character organisation code (8 characters + its GB 11714 check character) and a check
character over the first 17. Generated codes carry both checks, so they look like the real thing to
anyone who validates them.
"""

from __future__ import annotations

import re

from haochaping.domain.contract import UNIT_PATTERN

# GB 32100-2015 alphabet: digits and capitals without I, O, S, V, Z; a character's value is its index.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_UNIT_RE = re.compile(UNIT_PATTERN)
_ALPHABET_SET = frozenset(USCC_ALPHABET)


def _value(char: str) -> int:
    # GB 11714 gives letters the values 10..35 (A=10); digits are themselves.
    return int(char) if char.isdigit() else ord(char) - ord("A") + 10


def org_check_char(body: str) -> str:
    """GB 11714 check character of an 8-character organisation code body."""
    if not re.fullmatch(r"[0-9A-Z]{8}", body):
        raise ValueError(f"an organisation code body is 8 digits or capitals, got {body!r}")
    remainder = 11 - sum(_value(c) * w for c, w in zip(body, _ORG_WEIGHTS, strict=True)) % 11
    return {10: "X", 11: "0"}.get(remainder, str(remainder))


def uscc_check_char(first17: str) -> str:
    """GB 32100 check character over the first 17 characters of a 统一社会信用代码."""
    if len(first17) != 17:
        raise ValueError(f"expected the first 17 characters of a 统一社会信用代码, got {first17!r}")
    try:
        total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    except ValueError:
        raise ValueError(
            f"{first17!r} holds a character outside the GB 32100 alphabet {USCC_ALPHABET}"
        ) from None
    return USCC_ALPHABET[(31 - total % 31) % 31]


def make_unit_code(region_code: str, org_body: str, *, registry: str = "1", kind: str = "1") -> str:
    """A 统一社会信用代码 for a government body (registry 1 机构编制, kind 1 机关) in a county."""
    if not re.fullmatch(r"[0-9]{6}", region_code):
        raise ValueError(f"a unit code embeds a 6-digit county 行政区划代码, got {region_code!r}")
    org = org_body + org_check_char(org_body)
    first17 = f"{registry}{kind}{region_code}{org}"
    return first17 + uscc_check_char(first17)


def unit_code_problem(code: str) -> str | None:
    """Why ``code`` is not a valid 统一社会信用代码, in words, or None if it is."""
    # UNIT_PATTERN's \d also admits non-ASCII digits (e.g. Arabic-Indic): check the alphabet too.
    if not _UNIT_RE.fullmatch(code) or not set(code) <= _ALPHABET_SET:
        return (
            f"{code!r} is not 18 characters of digits and capitals except I O S V Z "
            "with 6 digits at positions 3–8"
        )
    org_expected = org_check_char(code[8:16])
    if code[16] != org_expected:
        return f"{code!r}: the organisation code check character (17th) should be {org_expected!r}"
    expected = uscc_check_char(code[:17])
    if code[17] != expected:
        return f"{code!r}: the check character (18th) should be {expected!r}, it is {code[17]!r}"
    return None
