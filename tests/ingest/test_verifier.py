"""The signature checks on their own, with a clock the test controls (no server)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from haochaping.domain.signing import signed_headers
from ingest.auth import AuthFailure, Check, NonceCache, Verifier

NOW = 1_764_034_200.0


def headers(
    now: float = NOW, nonce: str = "nonce-0001", secret: str = "s3cret", body: bytes = b"{}"
) -> dict[str, str]:
    signed = signed_headers("dev-1", secret, "POST", "/v1/reviews", body, now=now, nonce=nonce)
    return {k.lower(): v for k, v in signed.items()}


def verifier(clock: list[float]) -> Verifier:
    return Verifier(
        {"dev-1": SecretStr("s3cret")},
        300,
        wall_clock=lambda: clock[0],
        nonces=NonceCache(601, clock=lambda: clock[0]),
    )


def check_of(v: Verifier, h: dict[str, str], body: bytes = b"{}") -> Check:
    with pytest.raises(AuthFailure) as failure:
        v.verify("POST", "/v1/reviews", h, body)
    return failure.value.check


def test_the_skew_window_is_inclusive_and_both_ways() -> None:
    clock = [NOW]
    v = verifier(clock)
    assert (
        v.verify("POST", "/v1/reviews", headers(now=NOW - 300, nonce="edge-old-1"), b"{}").key_id == "dev-1"
    )
    assert (
        v.verify("POST", "/v1/reviews", headers(now=NOW + 300, nonce="edge-new-1"), b"{}").key_id == "dev-1"
    )
    assert check_of(v, headers(now=NOW - 301, nonce="too-old-01")) is Check.EXPIRED_TIMESTAMP
    assert check_of(v, headers(now=NOW + 301, nonce="too-new-01")) is Check.FUTURE_TIMESTAMP


def test_a_nonce_is_spent_only_by_a_valid_request_and_forgotten_after_the_window() -> None:
    clock = [NOW]
    v = verifier(clock)
    # A forger's request with someone's nonce does not burn it.
    assert check_of(v, headers(secret="wrong", nonce="nonce-keep")) is Check.BAD_SIGNATURE
    v.verify("POST", "/v1/reviews", headers(nonce="nonce-keep"), b"{}")
    assert check_of(v, headers(nonce="nonce-keep")) is Check.REPLAYED_NONCE
    clock[0] += 602  # the old timestamp has long expired, so the nonce need not be remembered
    v.verify("POST", "/v1/reviews", headers(now=clock[0], nonce="nonce-keep"), b"{}")


def test_a_changed_body_breaks_the_signature() -> None:
    v = verifier([NOW])
    assert check_of(v, headers(body=b"{}"), body=b'{"stars":1}') is Check.BAD_SIGNATURE


def test_a_non_numeric_timestamp_is_malformed() -> None:
    h = headers()
    h["x-hcp-timestamp"] = "2026-11-25T09:30:00"
    assert check_of(verifier([NOW]), h) is Check.MALFORMED_HEADER
