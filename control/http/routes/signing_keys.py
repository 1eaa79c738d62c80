"""`/v1/signing-keys`: RSA-2048 key pairs for signed playback (RS256 JWTs).

The private key (PEM) is returned once, at creation; the store keeps only the
public key (collection ``signing_keys``, data ``{public_key, algorithm}``).
Playback verifies tokens with ``kid`` = the signing key id.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from control.auth import rfc3339
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
from control.http.validation import not_found, read_json
from control.ids import new_id
from control.store.base import Delete, Put, Record

COLLECTION = "signing_keys"


def generate_key_pair() -> tuple[str, str]:
    """(private PEM PKCS#8, public PEM SubjectPublicKeyInfo)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
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


def render(r: Record) -> dict[str, Any]:
    return {
        "id": r.id,
        "object": "signing_key",
        "algorithm": r.data.get("algorithm", "RS256"),
        "public_key": r.data["public_key"],
        "created_at": rfc3339(r.created_at),
    }


@requires("admin")
async def create(request: web.Request) -> web.Response:
    await read_json(request)
    private, public = await asyncio.to_thread(generate_key_pair)
    key_id = new_id("sigk")
    data = {"public_key": public, "algorithm": "RS256"}
    outbox = node_of(request).outbox
    await outbox.commit([Put(COLLECTION, key_id, data, expect_version=0)])
    rec = await node_of(request).store.get(COLLECTION, key_id)
    assert rec is not None
    return json_ok({**render(rec), "private_key": private}, status=201)


@requires("read")
async def list_(request: web.Request) -> web.Response:
    limit, after = page_params(request)
    store = node_of(request).store
    await check_starting_after(store, COLLECTION, after)
    page = await store.list(COLLECTION, limit=limit, starting_after=after)
    return json_ok(list_body(page, render))


@requires("read")
async def get(request: web.Request) -> web.Response:
    key_id = path_id(request)
    rec = await node_of(request).store.get(COLLECTION, key_id)
    if rec is None:
        raise not_found("signing key", key_id)
    return json_ok(render(rec))


@requires("admin")
async def delete(request: web.Request) -> web.Response:
    key_id = path_id(request)
    store = node_of(request).store
    rec = await store.get(COLLECTION, key_id)
    if rec is None:
        raise not_found("signing key", key_id)
    await node_of(request).outbox.commit([Delete(COLLECTION, key_id)])
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
