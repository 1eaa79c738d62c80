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
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from control.store.base import Store
from control.validation import ApiError

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
    digest = hashlib.sha256(idem_key.encode()).hexdigest()
    return f"idem:{api_key_id}:{digest}"


def _replay(stored: dict[str, object]) -> web.Response:
    headers = {"Idempotent-Replayed": "true"}
    for name, value in dict(stored.get("headers") or {}).items():  # type: ignore[call-overload]
        headers[str(name)] = str(value)
    status = int(stored["status"])  # type: ignore[call-overload]
    body = stored.get("body")
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
        return _replay(stored)

    try:
        response = await handler(request)
    except ApiError as exc:
        if exc.status >= 500:
            await store.kv_delete(key)
        else:
            await _store_result(
                store, key, fp, exc.status, json.dumps(exc.body()), "application/json", {}, ttl_s
            )
        raise
    except BaseException:
        await store.kv_delete(key)
        raise
    if response.status >= 500 or not isinstance(response, web.Response):
        await store.kv_delete(key)
        return response
    text = response.text if response.body is not None and response.status != 204 else ""
    keep = {k: v for k, v in response.headers.items() if k.lower() in ("location",)}
    await _store_result(
        store, key, fp, response.status, text or "", response.content_type, keep, ttl_s
    )
    return response


async def _store_result(
    store: Store,
    key: str,
    fp: str,
    status: int,
    body: str,
    content_type: str,
    headers: dict[str, str],
    ttl_s: float,
) -> None:
    doc = {
        "state": "done",
        "fp": fp,
        "status": status,
        "body": body,
        "content_type": content_type,
        "headers": headers,
        "stored_at": time.time(),
    }
    await store.kv_set(key, json.dumps(doc), ttl_s=ttl_s)
