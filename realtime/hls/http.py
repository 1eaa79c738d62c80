"""aiohttp handlers for LL-HLS delivery of one already-resolved `LiveHls`.

The answers themselves (blocking reload, delta updates, blocking parts, cache
headers) are decided by `realtime.hls.responder`; this module drives its
steps in a request task and adds the headers every answer carries (open CORS
for GET). `realtime.hls.edge` drives the same steps without aiohttp.

The composition root resolves the playback id (and checks the token) and then
calls these with the LiveHls and the URL suffix to append to child URIs
("?token=..." or ""). URL layout (children relative to the playlists):

    GET /play/{playback_id}.m3u8                  serve_multivariant
    GET /play/{playback_id}/media.m3u8            serve_child (media playlist)
    GET /play/{playback_id}/init-{gen}.mp4        serve_child (init segment)
    GET /play/{playback_id}/{msn}.m4s             serve_child (segment)
    GET /play/{playback_id}/{msn}.{part}.m4s      serve_child (part)

`serve_child(request, live, name, suffix)` answers by the last path segment
`name` (`responder.child` dispatches). `add_test_routes(app, resolve)` mounts both routes with a
resolver `resolve(playback_id) -> LiveHls | None` (public playback, for tests
and simple deployments).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable

from aiohttp import web

from realtime.hls import responder
from realtime.hls.live import LiveHls
from realtime.hls.playlist import media_playlist_uri
from realtime.hls.responder import (
    IMMUTABLE,
    INIT_TYPE,
    MEDIA_TYPE,
    NO_STORE,
    PLAYLIST_TYPE,
    Reply,
    Step,
)

__all__ = ["IMMUTABLE", "INIT_TYPE", "MEDIA_TYPE", "NO_STORE", "PLAYLIST_TYPE"]

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Age, Date, Content-Length",
}


def reply_headers(reply: Reply) -> dict[str, str]:
    """The headers of an LL-HLS answer besides Content-Length (shared with the edge)."""
    headers = {
        "Content-Type": reply.content_type,
        "Cache-Control": reply.cache_control,
        **_CORS,
    }
    if reply.retry_after is not None:
        headers["Retry-After"] = reply.retry_after
    return headers


def _response(reply: Reply) -> web.Response:
    return web.Response(body=reply.body, status=reply.status, headers=reply_headers(reply))


async def drive(step: Step) -> Reply:
    """Run a responder step to its reply, waiting in this task."""
    loop = asyncio.get_running_loop()
    while not isinstance(step, Reply):
        remaining = step.deadline - loop.time()
        timed_out = remaining <= 0
        if not timed_out:
            try:
                async with asyncio.timeout(remaining):
                    # shield: one viewer giving up must not cancel the shared future
                    await asyncio.shield(step.future)
            except TimeoutError:
                timed_out = True
        step = step.resume(timed_out)
    return step


def suffix_from_request(request: web.Request) -> str:
    """ "?token=<token>" when the request carries one, else "" (children carry the same token)."""
    token = request.query.get("token")
    if not token:
        return ""
    return "?" + urllib.parse.urlencode({"token": token})


def _playback_id(request: web.Request) -> str:
    pid = request.match_info.get("playback_id")
    if pid:
        return pid
    name = request.path.rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".m3u8")] if name.endswith(".m3u8") else name


async def serve_multivariant(
    request: web.Request, live: LiveHls, suffix: str = "", *, playback_id: str | None = None
) -> web.Response:
    """The multivariant playlist at /play/{playback_id}.m3u8."""
    pid = playback_id or _playback_id(request)
    return _response(await drive(responder.multivariant(live, media_playlist_uri(pid), suffix)))


async def serve_child(
    request: web.Request, live: LiveHls, name: str, suffix: str = ""
) -> web.Response:
    """Dispatch /play/{playback_id}/{name} to the answer its name calls for."""
    return _response(await drive(responder.child(live, name, request.query, suffix)))


def add_test_routes(app: web.Application, resolve: Callable[[str], LiveHls | None]) -> None:
    """Mount /play/{playback_id}.m3u8 and /play/{playback_id}/{name} for public playback.

    The token in `?token=` (if any) is passed through to child URIs but not checked."""

    async def multivariant(request: web.Request) -> web.Response:
        live = resolve(request.match_info["playback_id"])
        if live is None:
            return _response(responder.error(404, "no such live stream"))
        return await serve_multivariant(request, live, suffix_from_request(request))

    async def child(request: web.Request) -> web.Response:
        live = resolve(request.match_info["playback_id"])
        if live is None:
            return _response(responder.error(404, "no such live stream"))
        return await serve_child(
            request, live, request.match_info["name"], suffix_from_request(request)
        )

    app.router.add_get(r"/play/{playback_id:[^/.]+}.m3u8", multivariant)
    app.router.add_get(r"/play/{playback_id:[^/.]+}/{name}", child)
