"""Idempotency-Key with Stripe semantics, held in the Store so it works across nodes.

For a POST carrying ``Idempotency-Key`` (1 to 255 printable ASCII chars), scoped
to the API key:

* the first request takes a lock (``kv_set_if_absent``) holding the request
  fingerprint (SHA-256 of method, path with query, and body), runs, and stores
  its status, body and content type for ``ttl_s`` (≥ 24 h);
* a repeat with the same fingerprint gets the stored answer and
  ``Idempotent-Replayed: true``;
* a repeat with a different fingerprint gets 422 ``idempotency_error``;
* a repeat while the first is still running gets 409 ``idempotency_key_in_use``.

Server errors (5xx) are not stored: the lock is dropped so the client can retry.

Stored answers may hold secrets shown once (a new API key, a signing key's
private half, a webhook secret, a stream key), so the store never sees them in
plaintext: the body is sealed with AES-256-GCM under a key derived (HKDF) from
the Idempotency-Key itself, which only the client holds, and the record is
found by a hash of that key under another derivation. A replay with the key
opens the body; a copy of the database or of Redis does not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from control.http.validation import ApiError
from control.store.base import Store

HEADER = "Idempotency-Key"
MAX_KEY_LEN = 255
LOCK_TTL_S = 120.0
"""How long an in-flight lock survives a crashed node."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def validate_key(value: str) -> str:
    if not value or len(value) > MAX_KEY_LEN or not all(0x20 < ord(c) < 0x7F for c in value):
        raise ApiError(
            400,
            "invalid_parameter",
            f"{HEADER} must be 1 to {MAX_KEY_LEN} printable ASCII characters",
            HEADER,
        )
    return value


def fingerprint(method: str, path_qs: str, body: bytes) -> str:
    h = hashlib.sha256()
    h.update(method.upper().encode())
    h.update(b"\0")
    h.update(path_qs.encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update(body)
    return h.hexdigest()


def storage_key(api_key_id: str, idem_key: str) -> str:
    # the sealing key is an HKDF of the Idempotency-Key with its own salt and
    # info, so this digest does not give it away
    digest = hashlib.sha256(idem_key.encode()).hexdigest()
    return f"idem:{api_key_id}:{digest}"


def _sealing_key(api_key_id: str, idem_key: str) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=api_key_id.encode(),
        info=b"onair idempotency body",
    ).derive(idem_key.encode())
    return AESGCM(derived)


def seal(api_key_id: str, idem_key: str, plaintext: str) -> str:
    nonce = os.urandom(12)
    sealed = _sealing_key(api_key_id, idem_key).encrypt(
        nonce, plaintext.encode(), api_key_id.encode()
    )
    return base64.b64encode(nonce + sealed).decode()


def unseal(api_key_id: str, idem_key: str, sealed: str) -> str:
    raw = base64.b64decode(sealed)
    return (
        _sealing_key(api_key_id, idem_key).decrypt(raw[:12], raw[12:], api_key_id.encode()).decode()
    )


def _replay(stored: dict[str, object], api_key_id: str, idem_key: str) -> web.Response:
    headers = {"Idempotent-Replayed": "true"}
    for name, value in dict(stored.get("headers") or {}).items():  # type: ignore[call-overload]
        headers[str(name)] = str(value)
    status = int(stored["status"])  # type: ignore[call-overload]
    sealed = stored.get("sealed")
    body = unseal(api_key_id, idem_key, str(sealed)) if sealed else stored.get("body")
    return web.Response(
        status=status,
        body=None if status == 204 else str(body or "").encode(),
        content_type=None
        if status == 204
        else str(stored.get("content_type") or "application/json"),
        headers=headers,
    )


async def run_idempotent(
    request: web.Request,
    handler: Handler,
    *,
    store: Store,
    api_key_id: str,
    idem_key: str,
    ttl_s: float,
) -> web.StreamResponse:
    idem_key = validate_key(idem_key)
    body = await request.read()
    fp = fingerprint(request.method, request.path_qs, body)
    key = storage_key(api_key_id, idem_key)
    lock = json.dumps({"state": "in_flight", "fp": fp, "started_at": time.time()})
    if not await store.kv_set_if_absent(key, lock, ttl_s=LOCK_TTL_S):
        raw = await store.kv_get(key)
        if raw is None:  # expired between the two calls: treat as in flight
            raise ApiError(
                409, "idempotency_key_in_use", "A request with this Idempotency-Key is in progress"
            )
        stored = json.loads(raw)
        if stored.get("fp") != fp:
            raise ApiError(
                422,
                "idempotency_error",
                "This Idempotency-Key was already used with a different request",
                HEADER,
            )
        if stored.get("state") != "done":
            raise ApiError(
                409,
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still in progress; retry later",
            )
        return _replay(stored, api_key_id, idem_key)

    try:
        response = await handler(request)
    except ApiError as exc:
        if exc.status >= 500:
            await store.kv_delete(key)
        else:
            sealed = seal(api_key_id, idem_key, json.dumps(exc.body()))
            await _store_result(store, key, fp, exc.status, sealed, "application/json", {}, ttl_s)
        raise
    except BaseException:
        await store.kv_delete(key)
        raise
    if response.status >= 500 or not isinstance(response, web.Response):
        await store.kv_delete(key)
        return response
    text = response.text if response.body is not None and response.status != 204 else ""
    keep = {k: v for k, v in response.headers.items() if k.lower() in ("location",)}
    sealed = seal(api_key_id, idem_key, text or "")
    await _store_result(store, key, fp, response.status, sealed, response.content_type, keep, ttl_s)
    return response


async def _store_result(
    store: Store,
    key: str,
    fp: str,
    status: int,
    sealed: str,
    content_type: str,
    headers: dict[str, str],
    ttl_s: float,
) -> None:
    doc = {
        "state": "done",
        "fp": fp,
        "status": status,
        "sealed": sealed,
        "content_type": content_type,
        "headers": headers,
        "stored_at": time.time(),
    }
    await store.kv_set(key, json.dumps(doc), ttl_s=ttl_s)
