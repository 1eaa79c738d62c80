"""`GET /v1/health` (liveness + readiness: store ping, registered checks,
queue depths; 503 when not ready) and `GET /metrics` (Prometheus).

Health answers from a snapshot at most `HEALTH_MAX_AGE_S` old, computed by one
request at a time, so a flood of health probes costs the store one round of
checks per second. `/metrics` can require a bearer token
(``ONAIR_METRICS_TOKEN``) or move to a port of its own (``ONAIR_METRICS_PORT``,
`metrics_app`), where only operators reach it.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from aiohttp import web

from control.http.helpers import ref, resp
from control.http.node_key import node_of
from control.metrics import CONTENT_TYPE
from control.node import Node

STARTED = time.time()
CHECK_TIMEOUT_S = 2.0
HEALTH_MAX_AGE_S = 1.0


async def _run_check(fn: Any) -> bool:
    try:
        return bool(await asyncio.wait_for(fn(), CHECK_TIMEOUT_S))
    except Exception:
        return False


async def queue_depths(node: Node) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, depth in node.state.queue_depths.items():
        try:
            out[name] = int(await asyncio.wait_for(depth(), CHECK_TIMEOUT_S))
        except Exception:
            out[name] = -1
    return out


async def health(request: web.Request) -> web.Response:
    state = node_of(request).state
    cached = state.health_snapshot
    if cached is None or time.monotonic() - cached[0] > HEALTH_MAX_AGE_S:
        if state.health_refresh is None:
            state.health_refresh = asyncio.ensure_future(_snapshot(node_of(request)))
            state.health_refresh.add_done_callback(lambda _: setattr(state, "health_refresh", None))
        cached = await asyncio.shield(state.health_refresh)
    _, body, status = cached
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


async def _snapshot(node: Node) -> tuple[float, dict[str, Any], int]:
    state = node.state
    checks = dict(state.health_checks)
    names = list(checks)
    results = await asyncio.gather(*(_run_check(checks[n]) for n in names))
    check_view = {n: ("ok" if ok else "failing") for n, ok in zip(names, results, strict=True)}
    queues = await queue_depths(node) if results and all(results) else {}
    ready = state.ready and not state.shutting_down and not state.draining and all(results)
    if ready:
        status = "ok"
    elif state.shutting_down:
        status = "shutting_down"
    elif state.draining:
        status = "draining"  # alive, but load balancers should send new work elsewhere
    else:
        status = "unavailable"
    body = {
        "status": status,
        "ready": ready,
        "checks": check_view,
        "queues": queues,
        "node_id": node.settings.node_id,
        "uptime_s": round(time.time() - STARTED, 3),
    }
    snapshot = (time.monotonic(), body, 200 if ready else 503)
    state.health_snapshot = snapshot
    return snapshot


async def metrics(request: web.Request) -> web.Response:
    settings = node_of(request).settings
    if settings.metrics_port is not None:
        raise web.HTTPNotFound()  # served on ONAIR_METRICS_PORT only
    return await render_metrics(node_of(request), request)


async def render_metrics(node: Node, request: web.Request) -> web.Response:
    token = node.settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.json_response(
                {"error": {"type": "authentication_required", "message": "metrics token required"}},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    registry = node.metrics
    depths = await queue_depths(node)
    gauge = registry.gauge("onair_queue_depth", "Tasks waiting per queue", ("queue",))
    for name, depth in depths.items():
        gauge.set(depth, queue=name)
    await registry.collect()
    return web.Response(body=registry.render().encode(), headers={"Content-Type": CONTENT_TYPE})


def metrics_app(node: Node) -> web.Application:
    """`/metrics` of `node` alone, for ONAIR_METRICS_PORT."""
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return await render_metrics(node, request)

    app.router.add_get("/metrics", handler)
    return app


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/health", health)
    app.router.add_get("/metrics", metrics)


HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "ready", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable", "shutting_down", "draining"]},
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
                "summary": "Prometheus metrics (text exposition format); needs "
                "`Authorization: Bearer <ONAIR_METRICS_TOKEN>` when that is set, and is on "
                "ONAIR_METRICS_PORT instead when that is set",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": resp("ONAIR_METRICS_TOKEN is set and was not sent", ref("Error")),
                    "404": resp(
                        "ONAIR_METRICS_PORT is set: /metrics is served there", ref("Error")
                    ),
                },
            }
        },
    },
    "components": {"schemas": {"Health": HEALTH_SCHEMA}},
}
