"""aiohttp handlers for LL-HLS delivery of one already-resolved `LiveHls`.

Owns the HTTP side of RFC 8216bis delivery: blocking playlist reload
(`_HLS_msn` / `_HLS_part`, 400 when asked for more than two segments beyond
the live edge, 503 when the wait times out), delta updates (`_HLS_skip`),
parts that block until they exist (preload hints), CDN-friendly cache headers
(immutable media only once final; short-lived playlists; blocking responses
cacheable because a CDN keys them by their query) and open CORS for GET.

The composition root resolves the playback id (and checks the token) and then
calls these with the LiveHls and the URL suffix to append to child URIs
("?token=..." or ""). URL layout (children relative to the playlists):

    GET /play/{playback_id}.m3u8                  serve_multivariant
    GET /play/{playback_id}/media.m3u8            serve_media_playlist
    GET /play/{playback_id}/init-{gen}.mp4        serve_init
    GET /play/{playback_id}/{msn}.m4s             serve_segment
    GET /play/{playback_id}/{msn}.{part}.m4s      serve_part

`serve_child(request, live, name, suffix)` dispatches on the last path
segment `name`. `add_test_routes(app, resolve)` mounts both routes with a
resolver `resolve(playback_id) -> LiveHls | None` (public playback, for tests
and simple deployments).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable

from aiohttp import web

from realtime.hls.live import LiveHls
from realtime.hls.playlist import media_playlist_uri

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
INIT_TYPE = "video/mp4"
MEDIA_TYPE = "video/iso.segment"
IMMUTABLE = "public, max-age=31536000, immutable"
NO_STORE = "no-store"

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Age, Date, Content-Length",
}

_INIT_RE = re.compile(r"^init-(\d{1,9})\.mp4$")
_SEGMENT_RE = re.compile(r"^(\d{1,12})\.m4s$")
_PART_RE = re.compile(r"^(\d{1,12})\.(\d{1,6})\.m4s$")


def _response(
    body: bytes | str, content_type: str, cache: str, status: int = 200, **extra: str
) -> web.Response:
    headers = {"Content-Type": content_type, "Cache-Control": cache, **_CORS, **extra}
    data = body.encode() if isinstance(body, str) else body
    return web.Response(body=data, status=status, headers=headers)


def _error(status: int, message: str, **extra: str) -> web.Response:
    return _response(message + "\n", "text/plain", NO_STORE, status, **extra)


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
    """The multivariant playlist at /play/{playback_id}.m3u8 (waits briefly for the
    first init segment so CODECS/RESOLUTION are real)."""
    if live.current_init is None and not live.ended:
        await live.wait_until(
            lambda: live.current_init is not None or live.ended, live.blocking_timeout()
        )
    if live.current_init is None:
        return _error(503, "stream not started yet", **{"Retry-After": "1"})
    pid = playback_id or _playback_id(request)
    text = live.multivariant_playlist(media_playlist_uri(pid), suffix=suffix)
    return _response(text, PLAYLIST_TYPE, "public, max-age=1")


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 12:
        raise ValueError(f"bad {name}")
    return int(raw)


async def serve_media_playlist(
    request: web.Request, live: LiveHls, suffix: str = ""
) -> web.Response:
    """The media playlist; blocking reload with `_HLS_msn`/`_HLS_part`, delta with `_HLS_skip`."""
    try:
        msn = _int_param(request, "_HLS_msn")
        part = _int_param(request, "_HLS_part")
    except ValueError as exc:
        return _error(400, str(exc))
    if part is not None and msn is None:
        return _error(400, "_HLS_part requires _HLS_msn")
    skip = request.query.get("_HLS_skip") in ("YES", "v2")

    if not live.has_media and not live.ended:
        await live.wait_media()
        if not live.has_media and not live.ended:
            return _error(503, "no media yet", **{"Retry-After": "1"})

    blocking = msn is not None
    if msn is not None and not live.ended:
        # RFC 8216bis 6.2.5.2: an _HLS_msn greater than the last (complete) Media
        # Segment's number plus two is answered at once with 400 Bad Request.
        if msn > live.last_complete_msn + 2:
            return _error(400, "_HLS_msn is too far beyond the live edge")
        if not await live.wait_for(msn, part):
            return _error(
                503, "timed out waiting for the requested segment", **{"Retry-After": "1"}
            )
    body = live.media_playlist_bytes(skip=skip, suffix=suffix)
    if live.ended:
        cache = "public, max-age=2"
    elif blocking:
        # A CDN keys this by its query: the answer for (msn, part) stays correct.
        cache = f"public, max-age={6 * live.target_duration}"
    else:
        cache = "public, max-age=1"
    return _response(body, PLAYLIST_TYPE, cache)


async def serve_init(request: web.Request, live: LiveHls, generation: int) -> web.Response:
    init = live.get_init(generation)
    if init is None:
        return _error(404, "no such init segment")
    return _response(init.data, INIT_TYPE, IMMUTABLE)


async def serve_part(request: web.Request, live: LiveHls, msn: int, index: int) -> web.Response:
    """A part; a part that may still come (the preload hint) blocks until it exists."""
    part = live.get_part(msn, index)
    if part is None:
        if not live.part_may_come(msn, index) or msn > live.open_msn + 1:
            return _error(404, "no such part")
        part = await live.wait_part(msn, index)
        if part is None:
            if live.part_may_come(msn, index):
                return _error(503, "part not ready", **{"Retry-After": "1"})
            return _error(404, "no such part")
    return _response(part.data, MEDIA_TYPE, IMMUTABLE)


async def serve_segment(request: web.Request, live: LiveHls, msn: int) -> web.Response:
    """A complete segment; the one being built blocks until it is complete."""
    seg = live.get_segment(msn)
    if seg is None:
        if not live.segment_may_come(msn) or msn > live.open_msn:
            return _error(404, "no such segment")
        seg = await live.wait_segment(msn)
        if seg is None:
            return _error(404 if not live.segment_may_come(msn) else 503, "segment not ready")
    return _response(seg.data, MEDIA_TYPE, IMMUTABLE)


async def serve_child(
    request: web.Request, live: LiveHls, name: str, suffix: str = ""
) -> web.Response:
    """Dispatch /play/{playback_id}/{name} to the handler its name calls for."""
    if name == "media.m3u8":
        return await serve_media_playlist(request, live, suffix)
    if m := _PART_RE.match(name):
        return await serve_part(request, live, int(m.group(1)), int(m.group(2)))
    if m := _SEGMENT_RE.match(name):
        return await serve_segment(request, live, int(m.group(1)))
    if m := _INIT_RE.match(name):
        return await serve_init(request, live, int(m.group(1)))
    return _error(404, "not found")


def add_test_routes(app: web.Application, resolve: Callable[[str], LiveHls | None]) -> None:
    """Mount /play/{playback_id}.m3u8 and /play/{playback_id}/{name} for public playback.

    The token in `?token=` (if any) is passed through to child URIs but not checked."""

    async def multivariant(request: web.Request) -> web.Response:
        live = resolve(request.match_info["playback_id"])
        if live is None:
            return _error(404, "no such live stream")
        return await serve_multivariant(request, live, suffix_from_request(request))

    async def child(request: web.Request) -> web.Response:
        live = resolve(request.match_info["playback_id"])
        if live is None:
            return _error(404, "no such live stream")
        return await serve_child(
            request, live, request.match_info["name"], suffix_from_request(request)
        )

    app.router.add_get(r"/play/{playback_id:[^/.]+}.m3u8", multivariant)
    app.router.add_get(r"/play/{playback_id:[^/.]+}/{name}", child)
