"""The playback edge in the service: `realtime.hls.edge` wired to the control plane.

Owns the three things the edge needs from the service: playback resolution
(policy and token checks, through `Playback.edge_route`), the request id, and
the per-request metrics and access log that aiohttp's request middleware
would otherwise record. `onair serve` listens with `edge_site`.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from control import appkeys
from control.middleware import access_logged, request_id_for
from realtime.hls.edge import EdgeRequest, EdgeRoute, EdgeSite

log = logging.getLogger("onair.http")


def edge_site(runner: web.AppRunner, host: str | None, port: int, **kwargs: Any) -> EdgeSite:
    """A TCP site for `runner`'s service app whose live playback goes through the edge."""
    app = runner.app
    settings = app[appkeys.SETTINGS]
    registry = app[appkeys.METRICS]
    requests = registry.counter(
        "onair_http_requests_total", "HTTP requests", ("method", "route", "status")
    )
    durations = registry.histogram(
        "onair_http_request_duration_seconds", "HTTP request latency", ("method", "route")
    )

    def resolve(playback_id: str, token: str | None) -> Any:
        return app[appkeys.PLAYBACK].edge_route(playback_id, token)

    def observe(req: EdgeRequest) -> None:
        requests.inc(method=req.method, route=req.route, status=str(req.status))
        durations.observe(req.duration_s, method=req.method, route=req.route)
        if access_logged(settings, req.path):
            log.info(
                "%s %s %s",
                req.method,
                req.path,
                req.status,
                extra={
                    "method": req.method,
                    "path": req.path,
                    "route": req.route,
                    "status": req.status,
                    "duration_ms": round(req.duration_s * 1000, 2),
                    "remote": req.remote,
                    "request_id": req.request_id,
                },
            )

    return EdgeSite(
        runner, host, port, resolve=resolve, observe=observe, request_id=request_id_for, **kwargs
    )


__all__ = ["EdgeRoute", "edge_site"]
