"""Playback over HTTP: ``/play/{playback_id}.m3u8``, its parts, segments, init
and playlists (``/play/{playback_id}/{name}``), the MP4
(``/play/{playback_id}/download.mp4``) and ``/thumb/{playback_id}.jpg`` —
answered from the node's `control.playback.Playback` (the playback edge answers
live blocking requests before they reach aiohttp) — and the players' beacons,
``POST /beacon/{playback_id}`` (`control.analytics.beacons`). Every answer,
errors included, carries ``Access-Control-Allow-Origin: *``: players on any
page read them. Child URLs stay relative to the playlist and carry the same
``?token=``. Answered playlists and media count for the viewer's view
(`control.analytics.tracker`), as the edge's answers do.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from control.analytics.beacons import MAX_BODY_BYTES, BeaconError, parse_beacon
from control.domain.assets import asset_prefix
from control.domain.errors import DomainError, NotFoundError
from control.domain.playback import Target
from control.http.middleware import api_error
from control.http.node_key import media_of
from control.http.validation import ApiError
from control.playback import MP4_KEY, Playback, token_suffix
from realtime.hls import http as live_http
from realtime.hls.edge import RELAY_HEADER
from vod.blobstore import BlobNotFound
from vod.manifest import is_media_name, media_key
from vod.playlist import render_media_playlist, render_multivariant_playlist

CORS = {"Access-Control-Allow-Origin": "*"}
IMMUTABLE = "public, max-age=31536000, immutable"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(exc: ApiError) -> web.Response:
    return web.Response(
        status=exc.status,
        text=json.dumps(exc.body()),
        content_type="application/json",
        headers={**CORS, **exc.headers},
    )


def _answers(handler: Handler) -> Handler:
    """Refusals of the domain answered here, with CORS like every answer."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except DomainError as exc:
            return _error(api_error(exc))
        except ApiError as exc:
            return _error(exc)

    wrapped.__name__ = handler.__name__
    return wrapped


def _viewed(handler: Handler) -> Handler:
    """The answer counts for the viewer's view (`ViewTracker.on_playback`)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        media_of(request).views.on_playback(
            request.path, request.query_string, request.remote or "", request.headers,
            response.status,
        )  # fmt: skip
        return response

    wrapped.__name__ = handler.__name__
    return wrapped


async def _resolve(request: web.Request, aud: str) -> tuple[Playback, Target, str]:
    playback = media_of(request).playback
    token = request.query.get("token", "")
    target = await playback.resolve(request.match_info["playback_id"], token, aud)
    return playback, target, token_suffix(token, target)


def _playlist(body: str, *, final: bool) -> web.Response:
    return web.Response(
        text=body,
        content_type="application/vnd.apple.mpegurl",
        headers={**CORS, "Cache-Control": "public, max-age=300" if final else "max-age=1"},
    )


async def _relayed(request: web.Request, target: Target) -> web.Response | None:
    """A live stream another node ingests: its answer, relayed (the origin never
    relays a relayed request: a stream it lost is its 404)."""
    if target.live_stream is None or RELAY_HEADER in request.headers:
        return None
    reply = await media_of(request).relay.fetch(target.live_stream.id, request.path_qs)
    if reply is None:
        return None
    return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


@_viewed
@_answers
async def multivariant(request: web.Request) -> web.StreamResponse:
    playback, target, suffix = await _resolve(request, "v")
    live = playback.live_of(target)
    if live is not None:
        return await live_http.serve_multivariant(request, live, suffix)
    relayed = await _relayed(request, target)
    if relayed is not None:
        return relayed
    _asset, manifest = await playback.vod_of(target)
    body = render_multivariant_playlist(manifest, f"{target.playback_id}/media.m3u8", suffix=suffix)
    return _playlist(body, final=manifest.final)


@_viewed
@_answers
async def child(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == MP4_KEY:
        return await download(request)
    playback, target, suffix = await _resolve(request, "v")
    live = playback.live_of(target)
    if live is not None:
        return await live_http.serve_child(request, live, name, suffix)
    relayed = await _relayed(request, target)
    if relayed is not None:
        return relayed
    asset = await playback.asset_of(target)
    if asset is None:
        raise NotFoundError("recording", message="nothing to play")
    if name == "media.m3u8":
        manifest = await playback.manifest(asset)
        if manifest is None or not manifest.segments:
            raise NotFoundError("recording", message="nothing to play yet")
        return _playlist(render_media_playlist(manifest, suffix=suffix), final=manifest.final)
    if not is_media_name(name):
        raise NotFoundError("media", message="not found")
    key = media_key(asset.data.get("prefix") or asset_prefix(asset.id), name)
    return await _blob(
        request, playback, key, "video/mp4" if name.endswith(".mp4") else "video/iso.segment"
    )


async def download(request: web.Request) -> web.StreamResponse:
    playback, target, _suffix = await _resolve(request, "d")
    asset = await playback.asset_of(target)
    if asset is None:
        raise NotFoundError("asset", message="no asset to download")
    return await _blob(
        request,
        playback,
        playback.download_key(asset),
        "video/mp4",
        disposition=f'attachment; filename="{asset.id}.mp4"',
    )


@_answers
async def thumbnail(request: web.Request) -> web.StreamResponse:
    playback, target, _suffix = await _resolve(request, "t")
    try:
        time_s = float(request.query["time"]) if "time" in request.query else None
    except ValueError:
        raise ApiError(400, "invalid_request", "time must be a number of seconds") from None
    if time_s is not None and not (0 <= time_s < 1e7):
        raise ApiError(400, "invalid_request", "time out of range")
    data, final = await playback.thumbnail(target, time_s)
    return web.Response(
        body=data,
        content_type="image/jpeg",
        headers={**CORS, "Cache-Control": IMMUTABLE if final else "public, max-age=60"},
    )


async def _blob(
    request: web.Request,
    playback: Playback,
    key: str,
    content_type: str,
    *,
    disposition: str | None = None,
) -> web.StreamResponse:
    blobs = playback.blobs
    if playback.presign_s > 0:
        url = await blobs.url_for(key, playback.presign_s)
        if url:
            raise web.HTTPFound(url, headers=CORS)
    try:
        size = await blobs.size(key)
    except BlobNotFound:
        raise NotFoundError("media", message="not found") from None
    headers: dict[str, Any] = {**CORS, "Cache-Control": IMMUTABLE, "Content-Type": content_type}
    if disposition:
        headers["Content-Disposition"] = disposition
    path = blobs.local_path(key)
    if path is not None:
        # sendfile, ranges and conditional requests come with FileResponse
        return web.FileResponse(path, headers=headers)
    resp = web.StreamResponse(headers=headers)
    resp.content_length = size
    await resp.prepare(request)
    async for chunk in blobs.open(key):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


BEACON_CORS = {
    **CORS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
    "Access-Control-Max-Age": "86400",
}


@_answers
async def beacon(request: web.Request) -> web.StreamResponse:
    """A player's beacon (JSON, whatever the Content-Type says: `sendBeacon` of a
    string is text/plain, which needs no preflight). The playback token, when
    the id is signed, comes as ``?token=`` or as a Bearer."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"A beacon is at most {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"A beacon is at most {MAX_BODY_BYTES} bytes")
    token = request.query.get("token", "")
    auth = request.headers.get("Authorization", "")
    if not token and auth[:7].lower() == "bearer ":
        token = auth[7:].strip()
    playback_id = request.match_info["playback_id"]
    await media_of(request).playback.resolve(playback_id, token, "v")
    try:
        parsed = parse_beacon(json.loads(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        # BeaconError is a ValueError: its message says which field
        detail = str(exc) if isinstance(exc, BeaconError) else "the body is not JSON"
        raise ApiError(400, "invalid_beacon", detail) from None
    media_of(request).views.on_beacon(
        playback_id, request.remote or "", request.headers.get("User-Agent", ""), parsed
    )
    return web.Response(status=204, headers=BEACON_CORS)


async def beacon_preflight(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204, headers=BEACON_CORS)


PLAY_PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "CMCD-Request, CMCD-Object, CMCD-Status, CMCD-Session",
    "Access-Control-Max-Age": "86400",
}


async def play_preflight(request: web.Request) -> web.StreamResponse:
    """A player on another origin sending CMCD as headers asks first."""
    return web.Response(status=204, headers=PLAY_PREFLIGHT)


def add_routes(app: web.Application) -> None:
    app.router.add_get(r"/play/{playback_id:[^/.]+}.m3u8", multivariant)
    app.router.add_get(r"/play/{playback_id:[^/.]+}/{name}", child)
    app.router.add_get(r"/thumb/{playback_id:[^/.]+}.jpg", thumbnail)
    app.router.add_post(r"/beacon/{playback_id:[^/.]+}", beacon)
    app.router.add_route("OPTIONS", r"/beacon/{playback_id:[^/.]+}", beacon_preflight)
    app.router.add_route("OPTIONS", r"/play/{playback_id:[^/.]+}.m3u8", play_preflight)
    app.router.add_route("OPTIONS", r"/play/{playback_id:[^/.]+}/{name}", play_preflight)
