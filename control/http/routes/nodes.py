"""`/v1/nodes` (admin): the nodes sharing this store — where each is reached,
since when, whether it drains, and its load (`control.registry`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from control.http.helpers import DATETIME, READ_ERRORS, errors, json_ok, ref, resp
from control.http.middleware import requires
from control.http.node_key import node_of
from control.http.validation import reject_unknown_query
from control.registry import alive, node_view


@requires("admin")
async def list_nodes(request: web.Request) -> web.Response:
    reject_unknown_query(request, ())
    nodes = await alive(node_of(request).store)
    return json_ok({"object": "list", "data": [node_view(r) for r in nodes], "has_more": False})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/nodes", list_nodes)


NODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "url", "started_at", "last_seen", "draining", "load"],
    "properties": {
        "id": {"type": "string", "description": "ONAIR_NODE_ID"},
        "object": {"type": "string", "enum": ["node"]},
        "url": {"type": "string", "description": "ONAIR_NODE_URL: where other nodes reach it"},
        "started_at": DATETIME,
        "last_seen": DATETIME,
        "draining": {"type": "boolean"},
        "load": {
            "type": "object",
            "required": ["cpu", "streams", "viewers", "rooms"],
            "properties": {
                "cpu": {"type": "number", "description": "Cores busy (1.0 = one core)"},
                "streams": {"type": "integer", "description": "Live publications it ingests"},
                "viewers": {
                    "type": "integer",
                    "description": "WebRTC viewers plus open HTTP connections",
                },
                "rooms": {"type": "integer", "description": "Rooms it hosts"},
            },
        },
    },
}
OPENAPI: dict[str, Any] = {
    "tags": [{"name": "Cluster", "description": "The nodes sharing this store"}],
    "paths": {
        "/v1/nodes": {
            "get": {
                "tags": ["Cluster"],
                "operationId": "listNodes",
                "summary": "The nodes alive now (heartbeat every 2 s, gone after 6 s)",
                "responses": {
                    "200": resp(
                        "The nodes",
                        {
                            "type": "object",
                            "required": ["data", "has_more"],
                            "properties": {
                                "object": {"type": "string", "enum": ["list"]},
                                "data": {"type": "array", "items": ref("Node")},
                                "has_more": {"type": "boolean"},
                            },
                        },
                    ),
                    **errors(*READ_ERRORS),
                },
            }
        }
    },
    "components": {"schemas": {"Node": NODE_SCHEMA}},
}
