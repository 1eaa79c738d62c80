"""Recorded rooms as broadcasts: the room composite's hub stream → LL-HLS → asset.

A room created with ``record: true`` publishes its composite (grid + mixed
audio) into the hub under the room id with source ``"room"``. `RoomBroadcasts`
is the hub observer for those publications: it starts LL-HLS for the stream
(viewers use the room's playback id), records it into a new asset with
``source: room``, and when the composite's publication ends (the room
finished) finalises the recording, marks the asset ``ready`` and links it
from the room record (``asset_id``). There is no reconnect window: a room's
composite ends only when the room does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from control.assets import AssetService, asset_prefix
from control.ids import new_id
from control.store.base import Conflict, Put, Store
from ingest.hub import HubObserver, Publication, Stream
from realtime.hls.manager import LiveHlsManager
from realtime.segments import SegmentSink
from vod.blobstore import BlobStore
from vod.manifest import Manifest
from vod.recorder import Recorder

log = logging.getLogger(__name__)

ROOMS = "rooms"
SOURCE = "room"


@dataclass(slots=True)
class _RoomBroadcast:
    room_id: str
    asset_id: str
    recorder: Recorder
    created: asyncio.Task[Any] | None = None
    finishing: bool = False


class RoomBroadcasts(HubObserver):
    def __init__(
        self,
        *,
        store: Store,
        assets: AssetService,
        hls: LiveHlsManager,
        blobs: BlobStore,
        spawn: Callable[[Awaitable[Any]], Any],
        on_asset_ready: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.assets = assets
        self.hls = hls
        self.blobs = blobs
        self._spawn = spawn
        self._on_asset_ready = on_asset_ready
        self._rooms: dict[str, _RoomBroadcast] = {}

    def owns(self, stream_id: str) -> bool:
        return stream_id in self._rooms

    def sinks_for(self, stream_id: str) -> Sequence[SegmentSink]:
        b = self._rooms.get(stream_id)
        return (b.recorder,) if b is not None else ()

    def recording_manifest(self, asset_id: str) -> Manifest | None:
        for b in self._rooms.values():
            if b.asset_id == asset_id and not b.finishing:
                return b.recorder.manifest
        return None

    # -------------------------------------------------------------- hub observer
    def publication_started(self, stream: Stream, publication: Publication) -> None:
        if stream.id not in self._rooms:
            asset_id = new_id("as")
            b = _RoomBroadcast(
                stream.id, asset_id, Recorder(self.blobs, asset_prefix(asset_id), kind="room")
            )
            self._rooms[stream.id] = b
            b.created = asyncio.get_running_loop().create_task(self._create_asset(b))
        self.hls.publication_started(stream, publication)

    def publication_ended(self, stream: Stream, publication: Publication, reason: str) -> None:
        self.hls.publication_ended(stream, publication, reason)
        if reason == "takeover" or stream.id not in self._rooms:
            return
        self._spawn(self.finish(stream.id))

    # ------------------------------------------------------------------- work
    async def _create_asset(self, b: _RoomBroadcast) -> None:
        await self.assets.create(
            source=SOURCE, policy="public", extra={"room_id": b.room_id}, asset_id=b.asset_id
        )
        await self._update_room(b.room_id, {"active_asset_id": b.asset_id})

    async def finish(self, room_id: str) -> None:
        b = self._rooms.get(room_id)
        if b is None or b.finishing:
            return
        b.finishing = True
        self.hls.finish(room_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(b.recorder.ended.wait(), 5.0)
        manifest = await b.recorder.finalize()
        if b.created is not None:
            await b.created
        if manifest.segments:
            await self.assets.mark_ready(
                b.asset_id,
                duration_s=manifest.duration_s,
                gaps=[g.to_dict() for g in manifest.gaps()],
            )
            if self._on_asset_ready is not None:
                await self._on_asset_ready(b.asset_id)
        else:
            await self.assets.mark_errored(
                b.asset_id, "the room ended before anything was recorded"
            )
        await self._update_room(room_id, {"active_asset_id": None, "asset_id": b.asset_id})
        self._rooms.pop(room_id, None)

    async def close(self) -> None:
        for room_id in list(self._rooms):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.finish(room_id), 10)

    async def _update_room(self, room_id: str, fields: dict[str, Any]) -> None:
        for _ in range(8):
            rec = await self.store.get(ROOMS, room_id)
            if rec is None:
                return
            data = {**rec.data, **fields}
            tags = {"status": str(data.get("status", "idle"))}
            try:
                await self.store.commit(
                    [Put(ROOMS, room_id, data, expect_version=rec.version, tags=tags)]
                )
                return
            except Conflict:
                continue
        log.warning("room %s keeps changing; asset link not saved", room_id)


class HubDispatch(HubObserver):
    """Routes room composites to `RoomBroadcasts`, everything else to the lifecycle."""

    def __init__(self, lifecycle: HubObserver, rooms: RoomBroadcasts) -> None:
        self.lifecycle = lifecycle
        self.rooms = rooms

    def _pick(self, stream: Stream, publication: Publication) -> HubObserver:
        if publication.source == SOURCE or self.rooms.owns(stream.id):
            return self.rooms
        return self.lifecycle

    def publication_started(self, stream: Stream, publication: Publication) -> None:
        self._pick(stream, publication).publication_started(stream, publication)

    def publication_ended(self, stream: Stream, publication: Publication, reason: str) -> None:
        self._pick(stream, publication).publication_ended(stream, publication, reason)
