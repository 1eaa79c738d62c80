"""`/v1/webhook-endpoints` and `/v1/webhook-deliveries`: endpoint CRUD, secret
rotation (the old secret keeps signing for 24 h), the per-endpoint delivery
log and manual retry. Delivery itself is control.webhooks (outbox worker).

Records (shared with control.webhooks): collection ``webhook_endpoints`` with
data ``{url, events, secret, status, description, previous_secret,
previous_secret_expires_at}``; deliveries in ``webhook_deliveries`` tagged
``endpoint_id``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from control.domain.api_keys import rfc3339
from control.domain.webhook_endpoints import ENDPOINTS, WebhookEndpoints, endpoint_view
from control.http.helpers import (
    DATETIME,
    IDEMPOTENCY_PARAM,
    NULLABLE_DATETIME,
    NULLABLE_STR,
    PAGE_PARAMS,
    READ_ERRORS,
    WRITE_ERRORS,
    body,
    errors,
    id_param,
    json_ok,
    list_body,
    list_of,
    page_params,
    path_id,
    ref,
    resp,
)
from control.http.middleware import requires
from control.http.node_key import node_of
from control.http.validation import ApiError, F, Obj, not_found, read_json
from control.store.base import NotFound, Record
from control.webhooks.model import DELIVERIES

EVENT_PATTERN = r"^(\*|[a-z_]+\.(\*|[a-z_]+))$"

_EVENTS = F(
    list,
    items=F(str, pattern=EVENT_PATTERN, max_length=100),
    max_items=100,
    description="Event types to send (e.g. live_stream.active, asset.*); empty or absent = all",
)
URL_PATTERN = r"^https?://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[^\s]*)?$"
_URL = F(
    str,
    max_length=2048,
    min_length=8,
    pattern=URL_PATTERN,
    description="http(s) URL receiving POSTs",
)
CREATE = Obj(
    {
        "url": F(str, required=True, max_length=2048, min_length=8, pattern=URL_PATTERN),
        "events": _EVENTS,
        "description": F(str, nullable=True, max_length=500),
        "status": F(str, enum=("enabled", "disabled"), default="enabled"),
    }
)
UPDATE = Obj(
    {
        "url": _URL,
        "events": _EVENTS,
        "description": F(str, nullable=True, max_length=500),
        "status": F(str, enum=("enabled", "disabled")),
    }
)


def _endpoints(request: web.Request) -> WebhookEndpoints:
    return node_of(request).webhook_endpoints


def _ts(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return rfc3339(float(value))
    return value if isinstance(value, str) else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _attempt(a: Any) -> dict[str, Any]:
    a = a if isinstance(a, dict) else {}
    return {
        "at": _ts(a.get("at")),
        "status_code": _int_or_none(a.get("status_code")),
        "error": a.get("error") if isinstance(a.get("error"), str) else None,
        "duration_ms": a.get("duration_ms")
        if isinstance(a.get("duration_ms"), int | float)
        else None,
        "manual": bool(a.get("manual", False)),
    }


def render_delivery(r: Record) -> dict[str, Any]:
    d = r.data
    status = d.get("status")
    raw_attempts = d.get("attempts")
    attempts: list[Any] = raw_attempts if isinstance(raw_attempts, list) else []
    return {
        "id": r.id,
        "object": "webhook_delivery",
        "endpoint_id": d.get("endpoint_id"),
        "event_id": d.get("event_id"),
        "event_type": d.get("event_type"),
        "status": status if isinstance(status, str) else "pending",
        "attempt_count": _int_or_none(d.get("attempt_count")) or 0,
        "last_status_code": _int_or_none(d.get("last_status_code")),
        "last_error": d.get("last_error") if isinstance(d.get("last_error"), str) else None,
        "first_attempt_at": _ts(d.get("first_attempt_at")),
        "next_attempt_at": _ts(d.get("next_attempt_at")),
        "completed_at": _ts(d.get("completed_at")),
        "attempts": [_attempt(a) for a in attempts],
        "created_at": rfc3339(r.created_at),
    }


@requires("admin")
async def create(request: web.Request) -> web.Response:
    fields = await read_json(request, CREATE)
    rec = await _endpoints(request).create(
        url=fields["url"],
        events=fields.get("events") or [],
        description=fields.get("description"),
        status=fields["status"],
    )
    return json_ok(endpoint_view(rec, secret=True), status=201)


@requires("admin")
async def list_(request: web.Request) -> web.Response:
    limit, after = page_params(request)
    store = node_of(request).store
    if after is not None and await store.get(ENDPOINTS, after) is None:
        raise ApiError(
            400, "invalid_parameter", "starting_after does not name an endpoint", "starting_after"
        )
    page = await store.list(ENDPOINTS, limit=limit, starting_after=after)
    return json_ok(list_body(page, endpoint_view))


@requires("admin")
async def get(request: web.Request) -> web.Response:
    return json_ok(endpoint_view(await _endpoints(request).get(path_id(request))))


@requires("admin")
async def update(request: web.Request) -> web.Response:
    fields = await read_json(request, UPDATE, partial=True)
    return json_ok(endpoint_view(await _endpoints(request).update(path_id(request), fields)))


@requires("admin")
async def rotate_secret(request: web.Request) -> web.Response:
    await read_json(request)
    rec = await _endpoints(request).rotate_secret(path_id(request))
    return json_ok(endpoint_view(rec, secret=True))


@requires("admin")
async def delete(request: web.Request) -> web.Response:
    await _endpoints(request).delete(path_id(request))
    return web.Response(status=204)


@requires("admin")
async def deliveries(request: web.Request) -> web.Response:
    limit, after = page_params(request)
    rec = await _endpoints(request).get(path_id(request))
    store = node_of(request).store
    if after is not None and await store.get(DELIVERIES, after) is None:
        raise ApiError(
            400, "invalid_parameter", "starting_after does not name a delivery", "starting_after"
        )
    page = await store.list(
        DELIVERIES, limit=limit, starting_after=after, where=("endpoint_id", rec.id)
    )
    return json_ok(list_body(page, render_delivery))


@requires("admin")
async def retry(request: web.Request) -> web.Response:
    await read_json(request)
    delivery_id = path_id(request)
    try:
        fresh = await node_of(request).webhooks.retry_delivery(delivery_id)
    except NotFound:
        raise not_found("webhook delivery", delivery_id) from None
    return json_ok(render_delivery(fresh), status=202)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/webhook-endpoints", create)
    r.add_get("/v1/webhook-endpoints", list_)
    r.add_get("/v1/webhook-endpoints/{id}", get)
    r.add_patch("/v1/webhook-endpoints/{id}", update)
    r.add_delete("/v1/webhook-endpoints/{id}", delete)
    r.add_post("/v1/webhook-endpoints/{id}/rotate-secret", rotate_secret)
    r.add_get("/v1/webhook-endpoints/{id}/deliveries", deliveries)
    r.add_post("/v1/webhook-deliveries/{id}/retry", retry)


ENDPOINT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "url", "events", "status", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["webhook_endpoint"]},
        "url": {"type": "string"},
        "events": {"type": "array", "items": {"type": "string"}},
        "description": NULLABLE_STR,
        "status": {"type": "string", "enum": ["enabled", "disabled"]},
        "secret": {"type": "string", "description": "whsec_…; only on create and rotate-secret"},
        "created_at": DATETIME,
        "secret_rotated_at": NULLABLE_DATETIME,
    },
}
_ATTEMPT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "at": NULLABLE_STR,
        "status_code": {"type": ["integer", "null"]},
        "error": NULLABLE_STR,
        "duration_ms": {"type": ["number", "null"]},
        "manual": {"type": "boolean"},
    },
}
DELIVERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "status", "attempt_count", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["webhook_delivery"]},
        "endpoint_id": NULLABLE_STR,
        "event_id": NULLABLE_STR,
        "event_type": NULLABLE_STR,
        "status": {"type": "string", "description": "pending | succeeded | failed"},
        "attempt_count": {"type": "integer", "minimum": 0},
        "last_status_code": {"type": ["integer", "null"]},
        "last_error": NULLABLE_STR,
        "first_attempt_at": NULLABLE_STR,
        "next_attempt_at": NULLABLE_STR,
        "completed_at": NULLABLE_STR,
        "attempts": {"type": "array", "items": _ATTEMPT},
        "created_at": DATETIME,
    },
}
_TAG = ["Webhooks"]
_ONE = {"200": resp("The endpoint", ref("WebhookEndpoint"))}
OPENAPI: dict[str, Any] = {
    "tags": [{"name": "Webhooks", "description": "Standard Webhooks delivery of events"}],
    "paths": {
        "/v1/webhook-endpoints": {
            "post": {
                "tags": _TAG,
                "operationId": "createWebhookEndpoint",
                "summary": "Create an endpoint (the secret is shown once)",
                "parameters": [IDEMPOTENCY_PARAM],
                "requestBody": body(CREATE.json_schema()),
                "responses": {
                    "201": resp("Created", ref("WebhookEndpoint")),
                    **errors(*WRITE_ERRORS),
                },
            },
            "get": {
                "tags": _TAG,
                "operationId": "listWebhookEndpoints",
                "summary": "List endpoints",
                "parameters": PAGE_PARAMS,
                "responses": {
                    "200": resp("A page", list_of("WebhookEndpoint")),
                    **errors(*READ_ERRORS),
                },
            },
        },
        "/v1/webhook-endpoints/{id}": {
            "parameters": [id_param()],
            "get": {
                "tags": _TAG,
                "operationId": "getWebhookEndpoint",
                "summary": "Get an endpoint",
                "responses": {**_ONE, **errors(*READ_ERRORS)},
            },
            "patch": {
                "tags": _TAG,
                "operationId": "updateWebhookEndpoint",
                "summary": "Update an endpoint",
                "requestBody": body(UPDATE.json_schema(), required=False),
                "responses": {**_ONE, **errors(*WRITE_ERRORS)},
            },
            "delete": {
                "tags": _TAG,
                "operationId": "deleteWebhookEndpoint",
                "summary": "Delete an endpoint",
                "responses": {"204": {"description": "Deleted"}, **errors(*WRITE_ERRORS)},
            },
        },
        "/v1/webhook-endpoints/{id}/rotate-secret": {
            "parameters": [id_param()],
            "post": {
                "tags": _TAG,
                "operationId": "rotateWebhookSecret",
                "summary": "New secret; the previous one also signs for 24 h",
                "parameters": [IDEMPOTENCY_PARAM],
                "responses": {**_ONE, **errors(*WRITE_ERRORS)},
            },
        },
        "/v1/webhook-endpoints/{id}/deliveries": {
            "parameters": [id_param()],
            "get": {
                "tags": _TAG,
                "operationId": "listWebhookDeliveries",
                "summary": "The delivery log of an endpoint, newest first",
                "parameters": PAGE_PARAMS,
                "responses": {
                    "200": resp("A page", list_of("WebhookDelivery")),
                    **errors(*READ_ERRORS),
                },
            },
        },
        "/v1/webhook-deliveries/{id}/retry": {
            "parameters": [id_param()],
            "post": {
                "tags": _TAG,
                "operationId": "retryWebhookDelivery",
                "summary": "Attempt a delivery again now",
                "parameters": [IDEMPOTENCY_PARAM],
                "responses": {
                    "202": resp("Queued", ref("WebhookDelivery")),
                    **errors(*WRITE_ERRORS),
                },
            },
        },
    },
    "components": {
        "schemas": {"WebhookEndpoint": ENDPOINT_SCHEMA, "WebhookDelivery": DELIVERY_SCHEMA}
    },
}
