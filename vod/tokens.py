"""Signed playback tokens: RS256 JWTs naming a playback id, an audience and an expiry.

``verify_playback_token(token, playback_id=, aud=, public_keys=)`` accepts only
RS256, needs a ``kid`` header whose public key ``public_keys(kid)`` returns
(None — unknown or deleted key — is a refusal), ``sub`` equal to the playback
id, ``aud`` equal to the expected one of ``v`` (video: playlists, parts,
segments, inits), ``t`` (thumbnail), ``d`` (download), and an ``exp`` in the
future (``LEEWAY_S`` of clock skew allowed) but no further than ``max_ttl_s``
(a leaked token that claims to last a year must not). Every refusal raises
``InvalidToken(reason)``. ``sign_playback_token`` makes one (tests, CLI);
``generate_signing_key`` makes an RSA key pair as PEM strings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

AUDIENCES = frozenset({"v", "t", "d"})
LEEWAY_S = 5
MAX_TOKEN_LENGTH = 8192


class InvalidToken(Exception):
    """The token does not grant this playback; ``reason`` says why (for logs, not users)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def generate_signing_key(bits: int = 2048) -> tuple[str, str]:
    """(private PEM, public PEM) for a new RS256 signing key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def public_key_of(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def sign_playback_token(
    private_pem: str, kid: str, playback_id: str, aud: str, ttl_s: int = 3600
) -> str:
    if aud not in AUDIENCES:
        raise ValueError(f"aud must be one of {sorted(AUDIENCES)}")
    now = int(time.time())
    claims = {"sub": playback_id, "aud": aud, "exp": now + int(ttl_s), "iat": now}
    return jwt.encode(claims, private_pem, algorithm="RS256", headers={"kid": kid})


def verify_playback_token(
    token: str,
    *,
    playback_id: str,
    aud: str,
    public_keys: Callable[[str], str | None],
    now: float | None = None,
    max_ttl_s: float | None = None,
) -> dict[str, Any]:
    """The verified claims if ``token`` grants ``aud`` on ``playback_id``, else InvalidToken."""
    if aud not in AUDIENCES:
        raise InvalidToken(f"unknown audience {aud!r}")
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("missing or oversized token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("malformed token") from None
    if header.get("alg") != "RS256":
        raise InvalidToken(f"algorithm {header.get('alg')!r} not accepted (RS256 only)")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("no kid header")
    public_pem = public_keys(kid)
    if not public_pem:
        raise InvalidToken("unknown or deleted signing key")
    try:
        claims = jwt.decode(
            token,
            public_pem,
            algorithms=["RS256"],
            audience=aud,
            leeway=LEEWAY_S,
            options={"require": ["exp", "sub", "aud"], "verify_iat": False},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("wrong audience") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"missing claim {exc.claim!r}") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("bad signature") from None
    except (jwt.PyJWTError, ValueError) as exc:
        raise InvalidToken(f"invalid token: {type(exc).__name__}") from None
    if claims.get("sub") != playback_id:
        raise InvalidToken("token is for another playback id")
    at = time.time() if now is None else now
    exp = float(claims["exp"])
    if exp + LEEWAY_S < at:
        raise InvalidToken("token expired")
    if max_ttl_s is not None:
        # the lifetime it was issued with (iat) when it says, and what is left in any case
        iat = claims.get("iat")
        issued = float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else at
        if exp - min(issued, at) > max_ttl_s + LEEWAY_S:
            raise InvalidToken(f"token lasts longer than the {max_ttl_s:.0f} s allowed")
    return dict(claims)
