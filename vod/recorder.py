"""The recorder: a SegmentSink that keeps every completed segment in the BlobStore.

Layout under ``prefix`` (see ``vod.manifest``)::

    init-g<gen>.mp4           one per generation (publication / codec change)
    seg<index:06d>-g<gen>.m4s  one per completed segment, index from 0
    manifest.json             rewritten after each init and (at most every few) segment

The segmenter calls ``on_init``/``on_segment`` on the event loop; they only
append to a bounded in-memory queue and return. One writer task drains it in
order: segment blob first, then the manifest, so the manifest only ever names
blobs that exist. A store that cannot be reached (`BlobUnavailable`: an S3
endpoint refusing connections, timing out, answering 5xx) is waited for: the
head of the queue is retried with backoff for as long as it takes while later
segments wait behind it, so an outage shorter than the queue loses nothing. A
store that refuses the write itself (a full disk) gets ``retry_delays`` and then
the segment is counted lost. Either way the queue is bounded (``max_pending``
segments / ``max_pending_bytes``): further segments are dropped, counted
(``stats.dropped``, ``manifest.dropped``, a warning in the log and through
``on_warning``), and the next stored segment carries a discontinuity whose
reason is ``storage``, so playback stays correct and the asset says why.
Discontinuities say why they are there (``SegmentEntry.gap``): ``reconnect``,
``storage``, or ``node_lost`` (this recorder continues a manifest another
process left: a failover or a restart).

The final save (`finalize`) is retried for ``final_retry_s``; if storage is
still failing then, `RecordingFailed` says so: a recording is never reported
final without its manifest marked final (the VOD's ENDLIST).

Generations are the recorder's own, counted from 0 per asset: a new init (a
reconnect with a new segmenter, a codec change) or a recorder resumed on an
existing prefix starts the next one, with a discontinuity at its first segment.

Crash recovery: ``finalize_recording(blobs, prefix)`` (any process, any time)
loads the manifest, adopts segments that were stored after the last manifest
write (found by listing ``seg<next index>-``), marks it final and saves it.
It costs O(1) storage calls in the recording's length.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from realtime.segments import FIRST_MSN, InitSegment, Part, Segment
from vod.blobstore import BlobError, BlobNotFound, BlobStore, BlobUnavailable, join_key
from vod.manifest import (
    InitEntry,
    Manifest,
    SegmentEntry,
    init_name,
    load_manifest,
    save_manifest,
    segment_name,
    segment_prefix,
    try_load_manifest,
)

log = logging.getLogger(__name__)

INIT_CONTENT_TYPE = "video/mp4"
SEGMENT_CONTENT_TYPE = "video/iso.segment"


@dataclass(frozen=True, slots=True)
class RecordingProgress:
    """Reported after each manifest write."""

    prefix: str
    segments: int
    duration_s: float
    bytes_written: int
    dropped: int
    failed: int


ProgressCallback = Callable[[RecordingProgress], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class RecordingWarning:
    """Segments the recording lost (reported at most every `WARNING_EVERY_S`)."""

    prefix: str
    kind: str
    """``segments_dropped`` (storage too slow: the queue was full) or
    ``segments_failed`` (every retry of the write failed)."""
    msns: tuple[int, ...]
    """The live media sequence numbers of the segments lost."""
    message: str


WarningCallback = Callable[[RecordingWarning], Awaitable[None] | None]
WARNING_EVERY_S = 5.0


class RecordingFailed(Exception):
    """The recording's final manifest could not be stored: it is not a VOD."""


@dataclass(slots=True)
class RecorderStats:
    segments_written: int = 0
    bytes_written: int = 0
    dropped: int = 0
    """Segments refused because the pending queue was full."""
    failed: int = 0
    """Segments whose writes failed after all retries."""
    pending: int = 0
    pending_bytes: int = 0


@dataclass(frozen=True, slots=True)
class _InitItem:
    init: InitSegment


@dataclass(frozen=True, slots=True)
class _EndItem:
    """The publication ended: whatever comes next is a new generation."""


@dataclass(frozen=True, slots=True)
class _SegmentItem:
    segment: Segment
    after_gap: bool


class Recorder:
    """SegmentSink writing to ``blobs`` under ``prefix``; see the module docstring.

    ``await recorder.close()`` drains the queue (no more input accepted);
    ``await recorder.finalize()`` closes and marks the manifest final (VOD).
    """

    def __init__(
        self,
        blobs: BlobStore,
        prefix: str,
        *,
        on_progress: ProgressCallback | None = None,
        kind: str = "live",
        max_pending: int = 64,
        max_pending_bytes: int = 256 * 1024 * 1024,
        retry_delays: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 4.0),
        manifest_every: int = 8,
        manifest_max_age_s: float = 4.0,
        on_warning: WarningCallback | None = None,
        final_retry_s: float = 120.0,
    ) -> None:
        self.blobs = blobs
        self.on_warning = on_warning
        self.final_retry_s = final_retry_s
        self._lost: dict[str, list[int]] = {}
        """kind → msns lost since the last warning."""
        self._warning_task: asyncio.Task[None] | None = None
        self._resumed = False
        """The manifest came from storage: the next generation continues a
        recording another process was writing (``node_lost``)."""

        self.prefix = prefix.strip("/")
        join_key(self.prefix, "manifest.json")  # validate early
        self.on_progress = on_progress
        self.kind = kind
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.retry_delays = retry_delays
        self.manifest_every = max(1, manifest_every)
        self.manifest_max_age_s = manifest_max_age_s
        self.stats = RecorderStats()
        self.manifest = Manifest(kind=kind)
        self._queue: deque[_InitItem | _SegmentItem | _EndItem] = deque()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self.ended = asyncio.Event()
        """Set when the segmenter called ``on_end()`` (its last segment is queued)."""
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._gap_pending = False
        self._loaded = False
        self._current: InitSegment | None = None
        self._current_gen = -1
        self._new_generation = True
        self._unsaved = 0
        self._save_requested = False
        self._save_timer: asyncio.TimerHandle | None = None
        self._hold_until: float | None = None
        """Once closing: how long an unreachable store is still waited for."""
        self._writing: Segment | None = None
        """The segment being written (left the queue, not in the manifest yet)."""

    # -- SegmentSink (called on the event loop; never blocks) ------------------

    def on_init(self, init: InitSegment) -> None:
        if self._closing:
            return
        self._queue.append(_InitItem(init))
        self._kick()

    def on_part(self, part: Part) -> None:
        """Parts are for live LL-HLS; the recorder keeps whole segments only."""

    def on_segment(self, segment: Segment) -> None:
        if self._closing:
            log.warning("recorder %s: segment %d after close, ignored", self.prefix, segment.msn)
            return
        size = segment.size
        if (
            self.stats.pending >= self.max_pending
            or self.stats.pending_bytes + size > self.max_pending_bytes
        ):
            self.stats.dropped += 1
            self._gap_pending = True
            self._lose("segments_dropped", segment.msn)
            log.warning(
                "recorder %s: storage stalled, dropped segment msn=%d (%d dropped so far)",
                self.prefix,
                segment.msn,
                self.stats.dropped,
            )
            return
        self.stats.pending += 1
        self.stats.pending_bytes += size
        self._queue.append(_SegmentItem(segment, self._gap_pending))
        self._gap_pending = False
        self._kick()

    def on_end(self) -> None:
        """This publication is over; the asset may continue (reconnect) until finalize().

        The next segment starts a new generation (with a discontinuity) even if
        the next publication's init segment is byte-identical.
        """
        self.ended.set()
        if self._closing:
            return
        self._queue.append(_EndItem())
        self._kick()

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Load an existing manifest at ``prefix`` (resume after reconnect or restart).

        Optional: the writer does it before its first write anyway.
        """
        await self._load()

    async def flush(self) -> None:
        """Wait until everything queued so far is stored (and the manifest saved)."""
        if self._task is None or self._task.done():
            return
        self._save_requested = True
        self._kick()
        await self._drained.wait()

    async def close(self) -> Manifest:
        """Stop accepting input, store everything pending, write the manifest."""
        self._closing = True
        if self._hold_until is None:
            self._hold_until = time.monotonic() + self.final_retry_s
        self._kick()
        if self._task is not None:
            await self._task
        else:
            await self._load()
        if self._unsaved or not self.manifest.segments:
            await self._save_manifest()
        if self._warning_task is not None:
            self._warning_task.cancel()
        await self._flush_warnings()
        return self.manifest

    async def finalize(self, *, wait_for_end: float = 0.0) -> Manifest:
        """close(), then mark the manifest final (the asset becomes a VOD).

        ``wait_for_end``: first wait up to that many seconds for ``on_end()``, so
        the segmenter's last (flushed) segment is in (e.g. after
        ``LiveHlsManager.finish()``, which ends the segmenter asynchronously).
        """
        if wait_for_end > 0 and not self.ended.is_set():
            try:
                async with asyncio.timeout(wait_for_end):
                    await self.ended.wait()
            except TimeoutError:
                log.warning("recorder %s: no on_end() within %.1f s", self.prefix, wait_for_end)
        await self.close()
        if not self.manifest.final:
            self.manifest.final = True
            self.manifest.finalized_at = time.time()
            if not await self._retrying(
                "final manifest",
                lambda: save_manifest(self.blobs, self.prefix, self.manifest),
                budget_s=self.final_retry_s,
            ):
                self.manifest.final = False
                raise RecordingFailed(
                    f"the recording's final manifest could not be stored within "
                    f"{self.final_retry_s:g} s (storage failing)"
                )
        return self.manifest

    # -- the writer ----------------------------------------------------------------

    def _kick(self) -> None:
        self._drained.clear()
        self._wakeup.set()
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._task = loop.create_task(self._run(), name=f"recorder:{self.prefix}")

    async def _load(self) -> None:
        if self._loaded:
            return
        existing = await try_load_manifest(self.blobs, self.prefix)
        if existing is not None:
            # Segments stored after the last manifest save (the process died) belong
            # to this recording too: take them in before continuing it.
            await _adopt_orphans(self.blobs, self.prefix, existing)
            existing.final = False
            existing.finalized_at = None
            self.manifest = existing
            self._resumed = bool(existing.segments)
            self.stats.segments_written = 0
            self._current_gen = existing.last_generation
        self._loaded = True

    async def _run(self) -> None:
        delay = 0.2
        while not self._loaded:
            try:
                await self._load()
            except Exception as exc:
                if self._closing:
                    raise
                log.warning("recorder %s: cannot read the manifest yet (%r)", self.prefix, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        while True:
            if not self._queue:
                if self._unsaved and (self._save_requested or self._closing):
                    self._save_requested = False
                    await self._save_manifest()  # one attempt (with retries) per idle
                    if self._queue:
                        continue
                elif self._unsaved and self._save_timer is None:
                    # Caught up with a few segments unsaved: save soon, not per segment
                    # (finalize_recording() adopts segments stored after the last save).
                    self._save_timer = asyncio.get_running_loop().call_later(
                        self.manifest_max_age_s, self._request_save
                    )
                if not self._unsaved:
                    self._save_requested = False
                self._drained.set()
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            item = self._queue.popleft()
            try:
                if isinstance(item, _EndItem):
                    self._current = None
                elif isinstance(item, _InitItem):
                    await self._write_init(item.init)
                else:
                    self.stats.pending -= 1
                    self.stats.pending_bytes -= item.segment.size
                    await self._write_segment(item)
            except Exception:
                log.exception("recorder %s: unexpected writer error", self.prefix)

    def _same_init(self, init: InitSegment) -> bool:
        cur = self._current
        return cur is not None and cur.generation == init.generation and cur.data == init.data

    async def _write_init(self, init: InitSegment) -> bool:
        if self._same_init(init):
            return True
        gen = self._current_gen + 1
        name = init_name(gen)
        ok = await self._retrying(
            name, lambda: self.blobs.put(join_key(self.prefix, name), init.data, INIT_CONTENT_TYPE)
        )
        if not ok:
            return False
        self._current = init
        self._current_gen = gen
        self._new_generation = True
        self.manifest.inits.append(
            InitEntry(
                generation=gen,
                uri=name,
                codecs=init.codecs,
                width=init.width,
                height=init.height,
                bandwidth=init.bandwidth,
            )
        )
        await self._save_manifest()
        return True

    async def read_segment(self, msn: int) -> bytes | None:
        """Segment `msn` as recorded, for a live window whose memory no longer
        holds it: from the queue or the write in progress until it is stored,
        then from the store (None: not recorded, or not readable now)."""
        waiting = [i.segment for i in self._queue if isinstance(i, _SegmentItem)]
        for seg in (self._writing, *waiting):
            if seg is not None and seg.msn == msn:
                return seg.join()
        for entry in reversed(self.manifest.segments):
            if entry.msn == msn:
                try:
                    return await self.blobs.get(join_key(self.prefix, entry.uri))
                except BlobError as exc:
                    log.info("recorder %s: segment %d not readable (%r)", self.prefix, msn, exc)
                    return None
            if entry.msn < msn:
                break
        return None

    async def _write_segment(self, item: _SegmentItem) -> None:
        self._writing = item.segment
        try:
            await self._store_segment(item)
        finally:
            self._writing = None

    async def _store_segment(self, item: _SegmentItem) -> None:
        seg = item.segment
        last = self.manifest.segments[-1] if self.manifest.segments else None
        if (
            last is not None
            and self._current is not None
            and last.generation == self._current_gen
            and (seg.msn <= last.msn or seg.start_pts < last.start_pts - 1e-3)
        ):
            self._current = None  # timeline went backwards: a new publication
        if not self._same_init(seg.init) and not await self._write_init(seg.init):
            self._fail(seg)
            return
        index = len(self.manifest.segments)
        name = segment_name(index, self._current_gen)
        key = join_key(self.prefix, name)
        # Joined here, not through `seg.data`: that would keep a second copy on the
        # live window's segment for as long as it stays there.
        data = seg.join()
        ok = await self._retrying(name, lambda: self.blobs.put(key, data, SEGMENT_CONTENT_TYPE))
        if not ok:
            self._fail(seg)
            return
        discontinuity = bool(index) and (
            seg.discontinuity or item.after_gap or self._new_generation
        )
        gap = None
        if discontinuity:
            if item.after_gap:
                gap = "storage"
            elif self._resumed and self._new_generation:
                gap = "node_lost"
            else:
                gap = "reconnect"
        if self._new_generation:
            self._resumed = False
        self._new_generation = False
        self.manifest.segments.append(
            SegmentEntry(
                index=index,
                uri=name,
                duration=seg.duration,
                generation=self._current_gen,
                discontinuity=discontinuity,
                msn=seg.msn,
                program_date_time=seg.program_date_time,
                start_pts=seg.start_pts,
                size=len(data),
                gap=gap,
            )
        )
        self.stats.segments_written += 1
        self.stats.bytes_written += len(data)
        self._unsaved += 1
        # Every N segments, or (via the idle timer) within manifest_max_age_s: a
        # rewrite per segment would cost O(recording length) each time.
        # finalize_recording() adopts the few stored after the last save.
        if self._unsaved >= self.manifest_every:
            await self._save_manifest()

    def _fail(self, seg: Segment) -> None:
        self.stats.failed += 1
        self._gap_pending = True
        self._lose("segments_failed", seg.msn)
        # The next stored segment must show the hole.
        if self._queue and isinstance(self._queue[0], _SegmentItem):
            head = self._queue[0]
            self._queue[0] = _SegmentItem(head.segment, True)
        log.error("recorder %s: could not store segment msn=%d", self.prefix, seg.msn)

    def _lose(self, kind: str, msn: int) -> None:
        self._lost.setdefault(kind, []).append(msn)
        if self.on_warning is None or self._warning_task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._warning_task = loop.create_task(self._warn_while_losing())

    async def _warn_while_losing(self) -> None:
        """The first loss is told at once; later ones in one warning per few seconds."""
        try:
            while self._lost:
                await self._flush_warnings()
                await asyncio.sleep(WARNING_EVERY_S)
        finally:
            self._warning_task = None

    async def _flush_warnings(self) -> None:
        lost, self._lost = self._lost, {}
        if self.on_warning is None:
            return
        for kind, msns in lost.items():
            what = "could not be stored" if kind == "segments_failed" else "were dropped"
            warning = RecordingWarning(
                self.prefix,
                kind,
                tuple(msns),
                f"{len(msns)} segment(s) of the recording {what} (storage failing or too "
                "slow); the asset has a gap there",
            )
            try:
                result = self.on_warning(warning)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("recorder %s: on_warning failed", self.prefix)

    def _request_save(self) -> None:
        self._save_timer = None
        self._save_requested = True
        self._kick()

    async def _save_manifest(self) -> None:
        if self._save_timer is not None:
            self._save_timer.cancel()
            self._save_timer = None
        self.manifest.dropped = self.stats.dropped + self.stats.failed
        ok = await self._retrying(
            "manifest", lambda: save_manifest(self.blobs, self.prefix, self.manifest)
        )
        if ok:
            self._unsaved = 0
            await self._report()

    async def _report(self) -> None:
        if self.on_progress is None:
            return
        progress = RecordingProgress(
            prefix=self.prefix,
            segments=len(self.manifest.segments),
            duration_s=self.manifest.duration_s,
            bytes_written=self.stats.bytes_written,
            dropped=self.stats.dropped,
            failed=self.stats.failed,
        )
        try:
            result = self.on_progress(progress)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("recorder %s: on_progress failed", self.prefix)

    async def _retrying(
        self, what: str, op: Callable[[], Awaitable[object]], *, budget_s: float | None = None
    ) -> bool:
        """`op` until it succeeds: retried after each of `retry_delays`, or with
        backoff (capped at 5 s) for `budget_s` when given, or for as long as the
        store is unreachable (until the close deadline once closing). False when
        it never did."""
        deadline = None if budget_s is None else time.monotonic() + budget_s
        delays = iter(self.retry_delays)
        delay = self.retry_delays[0] if self.retry_delays else 0.2
        while True:
            try:
                await op()
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                now = time.monotonic()
                if deadline is not None:
                    wait = delay if now + delay <= deadline else None
                elif isinstance(exc, BlobUnavailable) and (
                    self._hold_until is None or now + delay <= self._hold_until
                ):
                    wait = delay  # nothing is lost by waiting: later segments queue behind
                else:
                    wait = next(delays, None)
                delay = min(delay * 2, 5.0)
                if wait is None:
                    log.error("recorder %s: giving up on %s: %r", self.prefix, what, exc)
                    return False
                log.warning("recorder %s: %s failed (%r), retrying", self.prefix, what, exc)
                await asyncio.sleep(wait)


async def finalize_recording(blobs: BlobStore, prefix: str) -> Manifest:
    """Make the asset at ``prefix`` a final VOD from what is stored (crash recovery too).

    Adopts segments stored after the last manifest write, marks the manifest
    final and saves it. Idempotent. If there is no manifest at all, returns an
    empty final manifest (nothing was recorded) after saving it.
    """
    prefix = prefix.strip("/")
    try:
        manifest = await load_manifest(blobs, prefix)
    except BlobNotFound:
        manifest = Manifest()
    if manifest.final:
        return manifest
    await _adopt_orphans(blobs, prefix, manifest)
    manifest.final = True
    manifest.finalized_at = time.time()
    await save_manifest(blobs, prefix, manifest)
    return manifest


async def _adopt_orphans(blobs: BlobStore, prefix: str, manifest: Manifest) -> None:
    from vod.probe import fragment_timing, init_codecs

    while True:
        index = len(manifest.segments)
        keys = await blobs.list(join_key(prefix, segment_prefix(index)))
        if len(keys) != 1:
            return
        name = keys[0].rsplit("/", 1)[1]
        try:
            gen = int(name.rsplit("-g", 1)[1].split(".", 1)[0])
        except (IndexError, ValueError):
            return
        try:
            init_entry = manifest.init_for(gen)
        except KeyError:
            init_key = join_key(prefix, init_name(gen))
            if not await blobs.exists(init_key):
                return
            init_bytes = await blobs.get(init_key)
            codecs = await asyncio.to_thread(init_codecs, init_bytes)
            init_entry = InitEntry(generation=gen, uri=init_name(gen), codecs=codecs)
            manifest.inits.append(init_entry)
        init_bytes = await blobs.get(join_key(prefix, init_entry.uri))
        data = await blobs.get(keys[0])
        try:
            start_pts, duration = await asyncio.to_thread(fragment_timing, init_bytes, data)
        except Exception:
            log.warning("recovery %s: %s is unreadable, stopping there", prefix, name)
            return
        prev = manifest.segments[-1] if manifest.segments else None
        same_gen = prev is not None and prev.generation == gen
        pdt = prev.program_date_time + prev.duration if prev is not None else time.time()
        manifest.segments.append(
            SegmentEntry(
                index=index,
                uri=name,
                duration=duration,
                generation=gen,
                discontinuity=prev is not None and not same_gen,
                # a reconnect (a new generation) continues the numbering too
                msn=prev.msn + 1 if prev is not None else FIRST_MSN,
                program_date_time=pdt,
                start_pts=start_pts,
                size=len(data),
            )
        )
        log.info("recovery %s: adopted %s (%.3f s)", prefix, name, duration)
