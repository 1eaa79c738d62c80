"""`GET /v1/health` (liveness + readiness: store ping, registered checks,
queue depths; 503 when not ready) and `GET /metrics` (Prometheus)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from control import appkeys
from control.api import resp
from control.metrics import CONTENT_TYPE

STARTED = time.time()
CHECK_TIMEOUT_S = 2.0


async def _run_check(fn: Any) -> bool:
    try:
        return bool(await asyncio.wait_for(fn(), CHECK_TIMEOUT_S))
    except Exception:
        return False


async def queue_depths(app: web.Application) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, depth in app[appkeys.STATE].queue_depths.items():
        try:
            out[name] = int(await asyncio.wait_for(depth(), CHECK_TIMEOUT_S))
        except Exception:
            out[name] = -1
    return out


async def health(request: web.Request) -> web.Response:
    app = request.app
    state = app[appkeys.STATE]
    checks = dict(state.health_checks)
    names = list(checks)
    results = await asyncio.gather(*(_run_check(checks[n]) for n in names))
    check_view = {n: ("ok" if ok else "failing") for n, ok in zip(names, results, strict=True)}
    queues = await queue_depths(app) if results and all(results) else {}
    ready = state.ready and not state.shutting_down and all(results)
    body = {
        "status": "ok" if ready else ("shutting_down" if state.shutting_down else "unavailable"),
        "ready": ready,
        "checks": check_view,
        "queues": queues,
        "node_id": app[appkeys.SETTINGS].node_id,
        "uptime_s": round(time.time() - STARTED, 3),
    }
    return web.json_response(
        body, status=200 if ready else 503, headers={"Cache-Control": "no-store"}
    )


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    registry = app[appkeys.METRICS]
    depths = await queue_depths(app)
    gauge = registry.gauge("onair_queue_depth", "Tasks waiting per queue", ("queue",))
    for name, depth in depths.items():
        gauge.set(depth, queue=name)
    await registry.collect()
    return web.Response(body=registry.render().encode(), headers={"Content-Type": CONTENT_TYPE})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/health", health)
    app.router.add_get("/metrics", metrics)


HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "ready", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable", "shutting_down"]},
        "ready": {"type": "boolean"},
        "checks": {
            "type": "object",
            "additionalProperties": {"type": "string", "enum": ["ok", "failing"]},
        },
        "queues": {"type": "object", "additionalProperties": {"type": "integer"}},
        "node_id": {"type": "string"},
        "uptime_s": {"type": "number"},
    },
}
OPENAPI: dict[str, Any] = {
    "tags": [{"name": "Operations", "description": "Health and metrics"}],
    "paths": {
        "/v1/health": {
            "get": {
                "tags": ["Operations"],
                "operationId": "health",
                "summary": "Liveness and readiness",
                "security": [],
                "responses": {
                    "200": resp("Ready", {"$ref": "#/components/schemas/Health"}),
                    "503": resp("Not ready", {"$ref": "#/components/schemas/Health"}),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["Operations"],
                "operationId": "metrics",
                "summary": "Prometheus metrics (text exposition format)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    },
    "components": {"schemas": {"Health": HEALTH_SCHEMA}},
}
