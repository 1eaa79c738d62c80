"""Identifier and secret helpers shared by every part of `control`.

Ids are a short type prefix plus 24 random URL-safe characters drawn from
`secrets` (about 143 bits), e.g. ``ls_4fQz...``. Secrets are a prefix plus
URL-safe base64 of `nbytes` random bytes. Nothing here is time-ordered on
purpose: lists order by `created_at`, never by id.
"""

from __future__ import annotations

import base64
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
ID_RANDOM_CHARS = 24


def _join(prefix: str, body: str) -> str:
    if not prefix:
        return body
    return prefix + body if prefix.endswith("_") else f"{prefix}_{body}"


def _random_chars(n: int) -> str:
    # rejection sampling over random bytes: unbiased, and much cheaper than
    # one secrets.choice() per character
    out: list[str] = []
    while len(out) < n:
        for b in secrets.token_bytes(n + 8):
            if b < 248:  # 248 = 4 * 62
                out.append(_ALPHABET[b % 62])
                if len(out) == n:
                    break
    return "".join(out)


def new_id(prefix: str, nchars: int = ID_RANDOM_CHARS) -> str:
    """``new_id("ls")`` → ``"ls_" + 24 random alphanumerics`` (URL-safe)."""
    return _join(prefix, _random_chars(nchars))


def new_secret(prefix: str, nbytes: int = 32) -> str:
    """``new_secret("sk", 32)`` → ``"sk_" + urlsafe-base64(32 random bytes)`` without padding."""
    body = base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).rstrip(b"=").decode("ascii")
    return _join(prefix, body)
