"""Request signing between senders (devices, gateways, the hotline system) and ingest.

Every request carries four headers:

- ``X-HCP-Key``: the sender's key id;
- ``X-HCP-Timestamp``: Unix time in seconds when it was signed;
- ``X-HCP-Nonce``: a fresh random string (8–64 characters of A–Z a–z 0–9 _ -) for every request,
  a retry included;
- ``X-HCP-Signature``: lower-case hex HMAC-SHA256, under the sender's secret, of the canonical string
  ``METHOD \\n PATH \\n TIMESTAMP \\n NONCE \\n hex(SHA-256(body))``.

PATH is the request path with its query string as sent (``/v1/reviews``). Ingest refuses a timestamp
outside the allowed skew and a (key, nonce) it has already seen within that window, so a captured
request cannot be replayed; a retry is signed anew, and the review's ``event_id`` keeps it idempotent.
"""

from __future__ import annotations

import hashlib
import hmac
import re

HEADER_KEY = "X-HCP-Key"
HEADER_TIMESTAMP = "X-HCP-Timestamp"
HEADER_NONCE = "X-HCP-Nonce"
HEADER_SIGNATURE = "X-HCP-Signature"
NONCE_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")


def canonical_request(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((method.upper(), path, timestamp, nonce, digest)).encode()


def sign(secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    return hmac.new(
        secret.encode(), canonical_request(method, path, timestamp, nonce, body), hashlib.sha256
    ).hexdigest()


def signature_matches(
    secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes, signature: str
) -> bool:
    return hmac.compare_digest(sign(secret, method, path, timestamp, nonce, body), signature.lower())


def signed_headers(
    key_id: str, secret: str, method: str, path: str, body: bytes, *, now: float, nonce: str
) -> dict[str, str]:
    """Headers for a signed request: what a sender's client (and the simulator) sends."""
    timestamp = str(int(now))
    return {
        HEADER_KEY: key_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(secret, method, path, timestamp, nonce, body),
    }
