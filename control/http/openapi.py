"""The OpenAPI 3.1 document, merged from every API module's `OPENAPI`, served
at `GET /v1/openapi.json`, and a self-contained docs page at `GET /v1/docs`."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from aiohttp import web

from control.http.helpers import error_components, resp

DOCS_HTML = Path(__file__).parent / "static" / "docs.html"
VERSION = "1.0.0"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "examples": ["validation_error"]},
                "message": {"type": "string"},
                "param": {"type": "string"},
            },
        }
    },
}

DESCRIPTION = """\
The onair control plane. JSON in and out; times are RFC 3339 UTC.

* **Auth**: `Authorization: Bearer <api key>`; scopes read ⊂ write ⊂ admin (401 vs 403).
* **Errors**: `{"error": {"type", "message", "param"?}}`; every response has `X-Request-Id`.
* **Idempotency**: any POST may carry `Idempotency-Key` (≤ 255 chars, kept 24 h per API key);
  a repeat replays the first answer with `Idempotent-Replayed: true`, a different body → 422
  `idempotency_error`, a repeat while the first runs → 409 `idempotency_key_in_use`.
* **Rate limits**: token bucket per API key; `RateLimit-Policy` and `RateLimit` headers on
  every response; 429 with `Retry-After`.
* **Lists**: `?limit=` (≤ 100) and `?starting_after=<id>` → `{"data": [...], "has_more"}`.
"""


def _merge(dst: dict[str, Any], src: dict[str, Any], where: str) -> None:
    for key, value in src.items():
        if key in dst:
            raise ValueError(f"OpenAPI: {where}{key} is defined twice")
        dst[key] = value


def build_document(
    modules: Iterable[ModuleType], *, server_url: str | None = None
) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    tags: list[dict[str, Any]] = []
    for module in modules:
        part = getattr(module, "OPENAPI", None)
        if not part:
            continue
        part = copy.deepcopy(part)
        _merge(paths, part.get("paths", {}), "paths.")
        _merge(schemas, part.get("components", {}).get("schemas", {}), "schemas.")
        tags.extend(t for t in part.get("tags", []) if t["name"] != "Operations")
    paths["/v1/openapi.json"] = {
        "get": {
            "tags": ["Operations"],
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": resp("OpenAPI 3.1", {"type": "object"})},
        }
    }
    paths["/v1/docs"] = {
        "get": {
            "tags": ["Operations"],
            "operationId": "docs",
            "summary": "Readable API documentation",
            "security": [],
            "responses": {
                "200": {
                    "description": "HTML",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "onair API", "version": VERSION, "description": DESCRIPTION},
        "tags": [*tags, {"name": "Operations", "description": "Health, metrics, this document"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "responses": error_components(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "onair_sk_…"}
            },
        },
        "security": [{"bearerAuth": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


def add_routes(app: web.Application, modules: Iterable[ModuleType]) -> None:
    modules = list(modules)
    cache: dict[str, bytes] = {}

    async def openapi_json(request: web.Request) -> web.Response:
        if "doc" not in cache:
            from control.http.node_key import node_of

            doc = build_document(modules, server_url=node_of(request).settings.base_url)
            cache["doc"] = json.dumps(doc, indent=1).encode()
        return web.Response(body=cache["doc"], content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        return web.Response(body=DOCS_HTML.read_bytes(), content_type="text/html")

    app.router.add_get("/v1/openapi.json", openapi_json)
    app.router.add_get("/v1/docs", docs)
