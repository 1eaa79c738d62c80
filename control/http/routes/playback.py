"""Playback over HTTP: ``/play/{playback_id}.m3u8``, its parts, segments and
init (``/play/{playback_id}/{name}``) and ``/thumb/{playback_id}.jpg`` —
answered by the node's `control.playback.Playback` (the playback edge answers
live blocking requests before they reach aiohttp)."""

from __future__ import annotations

from aiohttp import web

from control.http.node_key import media_of


async def multivariant(request: web.Request) -> web.StreamResponse:
    return await media_of(request).playback.multivariant(request)


async def child(request: web.Request) -> web.StreamResponse:
    return await media_of(request).playback.child(request)


async def thumbnail(request: web.Request) -> web.StreamResponse:
    return await media_of(request).playback.thumbnail(request)


def add_routes(app: web.Application) -> None:
    app.router.add_get(r"/play/{playback_id:[^/.]+}.m3u8", multivariant)
    app.router.add_get(r"/play/{playback_id:[^/.]+}/{name}", child)
    app.router.add_get(r"/thumb/{playback_id:[^/.]+}.jpg", thumbnail)
