"""The live lifecycle: what happens to a live stream between connect and idle.

`LiveLifecycle` is the one object that sees a broadcast whole. It is

* the `PublishAuthority` ingest asks (it wraps `StoreAuthority`): a granted
  publish emits ``live_stream.connected`` and makes sure the broadcast has its
  asset (``asset.created``, ``active_asset_id``) and recorder;
* the hub's observer (through `HubDispatch`): a publication starts LL-HLS
  (`LiveHlsManager.serve`, with the stream's latency mode, the recorder as an
  extra sink and this object told when it is playable); the first playable
  part emits ``live_stream.active``; a publication ending emits
  ``live_stream.disconnected`` and starts the reconnect window;
* the `LiveControl` the API kicks publishers with (reset key, disable,
  complete, delete);
* the finisher: when the window closes (or on complete/disable/delete) the
  playlist ends, the recording is finalised from its manifest, the stream goes
  ``idle`` and the asset ``ready`` (``asset.live_stream_completed``,
  ``asset.ready``), and the MP4 job is queued.

Durability: the node that holds a broadcast renews a named lease
``ingest:<id>`` in the store. A sweep (at start and then periodically) finds
streams still marked active whose lease nobody holds — their node died — and
runs their reconnect window here, so a kill -9 still ends in a ready asset made
of everything that was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from control.domain.assets import AssetService, asset_prefix, recording_warnings
from control.domain.errors import NotFoundError
from control.domain.live_streams import (
    COLLECTION as LIVE_STREAMS,
)
from control.domain.live_streams import (
    Action,
    LiveStreamService,
    LiveStreamStatus,
)
from control.faults import fault_point
from control.ingest_health import forget_health, report_health
from control.positions import PositionKeeper, forget_position, load_position
from control.publish_authority import StoreAuthority
from control.store.base import Op, Record, Store
from ingest.hub import HubObserver, Publication, Stream
from ingest.ports import PublishDenied, PublishGrant
from realtime.hls.disk_window import DiskWindows
from realtime.hls.manager import LiveHlsManager, LiveOutput
from realtime.segments import Continuation, SegmentSink, SegmentSource
from vod.blobstore import BlobError, BlobStore, join_key
from vod.manifest import Manifest
from vod.recorder import Recorder, RecordingFailed, finalize_recording

log = logging.getLogger(__name__)

ENDS_BROADCAST = frozenset({"completed", "disabled", "deleted"})
KICK_REASONS = ENDS_BROADCAST | {"stream_key_reset"}
"""Why the API drops a publisher (`LiveLifecycle.kick`)."""


def origin_key(live_stream_id: str) -> str:
    """The store key naming the node whose LL-HLS serves the stream (its origin)."""
    return f"origin:{live_stream_id}"


"""Kick reasons after which no reconnect window runs."""

LEASE_TTL_S = 10.0
HEARTBEAT_S = 3.0
SWEEP_EVERY_S = 15.0
GRANT_TIMEOUT_S = 10.0
"""A granted publish that has not started publishing by then counts as a disconnect
(the peer left before its media, or sent none): otherwise nothing ever ends it."""
EARLIER_WINDOW_S = 30.0
"""How much of the playlist a node taking a stream over serves from the recording."""


@dataclass(slots=True)
class _Broadcast:
    live_stream_id: str
    latency_mode: str
    record: bool
    reconnect_window_s: float
    asset_id: str | None
    recorder: Recorder | None = None
    activated: bool = False
    window: asyncio.Task[None] | None = None
    finishing: bool = False
    stream: Stream | None = None
    """The hub stream of its latest publication (kicks close that publication)."""
    resume: Continuation | None = None
    """Where another node's playlist of this stream left off (a failover)."""
    connects: int = 0
    """Granted publishes so far; a disconnect only opens the window if none came since."""
    publications: int = 0
    """Publications started so far (hub)."""
    stream_key: str | None = None
    """The key the current publisher was granted with (a reset ends it)."""
    warned: list[tuple[str, str]] | None = None
    """The warnings this node last wrote on the stream (None: none yet)."""
    active_stored: bool = False
    """The store says `active` because this node said so (until then the
    stream is `idle` while its publisher connects: not a sign of `complete`)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LiveLifecycle(HubObserver):
    def __init__(
        self,
        *,
        store: Store,
        live_streams: LiveStreamService,
        assets: AssetService,
        hls: LiveHlsManager,
        blobs: BlobStore,
        node_id: str,
        spawn: Callable[[Awaitable[Any]], Any],
        ready_jobs: Callable[[str], Sequence[Op]] = lambda _asset_id: (),
        jobs_queued: Callable[[], None] = lambda: None,
        final_retry_s: float = 120.0,
        windows: DiskWindows | None = None,
    ) -> None:
        """`windows`: where the live window of a stream that is not recorded
        keeps its segments past the live edge (None: in memory)."""
        self.final_retry_s = final_retry_s
        self.windows = windows
        self.store = store
        self.live_streams = live_streams
        self.assets = assets
        self.hls = hls
        self.blobs = blobs
        self.node_id = node_id
        self._spawn = spawn
        self._authority = StoreAuthority(store)
        self._broadcasts: dict[str, _Broadcast] = {}
        self._ready_jobs = ready_jobs
        """The jobs a ready asset needs (its MP4), committed with it becoming ready."""
        self._jobs_queued = jobs_queued
        self._background: asyncio.Task[None] | None = None
        self._waiting: dict[str, float] = {}
        """Orphan candidates whose lease another node held when seen (id → first seen)."""
        self.accepting = True
        """False while the node drains: no new publisher is granted."""

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.windows is not None:
            await asyncio.to_thread(self.windows.clear_dead)
        await self.sweep()
        self._background = asyncio.get_running_loop().create_task(
            self._maintain(), name="live-lifecycle"
        )

    async def stop(self) -> None:
        """Shutdown: publishers are dropped; broadcasts stay 'active' in the store
        and the next node (or this one restarted) runs their reconnect window."""
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        for b in list(self._broadcasts.values()):
            if b.window is not None:
                b.window.cancel()
            self._close_publication(b, "shutdown")
        await self.hls.close()
        for b in list(self._broadcasts.values()):
            if b.recorder is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(b.recorder.close(), 10)
            await self.store.release_lease(self._lease(b.live_stream_id), self.node_id)
            with contextlib.suppress(Exception):
                await self._release_origin(b.live_stream_id)
        self._broadcasts.clear()
        if self.windows is not None:
            await asyncio.to_thread(self.windows.close)

    def recording_manifest(self, asset_id: str) -> Manifest | None:
        """The live manifest of a recording in progress here (fresher than storage)."""
        for b in self._broadcasts.values():
            if b.asset_id == asset_id and b.recorder is not None and not b.finishing:
                return b.recorder.manifest
        return None

    # ---------------------------------------------------- PublishAuthority
    async def authorize_publish(
        self, stream_key: str, *, protocol: str, remote: str
    ) -> PublishGrant:
        if not self.accepting:
            raise PublishDenied("draining", "this server is draining: publish to another")
        grant = await self._authority.authorize_publish(
            stream_key, protocol=protocol, remote=remote
        )
        ls_id = grant.live_stream_id
        b = self._broadcasts.get(ls_id)
        if b is None:
            b = self._broadcasts.setdefault(ls_id, _Broadcast(ls_id, "low", True, 60, None))
        async with b.lock:
            if self._broadcasts.get(ls_id) is not b:  # finished while we waited
                return await self.authorize_publish(stream_key, protocol=protocol, remote=remote)
            record = await self.live_streams.get(ls_id)
            if record is None:
                self._broadcasts.pop(ls_id, None)
                raise PublishDenied("bad_key", "unknown stream key")
            d = record.data
            b.stream_key = stream_key
            b.latency_mode = d.get("latency_mode", "low")
            b.record = bool(d.get("record", True))
            b.reconnect_window_s = float(d.get("reconnect_window_s", 60))
            b.connects += 1
            taking_over: Continuation | None = None
            if self.hls.get(ls_id) is None:
                # another node may have been serving it: continue its playlist
                b.resume = taking_over = await load_position(self.store, ls_id)
            if b.window is not None:  # a reconnect inside the window
                b.window.cancel()
                b.window = None
            await self.store.acquire_lease(self._lease(ls_id), self.node_id, LEASE_TTL_S)
            if b.record and b.asset_id is None:
                b.asset_id = await self.assets.create_for_live_stream(ls_id)
            if b.record and b.asset_id and b.recorder is None:
                b.recorder = Recorder(
                    self.blobs,
                    asset_prefix(b.asset_id),
                    kind="live",
                    on_warning=recording_warnings(self.assets, b.asset_id),
                    final_retry_s=self.final_retry_s,
                )
                await b.recorder.start()
            if taking_over is not None and b.recorder is not None:
                self._spawn(self._keep_earlier(ls_id, b.recorder, taking_over))
            await self.live_streams.apply(ls_id, Action.CONNECT)
            self._spawn(self._expect_publication(b, b.connects, b.publications))
        return grant

    async def _keep_earlier(self, ls_id: str, recorder: Recorder, resume: Continuation) -> None:
        """The segments of the playlist this node continues, read back from the
        recording, so players still on the old origin's playlist fetch them here
        (the window's worth: the stored tail of consecutive msns before ours)."""
        earlier = []
        total = 0.0
        want = resume.next_msn - 1
        for entry in reversed(recorder.manifest.segments):
            if entry.msn > want:
                continue
            if entry.msn != want or total >= EARLIER_WINDOW_S:
                break  # a hole (a segment never stored), or enough
            earlier.append(entry)
            total += entry.duration
            want -= 1
        if not earlier:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GRANT_TIMEOUT_S
        while (live := self.hls.get(ls_id)) is None:  # its publication is starting
            if loop.time() > deadline:
                return
            await asyncio.sleep(0.05)
        for entry in earlier:
            try:
                data = await self.blobs.get(join_key(recorder.prefix, entry.uri))
            except BlobError as exc:
                log.info("%s: earlier segment %d not readable (%r)", ls_id, entry.msn, exc)
                continue
            live.keep_earlier(entry.msn, data)

    async def _expect_publication(self, b: _Broadcast, connects: int, publications: int) -> None:
        await asyncio.sleep(GRANT_TIMEOUT_S)
        if self._broadcasts.get(b.live_stream_id) is not b or b.finishing:
            return
        if b.connects != connects or b.publications != publications or b.window is not None:
            return  # it published (its end opens the window), or someone else connected
        if b.stream is not None and b.stream.live:
            return
        log.info("granted publish on %s never started publishing", b.live_stream_id)
        await self._disconnected(b, "no_media", connects)

    # ------------------------------------------------------------ hub observer
    def publication_started(self, stream: Stream, publication: Publication) -> None:
        # this node serves the stream's LL-HLS now: other nodes relay from it
        self._spawn(self._claim_origin(stream.id))
        b = self._broadcasts.get(stream.id)
        if b is None:
            self.hls.serve(stream, LiveOutput())
            return
        b.publications += 1
        b.stream = stream
        positions = PositionKeeper(self.store, stream.id, b.resume, self._spawn)
        sinks: tuple[SegmentSink, ...] = (positions,)
        cold: SegmentSource | None = None
        if b.recorder is not None:
            sinks += (b.recorder,)
            cold = b.recorder  # past the live edge, segments are read back from it
        elif self.windows is not None and self.hls.get(stream.id) is None:
            window = self.windows.window(stream.id, f"{time.time_ns():x}")
            sinks += (window,)
            cold = window
        self.hls.serve(
            stream,
            LiveOutput(
                latency_mode=b.latency_mode,
                sinks=sinks,
                on_playable=lambda _generation: self._playable(stream.id),
                resume=b.resume,
                cold=cold,
            ),
        )

    def publication_ended(self, stream: Stream, publication: Publication, reason: str) -> None:
        self.hls.publication_ended(stream, publication, reason)
        if reason == "takeover":
            return  # the broadcast goes on with the new publisher
        b = self._broadcasts.get(stream.id)
        if b is None:
            return
        self._spawn(self._disconnected(b, reason, b.connects))

    def _playable(self, stream_id: str) -> None:
        """The first part of a generation is playable: the broadcast is active."""
        b = self._broadcasts.get(stream_id)
        if b is not None:
            self._spawn(self._activate(b))

    @staticmethod
    def _close_publication(b: _Broadcast, reason: str) -> None:
        if b.stream is not None and b.stream.publication is not None:
            b.stream.publication.close(reason)

    async def _activate(self, b: _Broadcast) -> None:
        if b.activated:
            return
        b.activated = True
        with contextlib.suppress(NotFoundError):
            await self.live_streams.apply(b.live_stream_id, Action.ACTIVATE)
            b.active_stored = True

    async def _disconnected(self, b: _Broadcast, reason: str, connects: int) -> None:
        with contextlib.suppress(NotFoundError):
            await self.live_streams.apply(b.live_stream_id, Action.DISCONNECT)
        if reason in ENDS_BROADCAST or b.finishing:
            return  # kick() finishes it
        if b.connects != connects or (b.stream is not None and b.stream.live):
            # someone reconnected already (perhaps granted but not yet publishing:
            # a window now would end their broadcast under them)
            return
        self._start_window(b)

    def _start_window(self, b: _Broadcast) -> None:
        if b.window is not None:
            b.window.cancel()

        async def window() -> None:
            await asyncio.sleep(b.reconnect_window_s)
            b.window = None
            await self.finish(b.live_stream_id)

        b.window = asyncio.get_running_loop().create_task(
            window(), name=f"reconnect-window:{b.live_stream_id}"
        )

    # ------------------------------------------------------------- LiveControl
    def kick(self, live_stream_id: str, reason: str) -> None:
        b = self._broadcasts.get(live_stream_id)
        if b is None:
            return
        self._close_publication(b, reason)
        if reason in ENDS_BROADCAST:
            self._spawn(self.finish(live_stream_id))

    # ------------------------------------------------------------------ finish
    async def finish(self, live_stream_id: str) -> None:
        """End the broadcast: playlist ENDLIST, recording final, stream idle, asset ready."""
        b = self._broadcasts.get(live_stream_id)
        if b is None or b.finishing:
            return
        async with b.lock:
            if b.finishing:
                return
            b.finishing = True
            if b.window is not None and b.window is not asyncio.current_task():
                b.window.cancel()
            self.hls.finish(live_stream_id)
            manifest = None
            failed: str | None = None
            try:
                if b.recorder is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(b.recorder.ended.wait(), 5.0)
                    manifest = await b.recorder.finalize()
                elif b.asset_id is not None:
                    manifest = await finalize_recording(self.blobs, asset_prefix(b.asset_id))
            except (RecordingFailed, BlobError, OSError) as exc:
                failed = str(exc) or type(exc).__name__
            with contextlib.suppress(NotFoundError):
                await self.live_streams.apply(live_stream_id, Action.IDLE)
                await self.live_streams.set_warnings(live_stream_id, [])
            await forget_health(self.store, live_stream_id)
            fault_point("finish.finalized")
            if b.asset_id is not None:
                await self._complete_asset(live_stream_id, b.asset_id, manifest, failed)
                fault_point("finish.committed")
            self._broadcasts.pop(live_stream_id, None)
            await self.store.release_lease(self._lease(live_stream_id), self.node_id)
            await self._release_origin(live_stream_id)
            await forget_position(self.store, live_stream_id)

    async def _complete_asset(
        self,
        live_stream_id: str,
        asset_id: str,
        manifest: Manifest | None,
        failed: str | None,
    ) -> None:
        """The broadcast's asset ready (with its MP4 job) or errored, and the stream
        no longer pointing at it as active: one commit, so a crash cannot leave a
        stream without its asset or a ready asset whose MP4 never comes."""

        def retire(data: dict[str, Any]) -> None:
            if data.get("active_asset_id") == asset_id:
                data["active_asset_id"] = None
            recent = [a for a in data.get("recent_asset_ids", []) if a != asset_id]
            data["recent_asset_ids"] = [asset_id, *recent][:10]

        async def also() -> list[Op]:
            return await self.live_streams.staged(live_stream_id, retire)

        completed = ("asset.live_stream_completed",)
        if failed is not None:
            # never `ready` without the VOD's ENDLIST
            await self.assets.mark_errored(
                asset_id,
                f"the recording could not be finalized: {failed}",
                events=completed,
                error_type="storage_failed",
                also=also,
            )
        elif manifest is not None and manifest.segments:
            await self.assets.mark_ready(
                asset_id,
                duration_s=manifest.duration_s,
                gaps=[g.to_dict() for g in manifest.gaps()],
                events=completed,
                then=self._ready_jobs(asset_id),
                also=also,
            )
            self._jobs_queued()
        else:
            await self.assets.mark_errored(
                asset_id,
                "the broadcast ended before any media was recorded",
                events=completed,
                also=also,
            )

    # ------------------------------------------------------- durability
    @staticmethod
    def _lease(live_stream_id: str) -> str:
        return f"ingest:{live_stream_id}"

    async def _claim_origin(self, live_stream_id: str) -> None:
        await self.store.kv_set(origin_key(live_stream_id), self.node_id, ttl_s=LEASE_TTL_S)

    async def _release_origin(self, live_stream_id: str) -> None:
        """Stop naming this node the origin (unless another took the stream over)."""
        if await self.store.kv_get(origin_key(live_stream_id)) == self.node_id:
            await self.store.kv_delete(origin_key(live_stream_id))

    async def _maintain(self) -> None:
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            # all at once: the store commits what arrives together in one
            # transaction (with SQLite shared by the workers, one lock a beat)
            await asyncio.gather(*(self._renew(ls_id) for ls_id in list(self._broadcasts)))
            try:
                await self._retry_waiting()
            except Exception:
                log.exception("adopting orphaned broadcasts failed")
            if time.monotonic() - last_sweep >= SWEEP_EVERY_S:
                last_sweep = time.monotonic()
                try:
                    await self.sweep()
                except Exception:
                    log.exception("live stream sweep failed")

    async def _renew(self, ls_id: str) -> None:
        """One heartbeat of a broadcast here: its lease, its origin claim, and
        whether the API ended it through another node."""
        try:
            await self.store.acquire_lease(self._lease(ls_id), self.node_id, LEASE_TTL_S)
            if self.hls.get(ls_id) is not None:
                await self._claim_origin(ls_id)
            await self._kicked_elsewhere(ls_id)
        except Exception:
            log.exception("lease renewal failed for %s", ls_id)
        b = self._broadcasts.get(ls_id)
        pub = b.stream.publication if b is not None and b.stream is not None else None
        if pub is not None and b is not None and not b.finishing:
            try:
                b.warned = await report_health(
                    self.store, self.live_streams, ls_id, pub, self.node_id, b.warned
                )
            except NotFoundError:
                pass
            except Exception:
                log.exception("ingest health report failed for %s", ls_id)

    async def _kicked_elsewhere(self, ls_id: str) -> None:
        """A publisher here whose stream the API deleted, disabled, completed or
        re-keyed through another node: the bus's kick may have been lost, the
        store says so."""
        b = self._broadcasts.get(ls_id)
        if b is None or b.finishing or b.stream is None or not b.stream.live:
            return
        was_active = b.active_stored  # before the read: what it says is newer
        rec = await self.store.get(LIVE_STREAMS, ls_id)
        status = rec.data.get("status") if rec is not None else None
        if rec is None:
            reason = "deleted"
        elif status == LiveStreamStatus.DISABLED.value:
            reason = "disabled"
        elif status == LiveStreamStatus.IDLE.value and was_active:
            reason = "completed"  # once active, only this node's finish sets idle
        elif b.stream_key is not None and rec.data.get("stream_key") != b.stream_key:
            reason = "stream_key_reset"
        else:
            return
        if self._broadcasts.get(ls_id) is b and not b.finishing:
            log.info("%s: %s through another node: dropping its publisher", ls_id, reason)
            self.kick(ls_id, reason)

    async def _retry_waiting(self) -> None:
        """Retry, every heartbeat, the orphans a sweep saw with another node's lease.

        A node killed mid-broadcast leaves its lease to lapse (LEASE_TTL_S); retrying
        just those streams each heartbeat adopts them soon after, instead of at the
        next full sweep. A stream whose lease outlives TTL + 2 heartbeats has a live
        owner renewing it: it is dropped here (full sweeps still look at it)."""
        now = time.monotonic()
        for ls_id, first_seen in list(self._waiting.items()):
            if ls_id in self._broadcasts or now - first_seen > LEASE_TTL_S + 2 * HEARTBEAT_S:
                self._waiting.pop(ls_id, None)
                continue
            rec = await self.store.get(LIVE_STREAMS, ls_id)
            if rec is None:
                self._waiting.pop(ls_id, None)
                continue
            await self._adopt(rec)

    async def sweep(self) -> None:
        """Adopt broadcasts whose node died: run their reconnect window here."""
        after: str | None = None
        while True:
            page = await self.store.list(LIVE_STREAMS, limit=100, starting_after=after)
            for rec in page.data:
                await self._adopt(rec)
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    async def _adopt(self, rec: Record) -> None:
        """Run the reconnect window here for ``rec`` if it is live with no living node."""
        d = rec.data
        if rec.id in self._broadcasts:
            return
        orphaned = d.get("status") == LiveStreamStatus.ACTIVE.value or d.get("active_asset_id")
        if not orphaned:
            self._waiting.pop(rec.id, None)
            return
        if not await self.store.acquire_lease(self._lease(rec.id), self.node_id, LEASE_TTL_S):
            # another node holds it: alive, or dead with its lease not lapsed yet
            self._waiting.setdefault(rec.id, time.monotonic())
            return
        self._waiting.pop(rec.id, None)
        log.info("adopting broadcast %s after a node stopped", rec.id)
        b = _Broadcast(
            rec.id,
            d.get("latency_mode", "low"),
            bool(d.get("record", True)),
            float(d.get("reconnect_window_s", 60)),
            d.get("active_asset_id"),
        )
        self._broadcasts[rec.id] = b
        if d.get("status") == LiveStreamStatus.ACTIVE.value:
            with contextlib.suppress(NotFoundError):
                await self.live_streams.apply(rec.id, Action.DISCONNECT)
        self._start_window(b)
