"""Recorded rooms as broadcasts: the room composite's hub stream → LL-HLS → asset.

A room created with ``record: true`` publishes its composite (grid + mixed
audio) into the hub under the room id with source ``"room"``. `RoomBroadcasts`
is the hub observer for those publications: it starts LL-HLS for the stream
(viewers use the room's playback id), records it into a new asset with
``source: room``, and when the composite's publication ends (the room
finished) finalises the recording, marks the asset ``ready`` and links it
from the room record (``asset_id``). There is no reconnect window: a room's
composite ends only when the room does.

Finishing runs in this object's own tasks and `close()` waits for them (the
app's background tasks are cancelled on shutdown before media closes). A
recording whose node died is finished by `adopt()` from what was stored —
called by the rooms keeper (`control.rooms.RoomKeeper`) for rooms left
``active``, or here when a new broadcast of the room finds a stale
``active_asset_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from control.domain.assets import AssetService, asset_prefix, recording_warnings
from control.domain.rooms import ROOM_RECORDS, ROOMS_COLLECTION
from control.ids import new_id
from control.outbox import Change, Outbox
from control.store.base import Op, Store
from ingest.hub import HubObserver, Publication, Stream
from realtime.hls.manager import LiveHlsManager, LiveOutput
from vod.blobstore import BlobError, BlobStore
from vod.manifest import Manifest
from vod.recorder import Recorder, RecordingFailed, finalize_recording

log = logging.getLogger(__name__)

SOURCE = "room"


@dataclass(slots=True)
class _RoomBroadcast:
    room_id: str
    asset_id: str
    recorder: Recorder
    created: asyncio.Task[Any] | None = None
    finishing: asyncio.Task[None] | None = None


class RoomBroadcasts(HubObserver):
    """See the module docstring; `adopt()` finalises a recording whose node died."""

    def __init__(
        self,
        *,
        store: Store,
        outbox: Outbox,
        assets: AssetService,
        hls: LiveHlsManager,
        blobs: BlobStore,
        spawn: Callable[[Awaitable[Any]], Any],
        ready_jobs: Callable[[str], Sequence[Op]] = lambda _asset_id: (),
        jobs_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.assets = assets
        self.hls = hls
        self.blobs = blobs
        self._spawn = spawn
        self._ready_jobs = ready_jobs
        """The jobs a ready asset needs (its MP4), committed with it becoming ready."""
        self._jobs_queued = jobs_queued
        self._rooms: dict[str, _RoomBroadcast] = {}
        # `spawn` is kept for the constructor's signature; finishing a recording
        # runs in tasks of this object instead (awaited by `close()`), because the
        # app's background tasks are cancelled on shutdown before media closes
        # and a cancelled finish would leave the asset `preparing` for good.

    def owns(self, stream_id: str) -> bool:
        return stream_id in self._rooms

    def recording_manifest(self, asset_id: str) -> Manifest | None:
        for b in self._rooms.values():
            if b.asset_id == asset_id and b.finishing is None:
                return b.recorder.manifest
        return None

    # -------------------------------------------------------------- hub observer
    def publication_started(self, stream: Stream, publication: Publication) -> None:
        if stream.id not in self._rooms:
            asset_id = new_id("as")
            b = _RoomBroadcast(
                stream.id,
                asset_id,
                Recorder(
                    self.blobs,
                    asset_prefix(asset_id),
                    kind="room",
                    on_warning=recording_warnings(self.assets, asset_id),
                ),
            )
            self._rooms[stream.id] = b
            b.created = asyncio.get_running_loop().create_task(self._create_asset(b))
        self.hls.serve(stream, LiveOutput(sinks=(self._rooms[stream.id].recorder,)))

    def publication_ended(self, stream: Stream, publication: Publication, reason: str) -> None:
        self.hls.publication_ended(stream, publication, reason)
        if reason == "takeover" or stream.id not in self._rooms:
            return
        self._start_finish(self._rooms[stream.id])

    # ------------------------------------------------------------------- work
    async def _create_asset(self, b: _RoomBroadcast) -> None:
        room = await self.store.get(ROOMS_COLLECTION, b.room_id)
        policy = room.data.get("playback_policy", "public") if room is not None else "public"
        await self.assets.create(
            source=SOURCE, policy=policy, extra={"room_id": b.room_id}, asset_id=b.asset_id
        )
        stale = room.data.get("active_asset_id") if room is not None else None
        await self._update_room(b.room_id, {"active_asset_id": b.asset_id})
        if stale and stale != b.asset_id:
            # an earlier broadcast of this room whose node stopped before finishing it
            await self.adopt(b.room_id, str(stale), link=False)

    async def adopt(self, room_id: str, asset_id: str, *, link: bool = True) -> None:
        """Finalise the recording `asset_id` of `room_id` from what is stored (its
        node died mid-broadcast): the asset becomes ready (or errored when nothing
        was stored); with `link`, the room's ``asset_id`` points at it."""
        if any(b.asset_id == asset_id for b in self._rooms.values()):
            return  # recording here, right now
        rec = await self.assets.get(asset_id)
        if rec is not None and rec.data.get("status") == "preparing":
            log.info("adopting room %s recording %s after a node stopped", room_id, asset_id)
            manifest = await finalize_recording(self.blobs, asset_prefix(asset_id))
            if manifest.segments:
                await self.assets.mark_ready(
                    asset_id,
                    duration_s=manifest.duration_s,
                    gaps=[g.to_dict() for g in manifest.gaps()],
                    then=self._ready_jobs(asset_id),
                )
                self._jobs_queued()
            else:
                await self.assets.mark_errored(
                    asset_id, "the room's node stopped before anything was recorded"
                )
        if link:
            await self._update_room(room_id, {"active_asset_id": None, "asset_id": asset_id})

    def _start_finish(self, b: _RoomBroadcast) -> asyncio.Task[None]:
        if b.finishing is None:
            b.finishing = asyncio.get_running_loop().create_task(
                self._finish(b), name=f"room-broadcast-finish:{b.room_id}"
            )
        return b.finishing

    async def finish(self, room_id: str) -> None:
        """End the room's broadcast: finalise the recording, asset ready, room linked.
        Idempotent; a second call waits for the first."""
        b = self._rooms.get(room_id)
        if b is None:
            return
        await asyncio.shield(self._start_finish(b))

    async def _finish(self, b: _RoomBroadcast) -> None:
        room_id = b.room_id
        try:
            self.hls.finish(room_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(b.recorder.ended.wait(), 5.0)
            failed: str | None = None
            try:
                manifest = await b.recorder.finalize()
            except (RecordingFailed, BlobError, OSError) as exc:
                failed, manifest = str(exc) or type(exc).__name__, b.recorder.manifest
            if b.created is not None:
                try:
                    await b.created
                except Exception:
                    log.exception("room %s: creating its asset failed", room_id)
            if failed is not None:
                await self.assets.mark_errored(
                    b.asset_id,
                    f"the room's recording could not be finalized: {failed}",
                    error_type="storage_failed",
                )
            elif manifest.segments:
                await self.assets.mark_ready(
                    b.asset_id,
                    duration_s=manifest.duration_s,
                    gaps=[g.to_dict() for g in manifest.gaps()],
                    then=self._ready_jobs(b.asset_id),
                )
                self._jobs_queued()
            else:
                await self.assets.mark_errored(
                    b.asset_id, "the room ended before anything was recorded"
                )
            await self._update_room(room_id, {"active_asset_id": None, "asset_id": b.asset_id})
        except Exception:
            log.exception("room %s: finishing its recording failed", room_id)
        finally:
            if self._rooms.get(room_id) is b:
                del self._rooms[room_id]

    async def close(self) -> None:
        """Shutdown: finish every broadcast (in flight or not) before media closes."""
        for b in list(self._rooms.values()):
            self._start_finish(b)
        pending = [b.finishing for b in self._rooms.values() if b.finishing is not None]
        if pending:
            await asyncio.wait(pending, timeout=15)

    async def _update_room(self, room_id: str, fields: dict[str, Any]) -> None:
        """Set `fields` on the room's record (through the outbox, so this node's
        commit listeners see it)."""

        async def attempt() -> Change[None]:
            rec = await self.store.get(ROOMS_COLLECTION, room_id)
            if rec is None:
                return Change(None)
            data = {**rec.data, **fields}
            return Change(None, [ROOM_RECORDS.put(room_id, data, expect_version=rec.version)])

        await self.outbox.compare_and_set(attempt, what=f"room {room_id}")


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
