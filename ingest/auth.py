"""Per-sender authentication: every request is signed (see :mod:`haochaping.domain.signing`).

The checks run in a fixed order and the first that fails is named in the 401 body, so a vendor
knows what to fix: a missing header, an unknown key, a timestamp outside the allowed skew, a bad
signature, or a nonce already used. Secrets come from the settings and are never logged.

Replay protection keeps every (key, nonce) seen within the skew window in this process. With more
than one ingest process, route each key id to one process (hash on ``X-HCP-Key`` at the load balancer),
or a replay sent to another process would pass.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import SecretStr

from haochaping.domain import signing


class Check(enum.StrEnum):
    MISSING_HEADER = "missing_header"
    MALFORMED_HEADER = "malformed_header"
    UNKNOWN_KEY = "unknown_key"
    EXPIRED_TIMESTAMP = "expired_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED_NONCE = "replayed_nonce"


class AuthFailure(Exception):
    def __init__(self, check: Check, detail: str) -> None:
        super().__init__(detail)
        self.check = check
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated sender: its key id goes into every record as ``sender``."""

    key_id: str


class NonceCache:
    """(key, nonce) pairs seen within the window; memory is bounded by request rate × window."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_seconds
        self._clock = clock
        self._seen: set[tuple[str, str]] = set()
        self._order: deque[tuple[float, tuple[str, str]]] = deque()

    def _expire(self, now: float) -> None:
        while self._order and self._order[0][0] <= now:
            _, entry = self._order.popleft()
            self._seen.discard(entry)

    def seen_before(self, key_id: str, nonce: str) -> bool:
        """Record the pair; True if it was already there."""
        now = self._clock()
        self._expire(now)
        entry = (key_id, nonce)
        if entry in self._seen:
            return True
        self._seen.add(entry)
        self._order.append((now + self._window, entry))
        return False

    def __len__(self) -> int:
        return len(self._seen)


class Verifier:
    def __init__(
        self,
        keys: Mapping[str, SecretStr],
        max_skew_seconds: int,
        *,
        wall_clock: Callable[[], float] = time.time,
        nonces: NonceCache | None = None,
    ) -> None:
        self._secrets = {key_id: secret.get_secret_value() for key_id, secret in keys.items()}
        self._skew = max_skew_seconds
        self._wall_clock = wall_clock
        # A timestamp is valid for 2 × skew (from now - skew to now + skew): keep nonces that long.
        self._nonces = nonces if nonces is not None else NonceCache(2 * max_skew_seconds + 1)

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Principal:
        """``headers`` with lower-case names. Raise :class:`AuthFailure` naming the failed check."""
        values = {}
        for name in (
            signing.HEADER_KEY,
            signing.HEADER_TIMESTAMP,
            signing.HEADER_NONCE,
            signing.HEADER_SIGNATURE,
        ):
            value = headers.get(name.lower())
            if not value:
                raise AuthFailure(
                    Check.MISSING_HEADER,
                    f"header {name} is missing; sign every request with {signing.HEADER_KEY}, "
                    f"{signing.HEADER_TIMESTAMP}, {signing.HEADER_NONCE} and {signing.HEADER_SIGNATURE}",
                )
            values[name] = value
        key_id = values[signing.HEADER_KEY]
        timestamp = values[signing.HEADER_TIMESTAMP]
        nonce = values[signing.HEADER_NONCE]
        signature = values[signing.HEADER_SIGNATURE]

        secret = self._secrets.get(key_id)
        if secret is None:
            raise AuthFailure(
                Check.UNKNOWN_KEY,
                f"key id {key_id[:64]!r} is not configured; ask the operator for your key id",
            )
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise AuthFailure(
                Check.MALFORMED_HEADER,
                f"{signing.HEADER_TIMESTAMP} must be Unix time in whole seconds, e.g. {int(self._wall_clock())}",
            )
        if not signing.NONCE_PATTERN.match(nonce):
            raise AuthFailure(
                Check.MALFORMED_HEADER,
                f"{signing.HEADER_NONCE} must be 8–64 characters of A–Z a–z 0–9 _ -, fresh for every request",
            )
        now = self._wall_clock()
        age = now - int(timestamp)
        if age > self._skew:
            raise AuthFailure(
                Check.EXPIRED_TIMESTAMP,
                f"{signing.HEADER_TIMESTAMP} is {int(age)} s old; at most {self._skew} s is allowed: "
                "sign each request (a retry too) with the current time and check the sender's clock",
            )
        if -age > self._skew:
            raise AuthFailure(
                Check.FUTURE_TIMESTAMP,
                f"{signing.HEADER_TIMESTAMP} is {int(-age)} s in the future; at most {self._skew} s is allowed: "
                "check the sender's clock",
            )
        if not signing.signature_matches(secret, method, path, timestamp, nonce, body, signature):
            raise AuthFailure(
                Check.BAD_SIGNATURE,
                f"{signing.HEADER_SIGNATURE} does not match: expected lower-case hex HMAC-SHA256 under your "
                "secret of METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\nhex(SHA-256(body)), "
                f"here over {method.upper()} {path} and a body of {len(body)} bytes",
            )
        # Only a correctly signed request may spend a nonce, so a forger cannot burn a sender's nonces.
        if self._nonces.seen_before(key_id, nonce):
            raise AuthFailure(
                Check.REPLAYED_NONCE,
                f"nonce {nonce!r} was already used by {key_id!r}; use a fresh nonce for every request, a retry too",
            )
        return Principal(key_id)
