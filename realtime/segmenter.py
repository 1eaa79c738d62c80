"""The CMAF segmenter: hub media in, init segments / LL-HLS parts / segments out.

Owns `Segmenter`, which reads one stream's `StreamReader` and remuxes (never
re-encodes) H.264 + AAC into CMAF with our own muxer (`realtime.cmaf`):

* **Parts** (CMAF chunks, one moof+mdat holding every track) are cut every
  `part_target_s` of the *driver* track (video, or audio for audio-only
  streams). A part is `independent` when its first video sample is a keyframe.
  A keyframe always starts a new part, so every segment starts with an
  independent part.
* **Segments** close at the first video keyframe at or after
  `segment_target_s` (less 10 % for keyframes) from the segment's start
  (audio-only: at the first unit after the target). With a 1 s GOP and a
  1 s target, segments are 1 s.
* **Promptness** (the design choice): a part is emitted *as soon as its last
  frame arrives*. When a driver-track unit arrives and one more frame of the
  track's typical duration would push the part past the part target, the part
  is closed right then, with its last sample's duration taken as the typical
  (last observed) frame duration — we do not wait one more frame (~33 ms) to
  learn the exact one. Each traf carries its exact `tfdt`, so an estimate that
  is off by a tick never shifts the timeline; it can only leave a sub-frame gap
  or overlap that decoders ignore. When a part is closed because the *next*
  frame arrived (late cut: keyframe, irregular frame rate) the exact duration
  is used. AAC frames always last 1024 samples, so audio durations are exact.
  If no media arrives for `stall_flush_s` while a part is open (publisher
  stalled), the part is flushed anyway (within `_STALL_TICK_S` more) when
  RFC 8216bis lets it be short: it is independent (it begins with a keyframe)
  or it already lasts 85 % of the part target; a short dependent part waits
  for the publisher, or for the publication's end. One
  shared timer per event loop serves every running segmenter: it wakes at the
  earliest moment any of them could be stalled, not periodically and not per
  part, because on a healthy stream that moment keeps moving (every wake-up
  of a mostly idle server costs more than the check itself).
* **Timeline**: video at 90 kHz, audio at its sample rate. Each generation
  (publisher reconnect, takeover) is re-based to start where the previous one
  ended, so the timeline is monotonic; its first segment is flagged
  `discontinuity`; media sequence numbers continue; a new init segment is
  emitted only if the tracks changed.
* **Program-date-time** of a segment: the wall clock at which its first unit
  reached the server (`MediaUnit.wallclock`).
* `PublicationEnded` flushes the open part and closes a final short segment.
  When the reader closes (the manager finished the stream) the sink gets
  `on_end()`.

`feed()` is synchronous and sans-IO (tests drive it directly); `run()` is the
asyncio task that pumps the reader into it: it drains what is queued, then has
the hub call `feed()` inline as units are written (`consume_inline`: no task
wake-up per read), and ends when the reader closes or `feed()` raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field

from ingest.hub import (
    MediaUnit,
    PublicationEnded,
    PublicationStarted,
    ReaderClosed,
    ReaderItem,
    StreamReader,
    TrackKind,
)
from realtime.cmaf import (
    CmafTrack,
    Sample,
    TrackRun,
    build_fragment,
    build_init_segment,
    codecs_string,
)
from realtime.segments import FIRST_MSN, InitSegment, Part, Segment, SegmentSink

log = logging.getLogger(__name__)

LATENCY_MODES: dict[str, tuple[float, float]] = {
    "low": (0.2, 1.0),
    "standard": (1.0, 4.0),
}
"""latency_mode -> (part_target_s, segment_target_s)."""

_STALL_TICK_S = 0.05
"""Least time between two stall checks (the extra delay a stalled part may wait)."""


@dataclass(slots=True)
class _Pending:
    dts: int
    pts: int
    data: bytes
    sync: bool


@dataclass(slots=True)
class _TrackState:
    track: CmafTrack
    in_scale: int
    offset: int = 0
    floor: int = 0
    last_dts: int | None = None
    typical: int = 0
    avg: float = 0.0
    """Running mean of the sample duration (ticks), for the last sample of an eager part."""
    pending: list[_Pending] = field(default_factory=list)
    end: int = 0
    """Decode end of the last sample emitted, in media ticks."""


class Segmenter:
    """Remux one stream's hub media into CMAF parts and segments for a `SegmentSink`."""

    def __init__(
        self,
        reader: StreamReader | None,
        sink: SegmentSink,
        *,
        part_target_s: float,
        segment_target_s: float,
        stall_flush_s: float | None = None,
        start_msn: int | None = None,
    ) -> None:
        """`start_msn` continues a playlist another segmenter left (its first
        segment is then a discontinuity); None starts a new one at FIRST_MSN."""
        if part_target_s <= 0 or segment_target_s < part_target_s:
            raise ValueError("need 0 < part_target_s <= segment_target_s")
        self.reader = reader
        self.sink = sink
        self.part_target_s = part_target_s
        self.segment_target_s = segment_target_s
        self.stall_flush_s = stall_flush_s if stall_flush_s is not None else max(part_target_s, 0.3)
        self.init: InitSegment | None = None
        self._last_unit_at = 0.0
        self._init_key: tuple[tuple[TrackKind, str, bytes], ...] = ()
        self.generation = 0
        self.next_msn = FIRST_MSN if start_msn is None else start_msn
        self.ended = False
        self._tracks: dict[TrackKind, _TrackState] = {}
        # The same, by kind, for the per-unit lookup (an Enum's hash is a Python call).
        self._video_st: _TrackState | None = None
        self._audio_st: _TrackState | None = None
        self._driver: TrackKind | None = None
        self._live = False
        self._waiting_keyframe = False
        self._based = False
        self._timeline_end_s = 0.0
        self._emitted_any = start_msn is not None
        self._discontinuity = False
        self._fragment_seq = 1
        # open segment
        self._parts: list[Part] = []
        self._seg_start_pts_s = 0.0
        self._seg_pdt = 0.0
        self._seg_open = False
        self._seg_start_dts = 0
        # open part
        self._part_start: int | None = None
        self._part_has_media = False
        self._part_independent = False

    # -- asyncio driver ------------------------------------------------------

    async def run(self) -> None:
        """Pump the reader until it closes, then flush and tell the sink `on_end()`."""
        if self.reader is None:
            raise RuntimeError("Segmenter.run needs a reader")
        reader = self.reader
        watch = _StallWatch.of(asyncio.get_running_loop())
        watch.add(self)
        task = asyncio.current_task()
        failure: list[Exception] = []

        def consume(item: ReaderItem) -> None:
            try:
                self.feed(item)
            except Exception as exc:
                # Keep the publisher out of it: stop consuming inline and end
                # this task with the error, as if it had come out of the loop.
                reader.consume_inline(None)
                failure.append(exc)
                if task is not None:
                    task.cancel()

        # Remux is cheap: once the queue is drained, the hub hands units to
        # feed() as they are written, saving a task wake-up per read.
        reader.consume_inline(consume)
        try:
            while True:
                item = reader.get_nowait()
                if item is None:
                    item = await reader.get()
                self.feed(item)
        except ReaderClosed:
            pass
        except asyncio.CancelledError:
            if failure:
                raise failure[0] from None
            raise
        finally:
            reader.consume_inline(None)
            watch.discard(self)
            self.close()

    def _check_stall(self, now: float) -> float:
        """No media for `stall_flush_s` while a part is open: flush it (publisher stalled).

        Returns the earliest time (`time.monotonic()`) this segmenter could next be
        stalled: a part open now stalls `stall_flush_s` after its last unit, one
        opened later no sooner than `stall_flush_s` from now."""
        if self._part_has_media and not self.ended:
            due = self._last_unit_at + self.stall_flush_s
            if now < due:
                return due
            if self._may_end_short():
                self._flush_part(None)
        return now + self.stall_flush_s

    def _may_end_short(self) -> bool:
        """Whether the open part may be emitted now, before its media reaches the
        part target. RFC 8216bis 4.4.4.9: a part lasts at least 85 % of the part
        target unless it is independent (or its segment's last, which a stall is
        not: the segment goes on). A short dependent part waits for the
        publisher (or for the end of the publication, which flushes it)."""
        if self._driver is TrackKind.AUDIO or (
            self._part_independent and self._part_start is not None
        ):
            return True
        st = self._tracks.get(self._driver) if self._driver is not None else None
        if st is None or not st.pending or self._part_start is None:
            return False
        frame = round(st.avg) or st.typical or _nominal_duration(st.track)
        media = st.pending[-1].dts + frame - self._part_start
        return media >= 0.85 * self._part_target_ticks(st)

    # -- sans-IO core ----------------------------------------------------------

    def feed(self, item: ReaderItem) -> None:
        if self.ended:
            return
        if isinstance(item, MediaUnit):
            self._on_unit(item)
        elif isinstance(item, PublicationStarted):
            self._on_started(item)
        elif isinstance(item, PublicationEnded):
            self._on_ended(item)

    def close(self) -> None:
        """Flush what is open and end the output (idempotent)."""
        if self.ended:
            return
        self._finish_generation()
        self.ended = True
        self.sink.on_end()

    # -- generations -----------------------------------------------------------

    def _on_started(self, ev: PublicationStarted) -> None:
        if self._live:
            self._finish_generation()
        self.generation = ev.generation
        tracks: list[CmafTrack] = []
        states: dict[TrackKind, _TrackState] = {}
        for kind in (TrackKind.VIDEO, TrackKind.AUDIO):
            info = next((t for t in ev.tracks if t.kind is kind), None)
            if info is None:
                continue
            try:
                track = CmafTrack.from_track_info(info, len(tracks) + 1)
            except ValueError as exc:
                log.warning(
                    "generation %d: cannot package %s track: %s", ev.generation, kind.value, exc
                )
                continue
            tracks.append(track)
            states[kind] = _TrackState(track, max(1, info.timescale))
        self._tracks = states
        self._video_st = states.get(TrackKind.VIDEO)
        self._audio_st = states.get(TrackKind.AUDIO)
        self._live = bool(states)
        if not states:
            return
        self._driver = TrackKind.VIDEO if TrackKind.VIDEO in states else TrackKind.AUDIO
        self._waiting_keyframe = self._driver is TrackKind.VIDEO
        self._based = False
        if self._emitted_any:
            self._discontinuity = True
        key = tuple((t.kind, t.codec, t.config) for t in tracks)
        if self.init is None or key != self._init_key:
            self._init_key = key
            video = states.get(TrackKind.VIDEO)
            declared = sum(t.bitrate for t in tracks)
            init = InitSegment(
                generation=ev.generation,
                data=build_init_segment(tracks),
                codecs=codecs_string(tracks),
                width=video.track.width if video else 0,
                height=video.track.height if video else 0,
                bandwidth=int(declared * 1.1),
                frame_rate=video.track.frame_rate if video else 0.0,
            )
            self.init = init
            self.sink.on_init(init)

    def _on_ended(self, ev: PublicationEnded) -> None:
        if ev.generation != self.generation:
            return
        self._finish_generation()

    def _finish_generation(self) -> None:
        if self._part_has_media:
            self._flush_part(None)
        self._close_segment()
        self._live = False

    # -- media -----------------------------------------------------------------

    def _on_unit(self, u: MediaUnit) -> None:
        if not self._live:
            return
        kind = u.kind
        is_video = kind is TrackKind.VIDEO
        st = self._video_st if is_video else self._audio_st
        if st is None:
            return
        is_driver = kind is self._driver
        if self._waiting_keyframe:
            if not (is_video and u.keyframe):
                return
            self._waiting_keyframe = False
        if not self._based:
            self._rebase(u)
        ts = st.track.timescale
        dts = _rescale(u.dts, ts, st.in_scale) + st.offset
        pts = _rescale(u.pts, ts, st.in_scale) + st.offset
        if dts < st.floor:
            return  # before the generation's first keyframe
        if st.last_dts is not None and dts <= st.last_dts:
            shift = st.last_dts + max(1, st.typical) - dts
            st.offset += shift
            dts += shift
            pts += shift
        if st.last_dts is not None:
            st.typical = dts - st.last_dts
            st.avg = st.typical if not st.avg else 0.9 * st.avg + 0.1 * st.typical
        elif not st.typical:
            st.typical = _nominal_duration(st.track)
            st.avg = float(st.typical)
        sync = u.keyframe if is_video else True

        if is_driver:
            if sync and self._seg_open and self._segment_long_enough(st, dts):
                # Audio that arrived after the last video part stays pending and
                # opens the next segment together with this keyframe.
                if self._part_start is not None:
                    self._flush_part(dts)
                self._close_segment(dts)
            elif self._part_start is not None and (
                (sync and is_video) or dts - self._part_start >= self._part_target_ticks(st)
            ):
                self._flush_part(dts)

        if not self._seg_open:
            self._seg_open = True
            self._seg_pdt = u.wallclock
            self._seg_start_pts_s = pts / ts
            self._seg_start_dts = dts
        if is_driver and self._part_start is None:
            self._part_start = dts
            self._part_independent = sync
        st.pending.append(_Pending(dts, pts, u.data, sync))
        st.last_dts = dts
        self._part_has_media = True
        self._last_unit_at = time.monotonic()

        # Eager cut: the part's end (this frame's end) is nearer the part target
        # than the next frame's end would be -> emit now, do not wait for it.
        if is_driver and self._part_start is not None and st.typical > 0:
            if dts + 1.5 * st.typical - self._part_start >= self._part_target_ticks(st):
                self._flush_part(None)
        elif not is_driver and dts - st.pending[0].dts >= self._part_target_ticks(st):
            # The driver (video) stopped while audio goes on: do not let the part grow.
            self._flush_part(None)

    def _segment_long_enough(self, st: _TrackState, dts: int) -> bool:
        target = self.segment_target_s * st.track.timescale
        # A keyframe a little early (a publisher that drops or re-times frames)
        # must not double the segment: 10 % of the target, at least half a frame.
        tolerance = st.typical / 2 if st.typical else 0
        if st.track.kind is TrackKind.VIDEO:
            tolerance = max(tolerance, 0.1 * target)
        return dts - self._seg_start_dts >= target - tolerance

    def _part_target_ticks(self, st: _TrackState) -> float:
        return self.part_target_s * st.track.timescale

    def _rebase(self, first: MediaUnit) -> None:
        ref_state = self._tracks[first.kind]
        ref_s = first.dts / ref_state.in_scale
        base_s = self._timeline_end_s
        for st in self._tracks.values():
            ts = st.track.timescale
            st.offset = round(base_s * ts) - _rescale(round(ref_s * st.in_scale), ts, st.in_scale)
            st.floor = round(base_s * ts)
            st.last_dts = None
            st.pending.clear()
        self._based = True

    def _flush_part(self, next_driver_dts: int | None) -> None:
        runs: list[TrackRun] = []
        duration = 0.0
        fallback = 0.0
        for kind, st in self._tracks.items():
            if not st.pending:
                continue
            samples: list[Sample] = []
            p = st.pending
            for i, s in enumerate(p):
                if i + 1 < len(p):
                    d = p[i + 1].dts - s.dts
                elif kind is self._driver and next_driver_dts is not None:
                    d = next_driver_dts - s.dts
                elif kind is TrackKind.AUDIO and st.track.codec.startswith("mp4a"):
                    d = 1024 if st.track.timescale == st.track.sample_rate else round(st.avg)
                else:
                    d = round(st.avg) or st.typical or _nominal_duration(st.track)
                    if kind is self._driver and self._part_start is not None:
                        # an eager cut's last frame is estimated: never past the
                        # part target (RFC 8216bis 4.4.4.9), as ms timestamps
                        # would make it by a fraction of a millisecond
                        room = self._part_start + self._part_target_ticks(st) - s.dts
                        if room >= d / 2:
                            d = min(d, int(room))
                d = max(1, d)
                samples.append(Sample(s.data, d, s.sync, s.pts - s.dts))
            runs.append(TrackRun(st.track.track_id, p[0].dts, tuple(samples)))
            total = sum(x.duration for x in samples)
            st.end = p[0].dts + total
            seconds = total / st.track.timescale
            if kind is self._driver:
                duration = seconds
            else:
                fallback = max(fallback, seconds)
            st.pending = []
        if not runs:
            return
        data = build_fragment(self._fragment_seq, runs)
        self._fragment_seq += 1
        assert self.init is not None
        part = Part(
            msn=self.next_msn,
            index=len(self._parts),
            data=data,
            duration=duration or fallback,
            independent=(self._driver is TrackKind.AUDIO)
            or (self._part_independent and self._part_start is not None),
            program_date_time=self._seg_pdt,
            discontinuity=self._discontinuity,
            generation=self.generation,
            init_generation=self.init.generation,
        )
        self._timeline_end_s = max(
            self._timeline_end_s, *(st.end / st.track.timescale for st in self._tracks.values())
        )
        self._parts.append(part)
        self._part_start = None
        self._part_has_media = False
        self._part_independent = False
        self._emitted_any = True
        self.sink.on_part(part)

    def _close_segment(self, next_start_dts: int | None = None) -> None:
        """Close the open segment; its duration is exact when the next segment's
        first driver dts is known, else the sum of its parts."""
        if not self._parts:
            self._seg_open = False
            return
        assert self.init is not None and self._driver is not None
        parts = tuple(self._parts)
        duration = sum(p.duration for p in parts)
        if next_start_dts is not None:
            duration = (next_start_dts - self._seg_start_dts) / self._tracks[
                self._driver
            ].track.timescale
        seg = Segment(
            msn=self.next_msn,
            duration=duration,
            parts=parts,
            program_date_time=self._seg_pdt,
            discontinuity=self._discontinuity,
            generation=self.generation,
            init=self.init,
            start_pts=self._seg_start_pts_s,
        )
        self._discontinuity = False
        self._parts = []
        self._seg_open = False
        self.next_msn += 1
        self.sink.on_segment(seg)


class _StallWatch:
    """The stall check of every running `Segmenter` on one event loop: a single
    timer, armed for the earliest moment any member could be stalled (but no
    sooner than `_STALL_TICK_S` after the last check)."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _StallWatch] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._members: dict[Segmenter, None] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        """`time.monotonic()` the armed timer fires at."""

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _StallWatch:
        watch = cls._by_loop.get(loop)
        if watch is None:
            watch = cls._by_loop[loop] = cls(loop)
        return watch

    def add(self, seg: Segmenter) -> None:
        self._members[seg] = None
        due = time.monotonic() + seg.stall_flush_s
        if self._handle is None or due < self._due:
            self._arm(due)

    def discard(self, seg: Segmenter) -> None:
        self._members.pop(seg, None)
        if not self._members and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, due: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._due = due
        self._handle = self._loop.call_later(max(0.0, due - time.monotonic()), self._tick)

    def _tick(self) -> None:
        self._handle = None
        now = time.monotonic()
        due = now + 3600.0
        for seg in list(self._members):
            try:
                seg_due = seg._check_stall(now)
            except Exception:  # one broken sink must not stop the others' checks
                log.exception("stall flush failed")
                seg_due = now + seg.stall_flush_s
            if seg_due < due:
                due = seg_due
        if self._members:
            self._arm(max(due, now + _STALL_TICK_S))


def _rescale(v: int, to_scale: int, from_scale: int) -> int:
    if to_scale == from_scale:
        return v
    return (2 * v * to_scale + from_scale) // (2 * from_scale)


def _nominal_duration(track: CmafTrack) -> int:
    if track.kind is TrackKind.AUDIO:
        return 1024
    fps = track.frame_rate if 5 <= track.frame_rate <= 240 else 30.0
    return round(track.timescale / fps)
