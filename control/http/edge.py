"""The playback edge in the service: `realtime.hls.edge` wired to the control plane.

Owns the things the edge needs from the service: playback resolution
(policy and token checks, through `Playback.edge_route`), the request id, and
the per-request views (`control.analytics.tracker`), metrics and access log
that the aiohttp handlers and request middleware would otherwise record.
`onair serve` listens with `edge_site`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from control.http.middleware import record_request, request_id_for
from control.http.node_key import NODE
from realtime.hls.edge import EdgeRequest, EdgeRoute, EdgeSite


def edge_site(runner: web.AppRunner, host: str | None, port: int | None, **kwargs: Any) -> EdgeSite:
    """A TCP site for `runner`'s service app whose live playback goes through the edge."""
    app = runner.app
    node = app[NODE]
    if node.media is None:
        raise ValueError("the playback edge needs a node that runs media")
    playback = node.media.playback

    def resolve(playback_id: str, token: str | None) -> Any:
        return playback.edge_route(playback_id, token)

    views = node.media.views

    def observe(req: EdgeRequest) -> None:
        views.on_playback(req.path, req.query, req.remote, req.headers, req.status)
        record_request(
            node,
            method=req.method,
            path=req.path,
            route=req.route,
            status=req.status,
            elapsed_s=req.duration_s,
            remote=req.remote,
            request_id=req.request_id,
        )

    settings = node.settings
    return EdgeSite(
        runner,
        host,
        port,
        resolve=resolve,
        observe=observe,
        request_id=request_id_for,
        limits=node.state.conn_limits,
        max_per_client=settings.http_max_connections_per_ip,
        head_timeout_s=settings.http_head_timeout_s,
        **kwargs,
    )


__all__ = ["EdgeRoute", "edge_site"]
