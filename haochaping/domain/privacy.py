"""Rater identity is personal data: it is replaced by a keyed pseudonym at the edge.

The same phone number or ID number always gives the same pseudonym under one key, so the stream
can still see "one rater rating many cases", but the clear value cannot be recovered without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_NON_DIGITS = re.compile(r"[\s\-()+]")


def normalise_identity(value: str) -> str:
    """Fold the spellings of one phone or ID number into one: spaces, dashes, +86, a lower-case x."""
    text = _NON_DIGITS.sub("", value.strip()).upper()
    if text.startswith("86") and len(text) == 13:
        text = text[2:]
    return text


def pseudonym(value: str, key: bytes) -> str:
    digest = hmac.new(key, normalise_identity(value).encode(), hashlib.sha256).hexdigest()
    return f"p1_{digest[:32]}"
