"""`/v1/api-keys`: admins create, list and revoke API keys over the API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from control.domain.api_keys import (
    COLLECTION,
    SCOPES,
    create_api_key,
    key_to_json,
    list_api_keys,
    revoke_api_key,
)
from control.http.helpers import (
    DATETIME,
    IDEMPOTENCY_PARAM,
    NULLABLE_DATETIME,
    NULLABLE_STR,
    PAGE_PARAMS,
    READ_ERRORS,
    WRITE_ERRORS,
    body,
    check_starting_after,
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
from control.http.validation import F, Obj, not_found, read_json
from control.store.base import Record

CREATE = Obj(
    {
        "scope": F(str, required=True, enum=SCOPES, description="read ⊂ write ⊂ admin"),
        "name": F(str, nullable=True, max_length=200),
    }
)


def _render(r: Record) -> dict[str, Any]:
    return key_to_json(r.id, r.created_at, r.data)


@requires("admin")
async def create_key(request: web.Request) -> web.Response:
    fields = await read_json(request, CREATE)
    store = node_of(request).store
    view, key = await create_api_key(store, fields["scope"], fields.get("name"))
    return json_ok({**view, "key": key}, status=201)


@requires("admin")
async def list_keys(request: web.Request) -> web.Response:
    limit, after = page_params(request)
    store = node_of(request).store
    await check_starting_after(store, COLLECTION, after)
    page = await list_api_keys(store, limit=limit, starting_after=after)
    return json_ok(list_body(page, _render))


@requires("admin")
async def get_key(request: web.Request) -> web.Response:
    key_id = path_id(request)
    rec = await node_of(request).store.get(COLLECTION, key_id)
    if rec is None:
        raise not_found("API key", key_id)
    return json_ok(_render(rec))


@requires("admin")
async def revoke_key(request: web.Request) -> web.Response:
    key_id = path_id(request)
    await read_json(request)
    view = await revoke_api_key(node_of(request).outbox, key_id)
    node_of(request).api_keys.invalidate(key_id)
    if view is None:
        raise not_found("API key", key_id)
    return json_ok(view)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/api-keys", create_key)
    app.router.add_get("/v1/api-keys", list_keys)
    app.router.add_get("/v1/api-keys/{id}", get_key)
    app.router.add_delete("/v1/api-keys/{id}", revoke_key)
    app.router.add_post("/v1/api-keys/{id}/revoke", revoke_key)


API_KEY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "scope", "status", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["api_key"]},
        "name": NULLABLE_STR,
        "scope": {"type": "string", "enum": list(SCOPES)},
        "prefix": NULLABLE_STR,
        "status": {"type": "string", "enum": ["active", "revoked"]},
        "created_at": DATETIME,
        "last_used_at": NULLABLE_DATETIME,
        "revoked_at": NULLABLE_DATETIME,
        "key": {"type": "string", "description": "The secret key; only in the create response"},
    },
}

_TAG = ["API keys"]
OPENAPI: dict[str, Any] = {
    "tags": [{"name": "API keys", "description": "Keys for this API (admin scope)"}],
    "paths": {
        "/v1/api-keys": {
            "post": {
                "tags": _TAG,
                "operationId": "createApiKey",
                "summary": "Create an API key (the key is shown once)",
                "parameters": [IDEMPOTENCY_PARAM],
                "requestBody": body(CREATE.json_schema()),
                "responses": {"201": resp("Created", ref("ApiKey")), **errors(*WRITE_ERRORS)},
            },
            "get": {
                "tags": _TAG,
                "operationId": "listApiKeys",
                "summary": "List API keys",
                "parameters": PAGE_PARAMS,
                "responses": {
                    "200": resp("A page of keys", list_of("ApiKey")),
                    **errors(*READ_ERRORS),
                },
            },
        },
        "/v1/api-keys/{id}": {
            "parameters": [id_param()],
            "get": {
                "tags": _TAG,
                "operationId": "getApiKey",
                "summary": "Get an API key",
                "responses": {"200": resp("The key", ref("ApiKey")), **errors(*READ_ERRORS)},
            },
            "delete": {
                "tags": _TAG,
                "operationId": "revokeApiKey",
                "summary": "Revoke an API key",
                "responses": {
                    "200": resp("The revoked key", ref("ApiKey")),
                    **errors(*WRITE_ERRORS),
                },
            },
        },
        "/v1/api-keys/{id}/revoke": {
            "parameters": [id_param()],
            "post": {
                "tags": _TAG,
                "operationId": "revokeApiKeyPost",
                "summary": "Revoke an API key",
                "parameters": [IDEMPOTENCY_PARAM],
                "responses": {
                    "200": resp("The revoked key", ref("ApiKey")),
                    **errors(*WRITE_ERRORS),
                },
            },
        },
    },
    "components": {"schemas": {"ApiKey": API_KEY_SCHEMA}},
}
