"""Join tokens for rooms: JWT HS256 signed by a service secret.

Claims: ``sub`` (participant identity), ``room`` (room id), ``can_publish``,
``can_subscribe``, ``exp``, ``iat``, ``jti``, ``iss`` ("onair"). `JoinTokens`
issues them (the API's `POST /v1/rooms/{id}/tokens`) and verifies them (the
signaling WebSocket), raising `TokenError` with a machine-readable ``code``:
``token_expired``, ``token_other_room`` or ``token_invalid`` (forged, malformed,
wrong algorithm, missing claims).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

ISSUER = "onair"
MAX_TTL_S = 7 * 24 * 3600
IDENTITY_RE = re.compile(r"^[A-Za-z0-9_.@:+\-]{1,128}$")


class TokenError(Exception):
    """A join token was refused; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class JoinGrant:
    identity: str
    room_id: str
    can_publish: bool
    can_subscribe: bool
    issued_at: int
    expires_at: int
    jti: str


def valid_identity(identity: str) -> bool:
    return bool(IDENTITY_RE.match(identity))


class JoinTokens:
    """Issue and verify room join tokens with one HMAC secret."""

    def __init__(
        self,
        secret: bytes | str | None,
        *,
        clock: Callable[[], float] = time.time,
        leeway_s: int = 0,
    ) -> None:
        """`secret` may come later (`set_secret`), e.g. once it is read from the
        store every node shares; until then every token is refused."""
        self._key: bytes | None = None
        if secret is not None:
            self.set_secret(secret)
        self._clock = clock
        self._leeway = leeway_s

    def set_secret(self, secret: bytes | str) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < 32:
            raise ValueError("join token secret must be at least 32 bytes")
        self._key = key

    def _secret(self) -> bytes:
        if self._key is None:
            raise TokenError("token_invalid", "join tokens are not available yet")
        return self._key

    def issue(
        self,
        room_id: str,
        identity: str,
        *,
        can_publish: bool = True,
        can_subscribe: bool = True,
        ttl_s: int = 3600,
    ) -> str:
        if not valid_identity(identity):
            raise ValueError("identity must be 1-128 characters of [A-Za-z0-9_.@:+-]")
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be between 1 and {MAX_TTL_S}")
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": identity,
            "room": room_id,
            "can_publish": bool(can_publish),
            "can_subscribe": bool(can_subscribe),
            "iat": now,
            "exp": now + int(ttl_s),
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode(claims, self._secret(), algorithm="HS256")

    def verify(self, token: str, room_id: str) -> JoinGrant:
        """The grant inside `token` for `room_id`, or `TokenError`."""
        if not token or len(token) > 4096:
            raise TokenError("token_invalid", "join token missing or too long")
        try:
            claims = jwt.decode(
                token,
                self._secret(),
                algorithms=["HS256"],
                issuer=ISSUER,
                options={
                    "require": ["exp", "iat", "sub", "jti", "iss"],
                    "verify_exp": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise TokenError("token_invalid", f"join token is not valid: {exc}") from None
        room = claims.get("room")
        sub = claims.get("sub")
        exp = claims.get("exp")
        iat = claims.get("iat")
        cp = claims.get("can_publish")
        cs = claims.get("can_subscribe")
        if not (
            isinstance(room, str)
            and isinstance(sub, str)
            and valid_identity(sub)
            and isinstance(exp, int)
            and isinstance(iat, int)
            and isinstance(cp, bool)
            and isinstance(cs, bool)
        ):
            raise TokenError("token_invalid", "join token claims are malformed")
        if exp + self._leeway <= self._clock():
            raise TokenError("token_expired", "join token has expired")
        if room != room_id:
            raise TokenError("token_other_room", "join token is for another room")
        return JoinGrant(sub, room, cp, cs, iat, exp, str(claims["jti"]))
