"""The route modules of the API, one per resource: each has `add_routes(app)`
and `OPENAPI` (its paths and component schemas). `api_modules(node)` lists
those a node mounts (the media ones only where it runs media);
`add_media_routes` mounts what is not part of the API document (playback,
pages, WebRTC's pages)."""

from __future__ import annotations

from types import ModuleType

from aiohttp import web

from control.node import Media, Node


def control_modules() -> list[ModuleType]:
    from control.http.routes import (
        events,
        health,
        keys,
        live_streams,
        nodes,
        signing_keys,
        views,
        webhooks,
    )

    return [health, keys, live_streams, signing_keys, webhooks, events, nodes, views]


def media_modules() -> list[ModuleType]:
    from control.http.routes import assets, rooms, webrtc

    return [assets, rooms, webrtc]


def api_modules(node: Node) -> list[ModuleType]:
    return [*control_modules(), *(media_modules() if node.media is not None else [])]


def add_media_routes(app: web.Application, media: Media) -> None:
    from control.http.routes import playback
    from realtime.pages import add_page_routes
    from realtime.webrtc.routes import mount_webrtc_routes

    playback.add_routes(app)
    add_page_routes(app)
    mount_webrtc_routes(app, media.webrtc)
