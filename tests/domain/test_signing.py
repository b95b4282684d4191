from haochaping.domain.signing import HEADER_SIGNATURE, sign, signature_matches, signed_headers


def test_signature_covers_method_path_timestamp_nonce_and_body() -> None:
    base = ("secret", "POST", "/v1/reviews", "1764034200", "nonce-0001", b'{"a":1}')
    good = sign(*base)
    assert signature_matches(*base, good)
    assert signature_matches(*base, good.upper())
    for i, other in enumerate(("other", "PUT", "/v1/other", "1764034201", "nonce-0002", b'{"a":2}')):
        changed = list(base)
        changed[i] = other
        assert not signature_matches(*changed, good), f"changing argument {i} must break the signature"


def test_signed_headers_verify() -> None:
    headers = signed_headers(
        "dev-1", "secret", "POST", "/v1/reviews", b"{}", now=1764034200.7, nonce="abcdefgh"
    )
    assert headers["X-HCP-Timestamp"] == "1764034200"
    assert signature_matches(
        "secret", "POST", "/v1/reviews", "1764034200", "abcdefgh", b"{}", headers[HEADER_SIGNATURE]
    )
