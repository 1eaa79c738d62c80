"""The playback edge in the service: `realtime.hls.edge` wired to the control plane.

Owns the three things the edge needs from the service: playback resolution
(policy and token checks, through `Playback.edge_route`), the request id, and
the per-request metrics and access log that aiohttp's request middleware
would otherwise record. `onair serve` listens with `edge_site`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from control import appkeys
from control.middleware import record_request, request_id_for
from realtime.hls.edge import EdgeRequest, EdgeRoute, EdgeSite


def edge_site(runner: web.AppRunner, host: str | None, port: int, **kwargs: Any) -> EdgeSite:
    """A TCP site for `runner`'s service app whose live playback goes through the edge."""
    app = runner.app

    def resolve(playback_id: str, token: str | None) -> Any:
        return app[appkeys.PLAYBACK].edge_route(playback_id, token)

    def observe(req: EdgeRequest) -> None:
        record_request(
            app,
            method=req.method,
            path=req.path,
            route=req.route,
            status=req.status,
            elapsed_s=req.duration_s,
            remote=req.remote,
            request_id=req.request_id,
        )

    settings = app[appkeys.SETTINGS]
    return EdgeSite(
        runner,
        host,
        port,
        resolve=resolve,
        observe=observe,
        request_id=request_id_for,
        limits=app[appkeys.STATE].conn_limits,
        max_per_client=settings.http_max_connections_per_ip,
        head_timeout_s=settings.http_head_timeout_s,
        **kwargs,
    )


__all__ = ["EdgeRoute", "edge_site"]
