"""Wiring: WHIP + WHEP endpoints, the publish/watch pages, and shutdown cleanup.

    routes = add_webrtc_routes(app, hub=hub, authority=authority,
                               resolve_playback=resolve, config=WebRtcConfig.from_env())

mounts everything on `app` and registers an `on_shutdown` hook that closes every
WHIP and WHEP peer connection. A service that builds and closes the WHIP and
WHEP services itself mounts them with `mount_webrtc_routes(app, routes)`. Pages:

    GET /publish/{live_stream_id}          camera+mic -> WHIP (key pasted or ?key=)
    GET /watch/{playback_id}/webrtc        WHEP player (?token= for signed ids)
    GET /webrtc/static/{publish.js|watch_webrtc.js}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ingest.hub import Hub
from ingest.ports import PublishAuthority
from ingest.webrtc.config import WebRtcConfig
from ingest.webrtc.http import Forwarder
from ingest.whip.http import add_whip_routes
from ingest.whip.session import WhipService
from realtime.whep.http import add_whep_routes
from realtime.whep.session import Resolver, WhepService

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_FILES = {
    "publish.js": "application/javascript",
    "watch_webrtc.js": "application/javascript",
}


@dataclass
class WebRtcRoutes:
    whip: WhipService
    whep: WhepService
    forwarder: Forwarder | None = None
    """Other workers of this machine, for sessions and streams they hold."""

    async def close(self) -> None:
        await self.whep.close_all()
        await self.whip.close_all()


def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            STATIC_DIR / name,
            headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"},
        )

    return handler


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(
        STATIC_DIR / name, headers={"Content-Type": STATIC_FILES[name], "Cache-Control": "no-cache"}
    )


def add_webrtc_routes(
    app: web.Application,
    *,
    hub: Hub,
    authority: PublishAuthority,
    resolve_playback: Resolver,
    config: WebRtcConfig,
    pages: bool = True,
) -> WebRtcRoutes:
    """Build WHIP (`/v1/whip`) and WHEP (`/v1/whep/{playback_id}`) and mount them
    (`mount_webrtc_routes`) with the pages, for an app that is nothing else.

    `resolve_playback(playback_id, token)` (sync or async) returns the live stream
    id or raises `realtime.whep.PlaybackDenied(status, message)`, `PermissionError`
    (403) or `LookupError` (404).
    """
    whip = WhipService(hub, authority, config)
    whep = WhepService(hub, config, resolve_playback, keyframe_request=whip.request_keyframe)
    routes = WebRtcRoutes(whip, whep)
    mount_webrtc_routes(app, routes, pages=pages)

    async def on_shutdown(app: web.Application) -> None:
        await routes.close()

    app.on_shutdown.append(on_shutdown)
    return routes


def mount_webrtc_routes(app: web.Application, routes: WebRtcRoutes, *, pages: bool = True) -> None:
    """The HTTP side of services built elsewhere (the node owns and closes them)."""
    add_whip_routes(app, routes.whip, forwarder=routes.forwarder)
    add_whep_routes(app, routes.whep, forwarder=routes.forwarder)
    if pages:
        app.router.add_get("/publish/{live_stream_id}", _page("publish.html"))
        app.router.add_get("/watch/{playback_id}/webrtc", _page("watch_webrtc.html"))
        app.router.add_get("/webrtc/static/{name}", _static)
