"""The HTTP door: request ids, the one error-to-JSON middleware, body limits,
access logs and metrics, then authentication, rate limits and idempotency.

Handlers declare what they need with `@requires("read"|"write"|"admin")`;
handlers without it are public (health, docs, playback, WHIP...).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from control.domain.api_keys import ApiKeyInfo, scope_allows
from control.domain.errors import (
    Busy,
    DomainError,
    Forbidden,
    InvalidInput,
    InvalidState,
    NotFoundError,
    NotReady,
    Refused,
)
from control.http import idempotency, ratelimit
from control.http.node_key import node_of
from control.http.validation import ApiError
from control.logging import request_id_var
from control.node import Node
from control.settings import Settings
from control.siblings import CLIENT_HEADER, FORWARDED
from control.store.base import Conflict, Store, StoreError
from control.timeline import ACTOR
from ingest.addresses import client_subject

try:
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError

    _UNAVAILABLE: tuple[type[BaseException], ...] = (
        StoreError,
        _RedisConnectionError,
        _RedisTimeoutError,
    )
except ImportError:  # pragma: no cover - redis is a dependency
    _UNAVAILABLE = (StoreError,)

log = logging.getLogger("onair.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Any])

REQUEST_ID: web.RequestKey[str] = web.RequestKey("onair.request_id", str)
EXTRA_HEADERS: web.RequestKey[dict[str, str]] = web.RequestKey("onair.extra_headers", dict)
API_KEY: web.RequestKey[ApiKeyInfo] = web.RequestKey("onair.api_key", ApiKeyInfo)
PLAYBACK_PREFIX = "/play/"
_RID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

_HTTP_ERROR_TYPES = {
    400: "bad_request",
    401: "authentication_required",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    410: "gone",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "service_unavailable",
}


def requires(scope: str) -> Callable[[H], H]:
    """Mark a handler as needing an API key with at least `scope`."""

    def mark(handler: H) -> H:
        handler.onair_scope = scope  # type: ignore[attr-defined]
        return handler

    return mark


def api_key(request: web.Request) -> ApiKeyInfo:
    """The authenticated caller of a `@requires` handler."""
    return request[API_KEY]


DOMAIN_ERRORS: dict[type[DomainError], tuple[int, str]] = {
    NotFoundError: (404, "not_found"),
    InvalidState: (409, "invalid_state"),
    NotReady: (409, "not_ready"),
    Forbidden: (403, "forbidden"),
    InvalidInput: (422, "validation_error"),
    Busy: (503, "service_unavailable"),
    Refused: (400, "refused"),
}
"""The one table from what the domain refuses to an HTTP status and error type
(`Conflict`s of the store, `Contended` included, are 409 ``conflict``)."""


def api_error(exc: DomainError) -> ApiError:
    """The answer for a domain error: its status and type from `DOMAIN_ERRORS`
    (the nearest class that is listed), its message, and ``Retry-After`` where
    the same request later will likely work."""
    status, error_type = next(
        DOMAIN_ERRORS[cls] for cls in type(exc).__mro__ if cls in DOMAIN_ERRORS
    )
    if isinstance(exc, InvalidState | InvalidInput | Busy | Refused):
        error_type = exc.error_type
    if isinstance(exc, Refused) and exc.too_large:
        status = 413
    headers: dict[str, str] = {}
    if isinstance(exc, NotReady | Busy):
        headers["Retry-After"] = str(exc.retry_after_s)
    return ApiError(status, error_type, exc.message, exc.param, headers=headers)


def error_response(exc: ApiError) -> web.Response:
    import json

    resp = web.Response(
        status=exc.status, text=json.dumps(exc.body()), content_type="application/json"
    )
    for name, value in exc.headers.items():
        resp.headers[name] = value
    return resp


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    status = exc.status
    etype = _HTTP_ERROR_TYPES.get(status, "error" if status >= 500 else "bad_request")
    message = exc.reason or "Error"
    if status == 404:
        message = "No such resource"
    elif status == 413:
        message = "The request body is too large"
    keep = {
        k: v
        for k, v in exc.headers.items()
        if k.lower() in ("allow", "retry-after", "www-authenticate")
    }
    return ApiError(status, etype, message, headers=keep)


def add_extra_headers(request: web.Request, headers: dict[str, str]) -> None:
    if EXTRA_HEADERS in request:
        request[EXTRA_HEADERS].update(headers)
    else:
        request[EXTRA_HEADERS] = dict(headers)


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every response carries, including streamed and error answers."""
    rid = request.get(REQUEST_ID)
    if rid:
        response.headers["X-Request-Id"] = rid
    for name, value in request.get(EXTRA_HEADERS, {}).items():
        response.headers.setdefault(name, value)


def _route_label(request: web.Request) -> str:
    info = request.match_info
    route = info.route if info is not None else None
    resource = route.resource if route is not None else None
    if resource is None or info.http_exception is not None:
        return "unmatched"
    return resource.canonical


def request_id_for(incoming: str | None) -> str:
    """A request's id: the caller's X-Request-Id when well-formed, else a new one."""
    if incoming and _RID_RE.match(incoming):
        return incoming
    # 128 random bits like a uuid4, without its object (this runs per playback poll)
    return f"req_{random.getrandbits(128):032x}"


def access_logged(settings: Settings, route: str) -> bool:
    """Whether a request on `route` goes to the access log (playback polls, five a
    second per low-latency viewer, only when asked for: metrics count them anyway)."""
    if not settings.access_log:
        return False
    return settings.access_log_playback or not route.startswith(PLAYBACK_PREFIX)


def record_request(
    node: Node,
    *,
    method: str,
    path: str,
    route: str,
    status: int,
    elapsed_s: float,
    remote: str | None,
    request_id: str,
) -> None:
    """The metrics and the access-log line of one answered request, whoever answered
    it (this module's middleware, or the playback edge without aiohttp)."""
    registry = node.metrics
    registry.counter(
        "onair_http_requests_total", "HTTP requests", ("method", "route", "status")
    ).inc(method=method, route=route, status=str(status))
    registry.histogram(
        "onair_http_request_duration_seconds", "HTTP request latency", ("method", "route")
    ).observe(elapsed_s, method=method, route=route)
    if access_logged(node.settings, route):
        log.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed_s * 1000, 2),
                "remote": remote,
                "request_id": request_id,
            },
        )


@web.middleware
async def sibling_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost on a worker: a request another worker forwarded is seen as its
    client's (address), and marked so public rate limits are not charged twice."""
    media = node_of(request).media
    siblings = media.siblings if media is not None else None
    if siblings is not None and siblings.forwarded(request) and siblings.on_private(request):
        client = request.headers.get(CLIENT_HEADER, "")
        if client:
            request = request.clone(remote=client)
        request[FORWARDED] = True
    return await handler(request)


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: request id, errors → JSON, body limit, access log, metrics."""
    rid = request_id_for(request.headers.get("X-Request-Id"))
    request[REQUEST_ID] = rid
    token = request_id_var.set(rid)
    node = node_of(request)
    settings = node.settings
    start = time.perf_counter()
    code = 500
    try:
        try:
            length = request.content_length
            if length is not None and length > settings.body_limit_bytes and _is_limited(request):
                raise ApiError(
                    413,
                    "payload_too_large",
                    f"The request body is larger than {settings.body_limit_bytes} bytes",
                )
            response = await handler(request)
        except ApiError as exc:
            response = error_response(exc)
        except DomainError as exc:
            response = error_response(api_error(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(_from_http_exception(exc))
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Conflict:
            response = error_response(
                ApiError(409, "conflict", "The object changed concurrently; retry the request")
            )
        except _UNAVAILABLE as exc:
            log.warning("store unavailable: %r", exc, extra={"path": request.path})
            response = error_response(
                ApiError(
                    503,
                    "service_unavailable",
                    "The service is temporarily unavailable; retry shortly",
                    headers={"Retry-After": "1"},
                )
            )
        except Exception:
            log.exception("unhandled error", extra={"path": request.path, "method": request.method})
            response = error_response(ApiError(500, "internal_error", "Internal server error"))
        code = response.status
        return response
    finally:
        record_request(
            node,
            method=request.method,
            path=request.path,
            route=_route_label(request),
            status=code,
            elapsed_s=time.perf_counter() - start,
            remote=request.remote,
            request_id=rid,
        )
        request_id_var.reset(token)


def _is_limited(request: web.Request) -> bool:
    """Body limit applies to API routes; uploads/WHIP handlers set their own."""
    handler = request.match_info.handler if request.match_info else None
    return not getattr(handler, "onair_no_body_limit", False)


def no_body_limit(handler: H) -> H:
    """Exempt a handler from the JSON body limit (it must bound the body itself)."""
    handler.onair_no_body_limit = True  # type: ignore[attr-defined]
    return handler


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()


def streaming(handler: H) -> H:
    """Mark a long-lived handler (SSE): it does not hold a request slot."""
    handler.onair_streaming = True  # type: ignore[attr-defined]
    return handler


_PUBLIC_WORK: tuple[tuple[str, str, str], ...] = (
    ("GET", "/thumb/", "thumbnail"),
    ("POST", "/v1/whip", "whip"),
    ("POST", "/v1/whep/", "whep"),
    ("POST", "/beacon/", "beacon"),
)
"""Public routes whose every request costs real work (a decode, a WebRTC
session, a write): rate-limited per client address."""


def public_work(request: web.Request) -> str | None:
    path = request.path
    for method, prefix, name in _PUBLIC_WORK:
        if request.method == method and path.startswith(prefix):
            return name
    return None


@web.middleware
async def gate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authentication, rate limit, scope, then idempotency for `@requires` handlers;
    per-address rate limits for public routes that do work."""
    scope = getattr(request.match_info.handler, "onair_scope", None)
    if scope is None or request.match_info.http_exception is not None:
        work = public_work(request) if request.match_info.http_exception is None else None
        if work is not None and not request.get(FORWARDED, False):
            settings = node_of(request).settings
            policy = ratelimit.RateLimitPolicy(
                settings.public_rate_limit_per_s, settings.public_rate_limit_burst
            )
            subject = f"public:{work}:{client_subject(request.remote)}"
            add_extra_headers(
                request, await ratelimit.check(node_of(request).store, policy, subject)
            )
        return await handler(request)
    if getattr(request.match_info.handler, "onair_streaming", False):
        return await _gate(request, handler, scope)
    async with node_of(request).state.request_slots:
        return await _gate(request, handler, scope)


async def _gate(request: web.Request, handler: Handler, scope: str) -> web.StreamResponse:
    node = node_of(request)
    settings = node.settings
    store = node.store
    token = _bearer(request)
    key = await node.api_keys.authenticate(token) if token else None
    policy = ratelimit.RateLimitPolicy(settings.rate_limit_per_s, settings.rate_limit_burst)
    subject = f"key:{key.id}" if key else f"ip:{request.remote}"
    add_extra_headers(request, await ratelimit.check(store, policy, subject))
    challenge = {"WWW-Authenticate": 'Bearer realm="onair"'}
    if token is None:
        raise ApiError(
            401,
            "authentication_required",
            "Send an API key: Authorization: Bearer <key>",
            headers=challenge,
        )
    if key is None:
        raise ApiError(
            401, "invalid_api_key", "The API key is invalid or revoked", headers=challenge
        )
    if not scope_allows(key.scope, scope):
        raise ApiError(403, "permission_denied", f"This API key lacks the {scope!r} scope")
    request[API_KEY] = key
    # what this request commits goes on the timeline with the key that asked
    actor = ACTOR.set({"api_key_id": key.id, "name": key.name})
    try:
        return await _run(request, handler, store, key, settings)
    finally:
        ACTOR.reset(actor)


async def _run(
    request: web.Request, handler: Handler, store: Store, key: ApiKeyInfo, settings: Settings
) -> web.StreamResponse:
    idem = request.headers.get(idempotency.HEADER)
    if idem is not None and request.method == "POST":
        return await idempotency.run_idempotent(
            request,
            handler,
            store=store,
            api_key_id=key.id,
            idem_key=idem,
            ttl_s=settings.idempotency_ttl_s,
        )
    return await handler(request)
