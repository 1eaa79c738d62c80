"""Playback routes: ``/play/{playback_id}...`` and ``/thumb/{playback_id}.jpg``.

Owns resolving a playback id (record ``playback_ids/<id>`` → live stream or
asset), enforcing signed playback (RS256 JWT, ``aud`` v/t/d, on every
playlist, part, segment, init, thumbnail and download of a ``signed`` id) and
choosing what to serve:

* a live stream that is live → LL-HLS from `realtime.hls` (the live edge);
* a live stream that is not → the VOD of its active or most recent asset;
* an asset → its VOD (a growing DVR playlist while its broadcast records).

Child URLs stay relative to the playlist and carry the same ``?token=``.
Names are matched against strict patterns before anything touches storage, so
path traversal and guessing find nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from control.assets import COLLECTION as ASSETS
from control.assets import asset_prefix
from control.live_streams import COLLECTION as LIVE_STREAMS
from control.live_streams import PLAYBACK_IDS
from control.store.base import Delete, Enqueue, Op, Record, Store
from realtime.hls import http as live_http
from realtime.hls.edge import EdgeRoute
from realtime.hls.manager import LiveHlsManager
from realtime.whep import PlaybackDenied
from vod.blobstore import BlobNotFound, BlobStore, join_key
from vod.jobs import VodContext, render_thumbnail
from vod.manifest import Manifest, is_media_name, media_key, try_load_manifest
from vod.playlist import render_media_playlist, render_multivariant_playlist
from vod.tokens import InvalidToken, verify_playback_token

log = logging.getLogger(__name__)

SIGNING_KEYS = "signing_keys"
ROOMS = "rooms"
_PLAYBACK_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
_CORS = {"Access-Control-Allow-Origin": "*"}
EDGE_CACHE_S = 2.0
"""How long the playback edge reuses a resolved playback id and token."""
EDGE_CACHE_MAX = 10_000
_GRANT_COLLECTIONS = frozenset({PLAYBACK_IDS, LIVE_STREAMS, ROOMS, ASSETS, SIGNING_KEYS})
"""Collections whose deletions can revoke a grant."""
_GRANT_DEFINING = frozenset({PLAYBACK_IDS, SIGNING_KEYS})
"""Collections where any change can (a playback id's policy, a key)."""
IMMUTABLE = "public, max-age=31536000, immutable"
MP4_KEY = "download.mp4"
THUMBS = "thumbs"
"""Rendered thumbnails of finished assets, under the asset's prefix."""


@dataclass(frozen=True, slots=True)
class Target:
    playback_id: str
    policy: str
    live_stream: Record | None
    """The live stream (or room) record whose hub stream plays live; None for assets."""
    asset: Record | None
    expires: float = math.inf
    """When the playback token that granted this runs out (Unix time; inf: public)."""


def _error(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"type": type_, "message": message}},
        status=status,
        headers={**_CORS, **(headers or {})},
    )


class Playback:
    def __init__(
        self,
        *,
        store: Store,
        blobs: BlobStore,
        hls: LiveHlsManager,
        vod: VodContext,
        live_manifest: Callable[[str], Manifest | None],
        presign_s: int = 0,
        max_token_ttl_s: float | None = None,
        thumbnail_concurrency: int = 2,
    ) -> None:
        self.store = store
        self._thumb_slots = asyncio.Semaphore(max(1, thumbnail_concurrency))
        """Renders at once; beyond them a thumbnail request is answered 503."""
        self.thumbnails_rendered = 0
        self.max_token_ttl_s = max_token_ttl_s
        """The longest remaining lifetime a playback token may claim."""
        self.blobs = blobs
        self.hls = hls
        self.vod = vod
        self.live_manifest = live_manifest
        """asset id → the in-memory manifest of a recording in progress on this node."""
        self.presign_s = presign_s
        """>0: media of assets is answered with a presigned redirect (S3) of that lifetime."""
        self._edge_cache: dict[tuple[str, str], tuple[float, str, EdgeRoute]] = {}
        """(playback id, token) → (monotonic expiry, live stream id, the route granted)."""
        self._edge_lookups: dict[tuple[str, str], asyncio.Future[EdgeRoute | None]] = {}
        self._grant_epoch = 0

    # ------------------------------------------------------------ resolving
    async def _resolve(self, request: web.Request, aud: str) -> Target | web.Response:
        return await self._resolve_id(
            request.match_info["playback_id"], request.query.get("token", ""), aud
        )

    async def _resolve_id(self, pid: str, token: str, aud: str) -> Target | web.Response:
        if not _PLAYBACK_ID.match(pid):
            return _error(404, "not_found", "no such playback id")
        rec = await self.store.get(PLAYBACK_IDS, pid)
        if rec is None:
            return _error(404, "not_found", "no such playback id")
        policy = rec.data.get("policy", "public")
        expires = math.inf
        if policy == "signed":
            denied = await self._check_token(token, pid, aud)
            if isinstance(denied, web.Response):
                return denied
            expires = denied
        obj_type, obj_id = rec.data.get("object_type"), rec.data.get("object_id", "")
        if obj_type in ("live_stream", "room"):
            # a room's playback id plays its recorded composite like a live stream
            ls = await self.store.get(LIVE_STREAMS if obj_type == "live_stream" else ROOMS, obj_id)
            if ls is None:
                return _error(404, "not_found", "no such playback id")
            return Target(pid, policy, ls, None, expires)
        asset = await self.store.get(ASSETS, obj_id)
        if asset is None:
            return _error(404, "not_found", "no such playback id")
        return Target(pid, policy, None, asset, expires)

    async def _check_token(self, token: str, pid: str, aud: str) -> web.Response | float:
        """The 403 answer for a refused token, else the token's expiry (Unix time)."""
        kid = ""
        try:
            kid = str(jwt.get_unverified_header(token).get("kid", "")) if token else ""
        except jwt.PyJWTError:
            pass
        key = await self.store.get(SIGNING_KEYS, kid) if kid and len(kid) < 128 else None
        public = key.data.get("public_key") if key is not None else None
        try:
            claims = verify_playback_token(
                token,
                playback_id=pid,
                aud=aud,
                public_keys=lambda k: public if k == kid else None,
                max_ttl_s=self.max_token_ttl_s,
            )
        except InvalidToken as exc:
            # the reason is for the operator: telling the caller which check failed
            # helps whoever is forging tokens
            log.info(
                "playback token refused",
                extra={"playback_id": pid, "aud": aud, "reason": exc.reason},
            )
            return _error(403, "forbidden", "forbidden")
        return float(claims["exp"])

    async def resolve_live(self, playback_id: str, token: str | None) -> str:
        """WHEP: the live stream a playback id plays, after the token check."""
        if not _PLAYBACK_ID.match(playback_id):
            raise PlaybackDenied(404, "no such playback id")
        rec = await self.store.get(PLAYBACK_IDS, playback_id)
        obj_type = rec.data.get("object_type") if rec is not None else None
        if rec is None or obj_type not in ("live_stream", "room"):
            raise PlaybackDenied(404, "no such live stream playback id")
        if rec.data.get("policy") == "signed":
            denied = await self._check_token(token or "", playback_id, "v")
            if isinstance(denied, web.Response):
                raise PlaybackDenied(403, "forbidden")
        if obj_type == "room":
            # a recorded room's composite is in the hub under its broadcast stream id
            room = await self.store.get(ROOMS, str(rec.data["object_id"]))
            if room is None:
                raise PlaybackDenied(404, "no such live stream playback id")
            return str(room.data.get("broadcast_stream_id") or room.id)
        return str(rec.data["object_id"])

    # ---------------------------------------------------------------- edge
    def edge_route(
        self, playback_id: str, token: str | None
    ) -> EdgeRoute | Awaitable[EdgeRoute | None] | None:
        """What the playback edge may serve for this id and token: a live stream on
        this node, at once when a recent answer is cached (else an awaitable), or
        None to let the aiohttp handlers answer (VOD, errors, refusals)."""
        key = (playback_id, token or "")
        hit = self._edge_cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            route = hit[2]
            live = self.hls.get(hit[1])
            if live is route.live:
                return route
            return EdgeRoute(live, playback_id, route.suffix) if live is not None else None
        task = self._edge_lookups.get(key)
        if task is None:
            # one store lookup per id and token, however many viewers ask at once
            task = asyncio.ensure_future(self._edge_lookup(*key))
            self._edge_lookups[key] = task
            task.add_done_callback(lambda _: self._edge_lookups.pop(key, None))
        return task

    def forget_grants_after(self, ops: Sequence[Op]) -> None:
        """Drop the edge's cached grants when a commit may have revoked one."""
        if self._edge_cache and any(
            not isinstance(op, Enqueue)
            and op.collection in _GRANT_COLLECTIONS
            and (isinstance(op, Delete) or op.collection in _GRANT_DEFINING)
            for op in ops
        ):
            self._edge_cache.clear()
            self._grant_epoch += 1

    async def _edge_lookup(self, playback_id: str, token: str) -> EdgeRoute | None:
        epoch = self._grant_epoch
        target = await self._resolve_id(playback_id, token, "v")
        if isinstance(target, web.Response) or target.live_stream is None:
            return None
        stream_id = target.live_stream.id
        live = self.hls.get(stream_id)
        if live is None:
            return None
        suffix = self._suffix_of(token, target)
        # A grant is reused for EDGE_CACHE_S at most (a deleted playback id or
        # signing key stops playback within that), never past the token's expiry.
        now = time.monotonic()
        until = min(now + EDGE_CACHE_S, now + target.expires - time.time())
        if len(self._edge_cache) >= EDGE_CACHE_MAX:
            self._edge_cache = {k: v for k, v in self._edge_cache.items() if v[0] > now}
            if len(self._edge_cache) >= EDGE_CACHE_MAX:
                self._edge_cache.clear()
        route = EdgeRoute(live, playback_id, suffix)
        if epoch == self._grant_epoch:  # nothing was revoked while we looked
            self._edge_cache[(playback_id, token)] = (until, stream_id, route)
        return route

    @staticmethod
    def _suffix_of(token: str | None, target: Target) -> str:
        if target.policy == "signed" and token:
            return "?token=" + urllib.parse.quote(token, safe="")
        return ""

    @staticmethod
    def _suffix(request: web.Request, target: Target) -> str:
        return Playback._suffix_of(request.query.get("token"), target)

    async def _asset_of(self, target: Target) -> Record | None:
        if target.asset is not None:
            return target.asset
        assert target.live_stream is not None
        d = target.live_stream.data
        candidates = [d.get("active_asset_id"), d.get("asset_id"), *d.get("recent_asset_ids", [])]
        for asset_id in candidates:
            if asset_id:
                rec = await self.store.get(ASSETS, asset_id)
                if rec is not None:
                    return rec
        return None

    async def _manifest(self, asset: Record) -> Manifest | None:
        live = self.live_manifest(asset.id)
        if live is not None:
            return live
        return await try_load_manifest(
            self.blobs, asset.data.get("prefix") or asset_prefix(asset.id)
        )

    # --------------------------------------------------------------- handlers
    async def multivariant(self, request: web.Request) -> web.StreamResponse:
        target = await self._resolve(request, "v")
        if isinstance(target, web.Response):
            return target
        suffix = self._suffix(request, target)
        if target.live_stream is not None:
            live = self.hls.get(target.live_stream.id)
            if live is not None:
                return await live_http.serve_multivariant(request, live, suffix)
        asset = await self._asset_of(target)
        manifest = await self._manifest(asset) if asset is not None else None
        if manifest is None or not manifest.segments:
            return _error(404, "not_found", "nothing to play yet")
        body = render_multivariant_playlist(
            manifest, f"{target.playback_id}/media.m3u8", suffix=suffix
        )
        return self._playlist(body, final=manifest.final)

    async def child(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == MP4_KEY:
            return await self.download(request)
        target = await self._resolve(request, "v")
        if isinstance(target, web.Response):
            return target
        suffix = self._suffix(request, target)
        if target.live_stream is not None:
            live = self.hls.get(target.live_stream.id)
            if live is not None:
                return await live_http.serve_child(request, live, name, suffix)
        asset = await self._asset_of(target)
        if asset is None:
            return _error(404, "not_found", "nothing to play")
        if name == "media.m3u8":
            manifest = await self._manifest(asset)
            if manifest is None or not manifest.segments:
                return _error(404, "not_found", "nothing to play yet")
            return self._playlist(
                render_media_playlist(manifest, suffix=suffix), final=manifest.final
            )
        if not is_media_name(name):
            return _error(404, "not_found", "not found")
        key = media_key(asset.data.get("prefix") or asset_prefix(asset.id), name)
        return await self._blob(
            request, key, "video/mp4" if name.endswith(".mp4") else "video/iso.segment"
        )

    async def download(self, request: web.Request) -> web.StreamResponse:
        target = await self._resolve(request, "d")
        if isinstance(target, web.Response):
            return target
        asset = await self._asset_of(target)
        if asset is None:
            return _error(404, "not_found", "no asset to download")
        status = asset.data.get("mp4_status")
        if asset.data.get("status") != "ready" or status != "ready":
            if asset.data.get("status") == "errored" or status == "errored":
                return _error(404, "not_found", "this asset has no MP4")
            return _error(
                409,
                "not_ready",
                "the MP4 is being prepared; try again shortly",
                headers={"Retry-After": "5"},
            )
        key = join_key(asset.data.get("prefix") or asset_prefix(asset.id), MP4_KEY)
        return await self._blob(
            request,
            key,
            "video/mp4",
            disposition=f'attachment; filename="{asset.id}.mp4"',
        )

    async def thumbnail(self, request: web.Request) -> web.StreamResponse:
        target = await self._resolve(request, "t")
        if isinstance(target, web.Response):
            return target
        try:
            time_s = float(request.query["time"]) if "time" in request.query else None
        except ValueError:
            return _error(400, "invalid_request", "time must be a number of seconds")
        if time_s is not None and not (0 <= time_s < 1e7):
            return _error(400, "invalid_request", "time out of range")
        asset = await self._asset_of(target)
        manifest = await self._manifest(asset) if asset is not None else None
        if asset is None or manifest is None or not manifest.segments:
            return _error(404, "not_found", "no picture yet")
        if time_s is None:
            # live: the newest picture; VOD: the first frame
            time_s = max(0.0, manifest.duration_s - 1.0) if not manifest.final else 0.0
        time_s = min(time_s, manifest.duration_s)
        prefix = asset.data.get("prefix") or asset_prefix(asset.id)
        # a finished asset's frames never change: each is rendered once, then read
        cache_key = join_key(prefix, THUMBS, f"{round(time_s * 10):d}.jpg")
        data = await self._cached_thumbnail(cache_key) if manifest.final else None
        if data is None:
            if self._thumb_slots.locked():
                return _error(
                    503,
                    "service_unavailable",
                    "thumbnails are busy; retry shortly",
                    headers={"Retry-After": "1"},
                )
            async with self._thumb_slots:
                data, _info = await render_thumbnail(
                    self.vod, prefix, manifest, round(time_s * 10) / 10
                )
            self.thumbnails_rendered += 1
            if manifest.final:
                await self.blobs.put(cache_key, data, content_type="image/jpeg")
        return web.Response(
            body=data,
            content_type="image/jpeg",
            headers={
                **_CORS,
                "Cache-Control": "public, max-age=60" if not manifest.final else IMMUTABLE,
            },
        )

    async def _cached_thumbnail(self, key: str) -> bytes | None:
        try:
            return await self.blobs.get(key)
        except BlobNotFound:
            return None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _playlist(body: str, *, final: bool) -> web.Response:
        return web.Response(
            text=body,
            content_type="application/vnd.apple.mpegurl",
            headers={**_CORS, "Cache-Control": "public, max-age=300" if final else "max-age=1"},
        )

    async def _blob(
        self, request: web.Request, key: str, content_type: str, *, disposition: str | None = None
    ) -> web.StreamResponse:
        if self.presign_s > 0:
            url = await self.blobs.url_for(key, self.presign_s)
            if url:
                raise web.HTTPFound(url, headers=_CORS)
        try:
            size = await self.blobs.size(key)
        except BlobNotFound:
            return _error(404, "not_found", "not found")
        headers: dict[str, Any] = {
            **_CORS,
            "Cache-Control": IMMUTABLE,
            "Content-Type": content_type,
        }
        if disposition:
            headers["Content-Disposition"] = disposition
        path = self.blobs.local_path(key)
        if path is not None:
            # sendfile, ranges and conditional requests come with FileResponse
            return web.FileResponse(path, headers=headers)
        resp = web.StreamResponse(headers=headers)
        resp.content_length = size
        await resp.prepare(request)
        async for chunk in self.blobs.open(key):
            await resp.write(chunk)
        await resp.write_eof()
        return resp
