"""`/v1/signing-keys`: RSA-2048 key pairs for signed playback (RS256 JWTs).

The records and the keys themselves are `control.domain.signing_keys`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from control.domain.signing_keys import SIGNING_KEYS, SigningKeys, signing_key_view
from control.http.helpers import (
    DATETIME,
    IDEMPOTENCY_PARAM,
    PAGE_PARAMS,
    READ_ERRORS,
    WRITE_ERRORS,
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
from control.http.validation import read_json


def _keys(request: web.Request) -> SigningKeys:
    return SigningKeys(node_of(request).outbox)


@requires("admin")
async def create(request: web.Request) -> web.Response:
    await read_json(request)
    rec, private = await _keys(request).create()
    return json_ok({**signing_key_view(rec), "private_key": private}, status=201)


@requires("read")
async def list_(request: web.Request) -> web.Response:
    limit, after = page_params(request)
    store = node_of(request).store
    await check_starting_after(store, SIGNING_KEYS, after)
    page = await store.list(SIGNING_KEYS, limit=limit, starting_after=after)
    return json_ok(list_body(page, signing_key_view))


@requires("read")
async def get(request: web.Request) -> web.Response:
    return json_ok(signing_key_view(await _keys(request).get(path_id(request))))


@requires("admin")
async def delete(request: web.Request) -> web.Response:
    await _keys(request).delete(path_id(request))
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/signing-keys", create)
    app.router.add_get("/v1/signing-keys", list_)
    app.router.add_get("/v1/signing-keys/{id}", get)
    app.router.add_delete("/v1/signing-keys/{id}", delete)


SIGNING_KEY: dict[str, Any] = {
    "type": "object",
    "required": ["id", "algorithm", "public_key", "created_at"],
    "properties": {
        "id": {"type": "string", "description": "Use as the JWT `kid` header"},
        "object": {"type": "string", "enum": ["signing_key"]},
        "algorithm": {"type": "string", "enum": ["RS256"]},
        "public_key": {"type": "string", "description": "PEM"},
        "private_key": {"type": "string", "description": "PEM; only in the create response"},
        "created_at": DATETIME,
    },
}
_TAG = ["Signing keys"]
OPENAPI: dict[str, Any] = {
    "tags": [{"name": "Signing keys", "description": "Keys that sign playback tokens"}],
    "paths": {
        "/v1/signing-keys": {
            "post": {
                "tags": _TAG,
                "operationId": "createSigningKey",
                "summary": "Create a signing key (the private key is shown once)",
                "parameters": [IDEMPOTENCY_PARAM],
                "responses": {
                    "201": resp(
                        "Created",
                        ref("SigningKey"),
                        links={
                            "GetSigningKey": "getSigningKey",
                            "DeleteSigningKey": "deleteSigningKey",
                        },
                    ),
                    **errors(*WRITE_ERRORS),
                },
            },
            "get": {
                "tags": _TAG,
                "operationId": "listSigningKeys",
                "summary": "List signing keys",
                "parameters": PAGE_PARAMS,
                "responses": {"200": resp("A page", list_of("SigningKey")), **errors(*READ_ERRORS)},
            },
        },
        "/v1/signing-keys/{id}": {
            "parameters": [id_param()],
            "get": {
                "tags": _TAG,
                "operationId": "getSigningKey",
                "summary": "Get a signing key (public half)",
                "responses": {"200": resp("The key", ref("SigningKey")), **errors(*READ_ERRORS)},
            },
            "delete": {
                "tags": _TAG,
                "operationId": "deleteSigningKey",
                "summary": "Delete a signing key (its tokens stop working)",
                "responses": {"204": {"description": "Deleted"}, **errors(*WRITE_ERRORS)},
            },
        },
    },
    "components": {"schemas": {"SigningKey": SIGNING_KEY}},
}
