"""One live stream's LL-HLS state: a `SegmentSink` holding a bounded window.

Owns `LiveHls`: it keeps the init segments, the last ~30 s of complete
segments (with their parts) and the parts of the open segment, renders (and
caches) the playlists from that window, and lets HTTP handlers wait — without
polling — for a playlist position (blocking reload, `_HLS_msn`/`_HLS_part`) or
for a part that does not exist yet (preload hints). Every sink callback is
forwarded to `extra_sinks` (the VOD recorder) after the live state is updated;
a failing extra sink is logged and never disturbs live delivery.

Memory: with a `cold` source (the recording, or an on-disk cache of the
window) only the live edge stays in memory — the segments whose parts the
playlist lists — and an older segment's bytes are dropped; the
playlist still lists it, and a request for it (or for one of its parts, a
slice of it) is answered from the source (`read_cold`). A stream at
2.5 Mbit/s keeps ~1.2 MB instead of the whole 30 s (~9.4 MB).

All methods run on the event loop thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from realtime.hls.playlist import (
    PART_WINDOW_TARGETS,
    MediaPlaylistState,
    PartEntry,
    SegmentEntry,
    render_media_playlist,
    render_multivariant,
    target_duration_for,
)
from realtime.segmenter import LATENCY_MODES
from realtime.segments import (
    FIRST_MSN,
    Continuation,
    InitSegment,
    Part,
    Segment,
    SegmentSink,
    SegmentSource,
)

log = logging.getLogger(__name__)

DEFAULT_BANDWIDTH = 2_000_000
HOT_EXTRA_TARGETS = 0.0
"""Segments stay in memory this many target durations beyond the part window.
A player whose playlist is a moment old may still ask for a part just past it:
that part is read back from the cold source (a slice of its segment), which
costs that request a few milliseconds, not memory for every stream."""
COLD_CACHE = 2
"""Segments read back from the cold source kept at once (their parts are asked in a row)."""


class LiveHls:
    """LL-HLS window, playlists and waiters for one live stream (a `SegmentSink`)."""

    def __init__(
        self,
        stream_id: str,
        *,
        latency_mode: str = "low",
        extra_sinks: Sequence[SegmentSink] = (),
        window_s: float = 30.0,
        resume: Continuation | None = None,
        cold: SegmentSource | None = None,
    ) -> None:
        """`resume`: continue the playlist another server left (media sequence
        and discontinuity sequence go on from there). `cold`: where segments
        past the live edge are read back from (None: the window stays in memory)."""
        if latency_mode not in LATENCY_MODES:
            raise ValueError(f"unknown latency_mode {latency_mode!r}")
        self.stream_id = stream_id
        self.latency_mode = latency_mode
        self.part_target_s, self.segment_target_s = LATENCY_MODES[latency_mode]
        self.extra_sinks = tuple(extra_sinks)
        self.ended = False
        self.created_at = time.time()
        self.inits: dict[int, InitSegment] = {}
        self.current_init: InitSegment | None = None
        self._segments: deque[Segment] = deque()
        self._by_msn: dict[int, Segment] = {}
        self._earlier: dict[int, bytes] = {}
        """msn → bytes of segments the server this one took over from served
        (`keep_earlier`): fetchable, never listed again."""
        self._earlier_limit = resume.next_msn if resume is not None else 0
        self.cold = cold
        self._cold: dict[int, tuple[int, ...]] = {}
        """msn → part sizes of the listed segments whose bytes left memory."""
        self._cold_cache: OrderedDict[int, bytes] = OrderedDict()
        self._cold_reads: dict[int, asyncio.Future[None]] = {}
        self._cold_tasks: set[asyncio.Task[None]] = set()
        self._open: list[Part] = []
        self._open_msn = resume.next_msn if resume is not None else FIRST_MSN
        self._open_pdt = 0.0
        self._open_discontinuity = False
        self._open_init_gen = 0
        self._discontinuity_sequence = resume.discontinuity_sequence if resume is not None else 0
        self._max_part = 0.0
        self._target_duration = target_duration_for(self.segment_target_s, ())
        self._peak_bps = 0
        self._version = 0
        self._cache: dict[tuple[bool, str], bytes] = {}
        self._changed: asyncio.Future[None] | None = None
        # Blocking-reload waiters, one shared future per requested position, so a
        # new part wakes only the requests it satisfies (1,000 viewers = 1 future).
        self._part_waiters: dict[tuple[int, int], asyncio.Future[None]] = {}
        self._segment_waiters: dict[int, asyncio.Future[None]] = {}
        self._window_s = max(window_s, 8 * self.segment_target_s)
        self.last_part_at = 0.0
        """time.monotonic() of the last part (tests and benchmarks measure from it)."""
        self.listeners: list[Callable[[Part], None]] = []
        """Called synchronously with every new part (after waiters are released)."""

    # -- SegmentSink -----------------------------------------------------------

    def on_init(self, init: InitSegment) -> None:
        self.inits[init.generation] = init
        self.current_init = init
        self._touch()
        self._forward("on_init", init)

    def on_part(self, part: Part) -> None:
        if part.msn != self._open_msn or not self._open:
            self._open = []
            self._open_msn = part.msn
            self._open_pdt = part.program_date_time or (time.time() - part.duration)
            self._open_discontinuity = part.discontinuity
            self._open_init_gen = part.init_generation
        self._open.append(part)
        self._max_part = max(self._max_part, part.duration)
        self.last_part_at = time.monotonic()
        self._touch()
        for listener in self.listeners:
            listener(part)
        self._forward("on_part", part)

    def on_segment(self, segment: Segment) -> None:
        self._segments.append(segment)
        self._by_msn[segment.msn] = segment
        if segment.msn == self._open_msn:
            self._open = []
            self._open_msn = segment.msn + 1
        if segment.duration >= 0.5:
            self._peak_bps = max(self._peak_bps, int(segment.size * 8 / segment.duration))
        self._target_duration = max(
            self._target_duration, target_duration_for(self.segment_target_s, (segment.duration,))
        )
        self._evict()
        self._touch()
        self._forward("on_segment", segment)

    def on_end(self) -> None:
        self.ended = True
        self._open = []
        self._touch()
        self._forward("on_end")

    def _forward(self, method: str, *args: object) -> None:
        for sink in self.extra_sinks:
            try:
                getattr(sink, method)(*args)
            except Exception:
                log.exception("extra sink %r failed in %s for %s", sink, method, self.stream_id)

    def keep_earlier(self, msn: int, data: bytes) -> None:
        """Segment `msn` as the server this playlist continues served it (read back
        from the recording): players still holding that server's playlist fetch
        it by URI here. It is not listed — a playlist never grows backwards — and
        is forgotten once this server's own segments fill the window."""
        if msn < self._earlier_limit and not self._window_full():
            self._earlier[msn] = data

    def _window_full(self, total: float | None = None) -> bool:
        """Whether this server's own segments (of `total` seconds) fill the window."""
        if total is None:
            total = sum(s.duration for s in self._segments)
        return total >= self._window_s

    def _evict(self) -> None:
        total = sum(s.duration for s in self._segments)
        if self._earlier and self._window_full(total):
            self._earlier.clear()
        while len(self._segments) > 3 and total - self._segments[0].duration >= self._window_s:
            old = self._segments.popleft()
            total -= old.duration
            self._by_msn.pop(old.msn, None)
            self._cold.pop(old.msn, None)
            self._cold_cache.pop(old.msn, None)
            if old.discontinuity:
                self._discontinuity_sequence += 1
        if self.cold is not None:
            self._cool(total)
        live_gens = {s.init.generation for s in self._segments}
        if self.current_init is not None:
            live_gens.add(self.current_init.generation)
        live_gens.add(self._open_init_gen)
        for gen in list(self.inits):
            if gen not in live_gens:
                del self.inits[gen]

    def _cool(self, total: float) -> None:
        """Drop the bytes of the segments past the live edge (the cold source has
        them): those ending more than the part window plus `HOT_EXTRA_TARGETS`
        target durations before the end."""
        hot_s = (PART_WINDOW_TARGETS + HOT_EXTRA_TARGETS) * self._target_duration
        end = 0.0
        for i, seg in enumerate(self._segments):
            end += seg.duration
            if total - end < hot_s:
                break
            if seg.msn in self._cold:
                continue
            self._cold[seg.msn] = tuple(len(p.data) for p in seg.parts)
            bare = dataclasses.replace(
                seg, parts=tuple(dataclasses.replace(p, data=b"") for p in seg.parts)
            )
            self._segments[i] = bare
            self._by_msn[seg.msn] = bare

    def is_cold(self, msn: int) -> bool:
        """Segment `msn` is listed but its bytes are read back from the cold source."""
        return msn in self._cold

    def read_cold(self, msn: int) -> asyncio.Future[None] | None:
        """For a cold segment: a future done once its bytes are read back (shared
        by every request for it; `cold_bytes` answers then). None: not cold."""
        if msn not in self._cold or self.cold is None:
            return None
        pending = self._cold_reads.get(msn)
        if pending is not None:
            return pending
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if msn in self._cold_cache:
            done.set_result(None)
            return done
        self._cold_reads[msn] = done
        source = self.cold

        async def read() -> None:
            try:
                data = await source.read_segment(msn)
            except Exception as exc:
                log.warning("%s: segment %d not readable back (%r)", self.stream_id, msn, exc)
                data = None
            finally:
                self._cold_reads.pop(msn, None)
            if data is not None and msn in self._cold:
                self._cold_cache[msn] = data
                while len(self._cold_cache) > COLD_CACHE:
                    self._cold_cache.popitem(last=False)
            if not done.done():
                done.set_result(None)

        task = asyncio.ensure_future(read())
        self._cold_tasks.add(task)
        task.add_done_callback(self._cold_tasks.discard)
        return done

    def cold_bytes(self, msn: int, index: int | None = None) -> bytes | None:
        """A cold segment's bytes read back (or part `index` of it, a slice)."""
        data = self._cold_cache.get(msn)
        sizes = self._cold.get(msn)
        if data is None or sizes is None:
            return None
        if index is None:
            return data
        if not 0 <= index < len(sizes):
            return None
        start = sum(sizes[:index])
        return data[start : start + sizes[index]]

    def _touch(self) -> None:
        self._version += 1
        self._cache.clear()
        if self._part_waiters or self._segment_waiters:
            self._release_positions()
        fut = self._changed
        self._changed = None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _release_positions(self) -> None:
        latest = self.latest_part()
        done = self.ended
        for key in [k for k in self._part_waiters if done or (latest is not None and latest >= k)]:
            fut = self._part_waiters.pop(key)
            if not fut.done():
                fut.set_result(None)
        last = self.last_complete_msn
        for msn in [m for m in self._segment_waiters if done or last >= m]:
            fut = self._segment_waiters.pop(msn)
            if not fut.done():
                fut.set_result(None)

    # -- queries ---------------------------------------------------------------

    @property
    def has_media(self) -> bool:
        return bool(self._segments or self._open)

    @property
    def target_duration(self) -> int:
        return self._target_duration

    @property
    def first_msn(self) -> int:
        return self._segments[0].msn if self._segments else self._open_msn

    @property
    def last_complete_msn(self) -> int:
        """The newest complete segment's msn (before the first: the one before the
        open segment, so FIRST_MSN - 1 or the continued playlist's last)."""
        return self._segments[-1].msn if self._segments else self._open_msn - 1

    @property
    def open_msn(self) -> int:
        """The msn of the segment being built (its parts are the newest)."""
        return self._open_msn

    @property
    def last_msn(self) -> int:
        """The newest msn that appears in the playlist (complete or with parts)."""
        return self._open_msn if self._open else self.last_complete_msn

    def latest_part(self) -> tuple[int, int] | None:
        """(msn, index) of the newest part, or None before the first one."""
        if self._open:
            return (self._open_msn, len(self._open) - 1)
        if self._segments:
            s = self._segments[-1]
            return (s.msn, len(s.parts) - 1)
        return None

    def next_part(self) -> tuple[int, int]:
        """The part the preload hint announces."""
        if self._open:
            return (self._open_msn, len(self._open))
        return (self._open_msn, 0)

    def has_position(self, msn: int, part: int | None) -> bool:
        """Does the playlist hold segment `msn` complete (or, with `part`, that part or later)?"""
        if self.ended:
            return True
        if part is None:
            return self.last_complete_msn >= msn
        latest = self.latest_part()
        return latest is not None and latest >= (msn, part)

    def get_init(self, generation: int) -> InitSegment | None:
        return self.inits.get(generation)

    def get_segment(self, msn: int) -> Segment | None:
        return self._by_msn.get(msn)

    def segment_bytes(self, msn: int) -> bytes | None:
        """The whole segment `msn`: one of this window's in memory, or an earlier
        server's (a cold one: `read_cold`)."""
        seg = self._by_msn.get(msn)
        if seg is not None:
            return None if msn in self._cold else seg.data
        return self._earlier.get(msn)

    def get_part(self, msn: int, index: int) -> Part | None:
        if msn == self._open_msn and 0 <= index < len(self._open):
            return self._open[index]
        seg = self._by_msn.get(msn)
        if seg is not None and 0 <= index < len(seg.parts) and msn not in self._cold:
            return seg.parts[index]
        return None

    def hinted_successor(self, msn: int, index: int) -> Part | None:
        """The part a preload hint for (`msn`, `index`) turned out to be.

        The hint names the next part of the open segment, but a keyframe may close
        that segment first and the next part is then the new segment's first. A
        hinted URI must come to exist (RFC 8216bis §4.4.5.3), so (msn, len(parts))
        of a closed segment answers with (msn + 1, 0): the very bytes that came next."""
        seg = self._by_msn.get(msn)
        if seg is None or index != len(seg.parts):
            return None
        return self.get_part(msn + 1, 0)

    def part_may_come(self, msn: int, index: int) -> bool:
        """False once the part can no longer appear (its segment closed without it,
        it left the window, the stream ended)."""
        if self.ended or (msn < self.first_msn and self.has_media):
            return False
        seg = self._by_msn.get(msn)
        if seg is not None:
            # only the hinted position just past its end: it is the next segment's first
            return (
                index == len(seg.parts)
                and self.get_part(msn + 1, 0) is None
                and (self._open_msn <= msn + 1)
            )
        return msn >= self._open_msn

    def segment_may_come(self, msn: int) -> bool:
        if self.ended:
            return False
        return msn >= self._open_msn

    # -- waiting ---------------------------------------------------------------

    def change_future(self) -> asyncio.Future[None]:
        """The future that completes at the next change of this playlist (shared by
        every waiter; it is never cancelled by a waiter giving up)."""
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        return self._changed

    def position_future(self, msn: int, part: int | None) -> asyncio.Future[None]:
        """The future that completes once `has_position(msn, part)` holds, shared by
        every request for that position (so a new part wakes only those it satisfies)."""
        loop = asyncio.get_running_loop()
        if part is None:
            fut = self._segment_waiters.get(msn)
            if fut is None:
                fut = self._segment_waiters[msn] = loop.create_future()
        else:
            fut = self._part_waiters.get((msn, part))
            if fut is None:
                fut = self._part_waiters[(msn, part)] = loop.create_future()
        return fut

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `predicate()` holds after some update; False on timeout."""
        if predicate():
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await asyncio.shield(self.change_future())
            except TimeoutError:
                return predicate()
            if predicate():
                return True

    async def wait_for(
        self, msn: int, part: int | None = None, timeout_s: float | None = None
    ) -> bool:
        """Block until the playlist contains segment `msn` (or part `part` of it, or later).

        Returns False after `timeout_s` (default 3 target durations)."""
        if self.has_position(msn, part):
            return True
        t = self.blocking_timeout() if timeout_s is None else timeout_s
        fut = self.position_future(msn, part)
        try:
            async with asyncio.timeout(t):
                await asyncio.shield(fut)
        except TimeoutError:
            pass
        return self.has_position(msn, part)

    async def wait_media(self, timeout_s: float | None = None) -> bool:
        t = self.blocking_timeout() if timeout_s is None else timeout_s
        return await self.wait_until(lambda: self.has_media or self.ended, t)

    def blocking_timeout(self) -> float:
        return 3.0 * self._target_duration

    # -- playlists -------------------------------------------------------------

    def playlist_state(self) -> MediaPlaylistState:
        entries: list[SegmentEntry] = []
        for s in self._segments:
            entries.append(
                SegmentEntry(
                    msn=s.msn,
                    duration=s.duration,
                    parts=tuple(
                        PartEntry(p.msn, p.index, p.duration, p.independent) for p in s.parts
                    ),
                    program_date_time=s.program_date_time,
                    discontinuity=s.discontinuity,
                    init_generation=s.init.generation,
                )
            )
        if self._open and not self.ended:
            entries.append(
                SegmentEntry(
                    msn=self._open_msn,
                    duration=sum(p.duration for p in self._open),
                    parts=tuple(
                        PartEntry(p.msn, p.index, p.duration, p.independent) for p in self._open
                    ),
                    program_date_time=self._open_pdt,
                    discontinuity=self._open_discontinuity,
                    init_generation=self._open_init_gen,
                    complete=False,
                )
            )
        # PART-TARGET is the configured target: the segmenter keeps parts within it;
        # a part that still overshoots (a late cut on an irregular frame rate)
        # raises it, since no part may exceed it (RFC 8216bis 4.4.3.7)
        part_target = self.part_target_s
        if self._max_part > part_target + 5e-6:
            part_target = math.ceil(self._max_part * 1000) / 1000
        return MediaPlaylistState(
            target_duration=self._target_duration,
            part_target=part_target,
            media_sequence=self.first_msn,
            discontinuity_sequence=self._discontinuity_sequence,
            segments=tuple(entries),
            preload_hint=None if self.ended else self.next_part(),
            ended=self.ended,
        )

    def media_playlist(self, *, skip: bool = False, suffix: str = "") -> str:
        return self.media_playlist_bytes(skip=skip, suffix=suffix).decode()

    def media_playlist_bytes(self, *, skip: bool = False, suffix: str = "") -> bytes:
        """The rendered playlist, cached until the next change (all viewers share it)."""
        key = (skip, suffix)
        data = self._cache.get(key)
        if data is None:
            data = render_media_playlist(self.playlist_state(), skip=skip, suffix=suffix).encode()
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = data
        return data

    def bandwidth(self) -> int:
        declared = self.current_init.bandwidth if self.current_init else 0
        if self._peak_bps:
            return max(self._peak_bps, declared)
        parts = list(self._open) or [p for s in list(self._segments)[-1:] for p in s.parts]
        dur = sum(p.duration for p in parts)
        if dur > 0.1:
            return max(int(sum(len(p.data) for p in parts) * 8 / dur * 1.5), declared)
        return declared or DEFAULT_BANDWIDTH

    def multivariant_playlist(self, media_uri: str, *, suffix: str = "") -> str:
        init = self.current_init
        return render_multivariant(
            media_uri,
            bandwidth=self.bandwidth(),
            codecs=init.codecs if init else "avc1.64001f,mp4a.40.2",
            width=init.width if init else 0,
            height=init.height if init else 0,
            frame_rate=init.frame_rate if init else 0.0,
            suffix=suffix,
        )
