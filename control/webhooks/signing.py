"""Standard Webhooks signing (https://www.standardwebhooks.com/), sans-IO.

Headers: ``webhook-id`` (the event id), ``webhook-timestamp`` (unix seconds),
``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256>`` entries over
``f"{id}.{timestamp}.{body}"``. A secret is ``whsec_<base64 key>``; the HMAC
key is the decoded base64 part. During secret rotation the message is signed
with every live secret (one ``v1,`` entry each), so receivers holding either
secret verify it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


class SignatureError(Exception):
    pass


def new_webhook_secret(nbytes: int = 24) -> str:
    """A fresh ``whsec_...`` secret (24 random bytes, standard base64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (a bare base64 string is accepted too)."""
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError("webhook secret is not valid base64") from e


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature entry, ``v1,<base64>``."""
    mac = hmac.new(secret_key(secret), digestmod=hashlib.sha256)
    mac.update(f"{msg_id}.{timestamp}.".encode())
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signature_header(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


def webhook_headers(
    secrets_: Sequence[str], msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for `body` signed with each secret."""
    if not secrets_:
        raise SignatureError("no secret to sign with")
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature_header(secrets_, msg_id, ts, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise SignatureError unless one ``v1`` signature matches and the timestamp is fresh."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        ts = int(lower["webhook-timestamp"])
        sigs = lower["webhook-signature"]
    except (KeyError, ValueError) as e:
        raise SignatureError("missing or malformed webhook headers") from e
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise SignatureError("timestamp outside the tolerance")
    expected = sign(secret, msg_id, ts, body).split(",", 1)[1]
    for entry in sigs.split(" "):
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return
    raise SignatureError("no matching signature")
