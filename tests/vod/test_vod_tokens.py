"""Signed playback tokens: only a fresh RS256 token from a live key, for this id and use, passes."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from vod.tokens import (
    InvalidToken,
    generate_signing_key,
    public_key_of,
    sign_playback_token,
    verify_playback_token,
)

PRIVATE, PUBLIC = generate_signing_key()
OTHER_PRIVATE, _OTHER_PUBLIC = generate_signing_key()
KEYS = {"key1": PUBLIC}


def lookup(kid: str) -> str | None:
    return KEYS.get(kid)


def verify(token: str, playback_id: str = "pb1", aud: str = "v") -> None:
    verify_playback_token(token, playback_id=playback_id, aud=aud, public_keys=lookup)


def refused(token: str, reason_part: str, **kw: str) -> None:
    with pytest.raises(InvalidToken) as err:
        verify(token, **kw)
    assert reason_part in err.value.reason


def test_a_valid_token_passes_for_each_audience() -> None:
    for aud in ("v", "t", "d"):
        verify(sign_playback_token(PRIVATE, "key1", "pb1", aud, 60), aud=aud)


def test_public_key_of_matches() -> None:
    assert public_key_of(PRIVATE) == PUBLIC


def test_no_token() -> None:
    refused("", "missing")


def test_garbage() -> None:
    refused("not.a.jwt", "malformed")


def test_expired() -> None:
    refused(sign_playback_token(PRIVATE, "key1", "pb1", "v", -60), "expired")


def test_small_clock_skew_is_tolerated() -> None:
    verify(sign_playback_token(PRIVATE, "key1", "pb1", "v", -2))


def test_forged_signature() -> None:
    refused(sign_playback_token(OTHER_PRIVATE, "key1", "pb1", "v", 60), "signature")


def test_tampered_claims() -> None:
    head, _body, sig = sign_playback_token(PRIVATE, "key1", "pb1", "v", 60).split(".")
    body = (
        base64.urlsafe_b64encode(
            json.dumps({"sub": "pb2", "aud": "v", "exp": int(time.time()) + 60}).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    refused(f"{head}.{body}.{sig}", "signature", playback_id="pb2")


def test_wrong_sub() -> None:
    token = sign_playback_token(PRIVATE, "key1", "pb1", "v", 60)
    refused(token, "another playback", playback_id="pb2")


def test_wrong_aud() -> None:
    refused(sign_playback_token(PRIVATE, "key1", "pb1", "t", 60), "audience", aud="v")
    refused(sign_playback_token(PRIVATE, "key1", "pb1", "v", 60), "audience", aud="d")


def test_deleted_key() -> None:
    token = sign_playback_token(PRIVATE, "key1", "pb1", "v", 60)
    KEYS.pop("key1")
    try:
        refused(token, "deleted")
    finally:
        KEYS["key1"] = PUBLIC


def test_missing_kid() -> None:
    token = jwt.encode(
        {"sub": "pb1", "aud": "v", "exp": int(time.time()) + 60}, PRIVATE, algorithm="RS256"
    )
    refused(token, "kid")


def test_alg_none_is_refused() -> None:
    token = jwt.encode(
        {"sub": "pb1", "aud": "v", "exp": int(time.time()) + 60},
        None,  # type: ignore[arg-type]
        algorithm="none",
        headers={"kid": "key1"},
    )
    refused(token, "algorithm")


def test_hs256_with_the_public_key_as_secret_is_refused() -> None:
    # The classic key-confusion attack: HMAC keyed with the (public) PEM.
    header = {"alg": "HS256", "typ": "JWT", "kid": "key1"}
    claims = {"sub": "pb1", "aud": "v", "exp": int(time.time()) + 60}
    import hashlib
    import hmac

    def b64(d: bytes) -> str:
        return base64.urlsafe_b64encode(d).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = hmac.new(PUBLIC.encode(), signing_input.encode(), hashlib.sha256).digest()
    refused(f"{signing_input}.{b64(sig)}", "algorithm")


def test_missing_exp() -> None:
    token = jwt.encode(
        {"sub": "pb1", "aud": "v"}, PRIVATE, algorithm="RS256", headers={"kid": "key1"}
    )
    refused(token, "exp")


def test_missing_sub() -> None:
    token = jwt.encode(
        {"aud": "v", "exp": int(time.time()) + 60},
        PRIVATE,
        algorithm="RS256",
        headers={"kid": "key1"},
    )
    refused(token, "sub")


def test_unknown_expected_audience() -> None:
    refused(sign_playback_token(PRIVATE, "key1", "pb1", "v", 60), "audience", aud="x")


def test_a_token_may_not_claim_more_than_the_maximum_lifetime() -> None:
    now = time.time()
    year = sign_playback_token(PRIVATE, "key1", "pb1", "v", ttl_s=365 * 86400)
    day = sign_playback_token(PRIVATE, "key1", "pb1", "v", ttl_s=86400)
    with pytest.raises(InvalidToken) as err:
        verify_playback_token(
            year, playback_id="pb1", aud="v", public_keys=lookup, now=now, max_ttl_s=7 * 86400
        )
    assert "longer than" in err.value.reason
    verify_playback_token(
        day, playback_id="pb1", aud="v", public_keys=lookup, now=now, max_ttl_s=7 * 86400
    )
    # a leaked long token does not become good near its end: it was issued too long
    with pytest.raises(InvalidToken):
        verify_playback_token(
            year,
            playback_id="pb1",
            aud="v",
            public_keys=lookup,
            now=now + 360 * 86400,
            max_ttl_s=7 * 86400,
        )
    # without iat, what is left counts
    no_iat = jwt.encode(
        {"sub": "pb1", "aud": "v", "exp": int(now) + 3600},
        PRIVATE,
        algorithm="RS256",
        headers={"kid": "key1"},
    )
    verify_playback_token(
        no_iat, playback_id="pb1", aud="v", public_keys=lookup, now=now, max_ttl_s=7200
    )
