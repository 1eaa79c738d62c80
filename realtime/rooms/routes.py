"""aiohttp wiring for rooms: the signaling WebSocket and the room page.

``add_room_routes(app, service)`` adds

* ``GET /v1/rooms/{id}/signal?token=`` — `ws.signal_handler`
* ``GET /rooms/{id}?token=`` — the room page (``realtime/static/room.html``)
* ``GET /rooms/static/room.js`` — its script

and starts/stops the service with the app (``on_startup``/``on_cleanup``) unless
``manage_lifecycle=False`` (then the caller owns `start()`/`close()`).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from realtime.rooms.service import RoomService
from realtime.rooms.ws import signal_handler

STATIC = Path(__file__).resolve().parent.parent / "static"


def add_room_routes(
    app: web.Application, service: RoomService, *, manage_lifecycle: bool = True
) -> None:
    app.router.add_get("/v1/rooms/{id}/signal", signal_handler(service))

    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            STATIC / "room.html",
            headers={"Cache-Control": "no-store", "Content-Type": "text/html; charset=utf-8"},
        )

    async def script(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            STATIC / "room.js",
            headers={"Cache-Control": "no-cache", "Content-Type": "text/javascript; charset=utf-8"},
        )

    app.router.add_get("/rooms/static/room.js", script)
    app.router.add_get("/rooms/{id}", page)

    if manage_lifecycle:

        async def on_startup(app: web.Application) -> None:
            await service.start()

        async def on_cleanup(app: web.Application) -> None:
            await service.close()

        app.on_startup.append(on_startup)
        app.on_cleanup.append(on_cleanup)
