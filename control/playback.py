"""Playback on a node: from a resolved playback id (`control.domain.playback`)
to what there is to serve, and the grants the playback edge reuses.

* a live stream that is live here → LL-HLS from `realtime.hls` (`live_of`);
* a live stream another node ingests → its origin's answers, relayed
  (`control.relay`; on the edge's fast path too);
* a live stream that is not → the VOD of its active or most recent asset;
* an asset → its VOD (a growing DVR playlist while its broadcast records);
* thumbnails rendered on the VOD pool (bounded: `Busy` beyond it), a finished
  asset's cached in the blob store; the MP4 download once it is ready.

The playback edge asks `edge_route` per request: a live stream's grant (the
playback id, the token, the route) is cached for `EDGE_CACHE_S` at most and
never past the token's expiry, and dropped at once when this node commits a
change that may revoke it, or hears of one from another node (`may_revoke`,
`forget_grants`, wired by the node through the event bus). The HTTP answers are
`control.http.routes.playback`'s.
"""

from __future__ import annotations

import asyncio
import functools
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence

from control.domain.assets import COLLECTION as ASSETS
from control.domain.assets import asset_prefix
from control.domain.errors import Busy, DomainError, NotFoundError, NotReady
from control.domain.live_streams import COLLECTION as LIVE_STREAMS
from control.domain.live_streams import PLAYBACK_IDS
from control.domain.playback import PlaybackPolicy, Target
from control.domain.rooms import ROOMS_COLLECTION
from control.domain.signing_keys import SIGNING_KEYS
from control.relay import LiveRelay
from control.store.base import Delete, Enqueue, Op, Record, Store
from realtime.hls.edge import EdgeRoute
from realtime.hls.live import LiveHls
from realtime.hls.manager import LiveHlsManager
from realtime.whep import PlaybackDenied
from vod.blobstore import BlobNotFound, BlobStore, join_key
from vod.jobs import VodContext, render_thumbnail
from vod.manifest import Manifest, try_load_manifest

EDGE_CACHE_S = 2.0
"""How long the playback edge reuses a resolved playback id and token."""
EDGE_CACHE_MAX = 10_000
_GRANT_COLLECTIONS = frozenset({PLAYBACK_IDS, LIVE_STREAMS, ROOMS_COLLECTION, ASSETS, SIGNING_KEYS})
"""Collections whose deletions can revoke a grant."""
_GRANT_DEFINING = frozenset({PLAYBACK_IDS, SIGNING_KEYS})
"""Collections where any change can (a playback id's policy, a key)."""
MP4_KEY = "download.mp4"
THUMBS = "thumbs"
"""Rendered thumbnails of finished assets, under the asset's prefix."""


def token_suffix(token: str | None, target: Target) -> str:
    """What child URLs carry: the token of a signed playback id."""
    if target.policy == "signed" and token:
        return "?token=" + urllib.parse.quote(token, safe="")
    return ""


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
        relay: LiveRelay | None = None,
    ) -> None:
        self.store = store
        self.relay = relay
        """Where live streams other nodes ingest are relayed from (None: nowhere)."""
        self.policy = PlaybackPolicy(store, max_token_ttl_s=max_token_ttl_s)
        self._thumb_slots = asyncio.Semaphore(max(1, thumbnail_concurrency))
        """Renders at once; beyond them a thumbnail request is refused (`Busy`)."""
        self.thumbnails_rendered = 0
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

    async def resolve(self, playback_id: str, token: str, aud: str) -> Target:
        return await self.policy.resolve(playback_id, token, aud)

    def live_of(self, target: Target) -> LiveHls | None:
        """The LL-HLS this node serves for the target right now, if any."""
        if target.live_stream is None:
            return None
        return self.hls.get(target.live_stream.id)

    async def resolve_live(self, playback_id: str, token: str | None) -> str:
        """WHEP: the live stream a playback id plays, after the token check."""
        try:
            return await self.policy.live_stream_id(playback_id, token)
        except NotFoundError as exc:
            raise PlaybackDenied(404, exc.message) from None
        except DomainError:
            raise PlaybackDenied(403, "forbidden") from None

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
            # the stream came here or left since the grant: follow it
            return self._route(hit[1], live, playback_id, route.suffix)
        task = self._edge_lookups.get(key)
        if task is None:
            # one store lookup per id and token, however many viewers ask at once
            task = asyncio.ensure_future(self._edge_lookup(*key))
            self._edge_lookups[key] = task
            task.add_done_callback(lambda _: self._edge_lookups.pop(key, None))
        return task

    @staticmethod
    def may_revoke(ops: Sequence[Op]) -> bool:
        """Whether a commit of `ops` may revoke a grant the edge holds."""
        return any(
            not isinstance(op, Enqueue)
            and op.collection in _GRANT_COLLECTIONS
            and (isinstance(op, Delete) or op.collection in _GRANT_DEFINING)
            for op in ops
        )

    def forget_grants(self) -> None:
        """Drop every cached grant, and any a lookup in flight would cache."""
        self._edge_cache.clear()
        self._grant_epoch += 1

    async def _edge_lookup(self, playback_id: str, token: str) -> EdgeRoute | None:
        epoch = self._grant_epoch
        try:
            target = await self.policy.resolve(playback_id, token, "v")
        except DomainError:
            return None  # the aiohttp handlers give the answer
        if target.live_stream is None:
            return None
        stream_id = target.live_stream.id
        live = self.hls.get(stream_id)
        if live is None and (self.relay is None or await self.relay.origin_url(stream_id) is None):
            return None  # live nowhere: its VOD, from the aiohttp handlers
        suffix = token_suffix(token, target)
        # A grant is reused for EDGE_CACHE_S at most (a deleted playback id or
        # signing key stops playback within that), never past the token's expiry.
        now = time.monotonic()
        until = min(now + EDGE_CACHE_S, now + target.expires - time.time())
        if len(self._edge_cache) >= EDGE_CACHE_MAX:
            self._edge_cache = {k: v for k, v in self._edge_cache.items() if v[0] > now}
            if len(self._edge_cache) >= EDGE_CACHE_MAX:
                self._edge_cache.clear()
        route = self._route(stream_id, live, playback_id, suffix)
        if route is None:
            return None
        if epoch == self._grant_epoch:  # nothing was revoked while we looked
            self._edge_cache[(playback_id, token)] = (until, stream_id, route)
        return route

    def _route(
        self, stream_id: str, live: LiveHls | None, playback_id: str, suffix: str
    ) -> EdgeRoute | None:
        if live is not None:
            return EdgeRoute(live, playback_id, suffix)
        relay = self.relay
        if relay is None:
            return None
        # the relay answers None when no node serves it: the edge hands over
        return EdgeRoute(
            None, playback_id, suffix, upstream=functools.partial(relay.request, stream_id)
        )

    async def asset_of(self, target: Target) -> Record | None:
        """The asset a target plays as VOD: its own, or its live stream's current or latest."""
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

    async def manifest(self, asset: Record) -> Manifest | None:
        """The recording in progress here (fresher than storage), or the stored one."""
        live = self.live_manifest(asset.id)
        if live is not None:
            return live
        return await try_load_manifest(
            self.blobs, asset.data.get("prefix") or asset_prefix(asset.id)
        )

    async def vod_of(self, target: Target) -> tuple[Record, Manifest]:
        """The asset a target plays as VOD and its manifest, or `NotFoundError`."""
        asset = await self.asset_of(target)
        manifest = await self.manifest(asset) if asset is not None else None
        if asset is None or manifest is None or not manifest.segments:
            raise NotFoundError("recording", message="nothing to play yet")
        return asset, manifest

    def download_key(self, asset: Record) -> str:
        """The MP4 of a ready asset; `NotReady` while it is made."""
        status = asset.data.get("mp4_status")
        if asset.data.get("status") != "ready" or status != "ready":
            if asset.data.get("status") == "errored" or status == "errored":
                raise NotFoundError("MP4", message="this asset has no MP4")
            raise NotReady("the MP4 is being prepared; try again shortly", retry_after_s=5)
        return join_key(asset.data.get("prefix") or asset_prefix(asset.id), MP4_KEY)

    async def thumbnail(self, target: Target, time_s: float | None) -> tuple[bytes, bool]:
        """A JPEG of the target at `time_s` (None: the newest picture of a live
        recording, the first of a finished one) and whether it is final (it
        never changes)."""
        asset, manifest = await self.vod_of(target)
        if time_s is None:
            time_s = max(0.0, manifest.duration_s - 1.0) if not manifest.final else 0.0
        time_s = min(time_s, manifest.duration_s)
        prefix = asset.data.get("prefix") or asset_prefix(asset.id)
        # a finished asset's frames never change: each is rendered once, then read
        cache_key = join_key(prefix, THUMBS, f"{round(time_s * 10):d}.jpg")
        if manifest.final:
            try:
                return await self.blobs.get(cache_key), True
            except BlobNotFound:
                pass
        if self._thumb_slots.locked():
            raise Busy("thumbnails are busy; retry shortly")
        async with self._thumb_slots:
            data, _info = await render_thumbnail(
                self.vod, prefix, manifest, round(time_s * 10) / 10
            )
        self.thumbnails_rendered += 1
        if manifest.final:
            await self.blobs.put(cache_key, data, content_type="image/jpeg")
        return data, manifest.final
