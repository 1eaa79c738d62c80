"""Encoded media fan-out: each published track to each subscriber, never decoded.

Receive side: the receiver's decoder thread is replaced, for the tracks we mark
with `mark_passthrough`, by a pass-through loop that hands every depayloaded
frame (`EncodedFrame`: H.264 Annex B, VP8, Opus as sent) to the track's queue.
aiortc 1.16 starts `aiortc.rtcrtpreceiver.decoder_worker` in a thread per
receiver; `install()` wraps that function once so unmarked receivers keep
decoding as usual.

Send side: a `ForwardedTrack` yields `av.Packet`s built from those frames, which
`RTCRtpSender` packetizes with `Encoder.pack()` (no encoding). Its buffer is
bounded: a subscriber that falls behind drops to the next keyframe and asks the
publisher for one; other subscribers are unaffected because the fan-out never
awaits. Keyframe requests (PLI/FIR) that a subscriber sends to our sender are
routed to `TrackSource.request_keyframe`, which sends a PLI to the publisher
(throttled).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpSender
from aiortc import rtcrtpreceiver as _rtcrtpreceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError

log = logging.getLogger(__name__)

PLI_MIN_INTERVAL_S = 0.3
KEYFRAME_RETRY_S = 0.5


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One depayloaded frame as the publisher encoded it."""

    mime_type: str
    """e.g. "video/H264", "video/VP8", "audio/opus"."""
    clock_rate: int
    timestamp: int
    """RTP timestamp (publisher's clock, wraps at 2**32)."""
    data: bytes
    keyframe: bool
    received_at: float


def is_keyframe(mime_type: str, data: bytes) -> bool:
    mt = mime_type.lower()
    if mt == "video/h264":
        i = 0
        n = len(data)
        while True:
            i = data.find(b"\x00\x00\x01", i)
            if i < 0 or i + 3 >= n:
                return False
            nal_type = data[i + 3] & 0x1F
            if nal_type in (5, 7):
                return True
            i += 3
    if mt == "video/vp8":
        return bool(data) and (data[0] & 0x01) == 0
    return True


# -- receive side: pass-through instead of decoding ------------------------------------

_PASSTHROUGH_QUEUES: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False
_install_lock = threading.Lock()


def _passthrough_worker(
    loop: asyncio.AbstractEventLoop, input_q: queue.Queue[Any], output_q: asyncio.Queue[Any]
) -> None:
    while True:
        task = input_q.get()
        if task is None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(output_q.put_nowait, None)
            return
        codec, jf = task
        data = bytes(jf.data)
        frame = EncodedFrame(
            codec.mimeType,
            codec.clockRate,
            jf.timestamp,
            data,
            is_keyframe(codec.mimeType, data),
            time.time(),
        )
        try:
            loop.call_soon_threadsafe(output_q.put_nowait, frame)
        except RuntimeError:  # loop closed
            return


def install() -> None:
    """Wrap aiortc's decoder worker once (idempotent, process-wide)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        original = _rtcrtpreceiver.decoder_worker

        def decoder_worker(loop: Any, input_q: Any, output_q: Any, decode_error: Any) -> None:
            if output_q in _PASSTHROUGH_QUEUES:
                _passthrough_worker(loop, input_q, output_q)
            else:
                original(loop, input_q, output_q, decode_error)

        _rtcrtpreceiver.decoder_worker = decoder_worker
        _installed = True


def mark_passthrough(track: MediaStreamTrack) -> None:
    """Make a remote track (from a PC's "track" event, before media flows) yield
    `EncodedFrame`s instead of decoded frames."""
    install()
    q = getattr(track, "_queue", None)
    if q is None:
        raise TypeError("not a remote track")
    _PASSTHROUGH_QUEUES.add(q)


class LowLatencyJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer releases a frame only when the first packet of the
    *next* frame arrives (one frame interval, ~33 ms at 30 fps), holds audio for 4
    packets (80 ms), and can release at most one frame per packet. For forwarding
    we release every complete frame at once: a video frame when its last packet
    (RTP marker bit) closes a gap-free run, each audio packet as it comes (a gap
    older than 2 packets is given up: audio has no retransmission). Frames go
    straight to the receiver's decoder queue (the pass-through worker), in order;
    `add()` itself then returns no frame. Reordering, NACKs and PLI-on-overflow
    stay aiortc's."""

    def __init__(
        self,
        capacity: int,
        is_video: bool,
        receiver: RTCRtpReceiver | None = None,
    ) -> None:
        super().__init__(capacity, is_video=is_video)
        self._receiver = receiver
        self.delivered: list[JitterFrame] = []
        """Frames released while no receiver is attached (tests)."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        while True:
            got = self._next_video() if self._is_video else self._next_audio(sequence_number)
            if got is None:
                return None
            self._deliver(*got)

    def _deliver(self, frame: JitterFrame, payload_type: int) -> None:
        r = self._receiver
        if r is None:
            self.delivered.append(frame)
            return
        codec = r._RTCRtpReceiver__codecs.get(payload_type)  # type: ignore[attr-defined]
        q = r._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
        if codec is None or r._RTCRtpReceiver__decoder_thread is None:  # type: ignore[attr-defined]
            return
        frame.timestamp = r._RTCRtpReceiver__timestamp_mapper.map(  # type: ignore[attr-defined]
            frame.timestamp
        )
        q.put((codec, frame))

    def _next_video(self) -> tuple[JitterFrame, int] | None:
        packets: list[Any] = []
        timestamp = None
        for count in range(self.capacity):
            pos = (self._origin + count) % self._capacity  # type: ignore[operator]
            packet = self._packets[pos]
            if packet is None:
                return None
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                # the previous frame ended without a marker: release it now
                self.remove(count)
                return (
                    JitterFrame(b"".join(x._data for x in packets), timestamp),
                    packets[0].payload_type,
                )
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return (
                    JitterFrame(b"".join(x._data for x in packets), timestamp),
                    packet.payload_type,
                )
        return None

    def _next_audio(self, sequence_number: int) -> tuple[JitterFrame, int] | None:
        origin = self._origin
        assert origin is not None
        packet = self._packets[origin % self._capacity]
        if packet is None:
            ahead = (sequence_number - origin) & 0xFFFF
            if ahead < 3 or ahead >= self.capacity:
                return None  # maybe only reordered: wait a little
            skip = next(
                (
                    i
                    for i in range(1, ahead + 1)
                    if self._packets[(origin + i) % self._capacity] is not None
                ),
                None,
            )
            if skip is None:
                return None
            self.remove(skip)
            packet = self._packets[self._origin % self._capacity]  # type: ignore[operator]
            assert packet is not None
        self.remove(1)
        return (
            JitterFrame(packet._data, packet.timestamp),  # type: ignore[attr-defined]
            packet.payload_type,
        )


def use_low_latency_jitter_buffer(receiver: RTCRtpReceiver) -> None:
    """Swap the receiver's jitter buffer (call before media flows)."""
    old = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    if isinstance(old, JitterBuffer) and not isinstance(old, LowLatencyJitterBuffer):
        receiver._RTCRtpReceiver__jitter_buffer = LowLatencyJitterBuffer(  # type: ignore[attr-defined]
            old.capacity, old._is_video, receiver
        )


def synchronization_ssrc(receiver: RTCRtpReceiver) -> int | None:
    """The publisher's media SSRC (not its RTX SSRC, which browsers also use for
    padding): the one a PLI must name."""
    rtx: dict[int, int] = getattr(receiver, "_RTCRtpReceiver__rtx_ssrc", {}) or {}
    sources = sorted(receiver.getSynchronizationSources(), key=lambda s: s.timestamp, reverse=True)
    for s in sources:
        if s.source not in rtx:
            return int(s.source)
    return None


# -- send side ------------------------------------------------------------------------------


class ForwardedTrack(MediaStreamTrack):
    """A sender track that yields already-encoded frames from one `TrackSource`."""

    def __init__(self, kind: str, *, max_frames: int | None = None, name: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.name = name
        self._max = max_frames or (90 if kind == "video" else 100)
        self._frames: deque[EncodedFrame] = deque()
        self._wakeup = asyncio.Event()
        self._waiting_keyframe = kind == "video"
        self._source: TrackSource | None = None
        self._ts_offset = 0
        self._last_out_ts: int | None = None
        self._last_in_ts: int | None = None
        self._rebase = False
        self._last_request = time.monotonic()
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self.keyframe_requests = 0

    # -- wiring ---------------------------------------------------------------------
    @property
    def source(self) -> TrackSource | None:
        return self._source

    def attach(self, source: TrackSource) -> None:
        if self._source is source:
            return
        self.detach()
        self._source = source
        self._rebase = True
        self._waiting_keyframe = self.kind == "video"
        source.add_sink(self)
        if self._waiting_keyframe:
            self._last_request = time.monotonic()
            source.request_keyframe()

    def detach(self) -> None:
        if self._source is not None:
            self._source.remove_sink(self)
            self._source = None
        self._frames.clear()

    def bind_sender(self, sender: RTCRtpSender) -> None:
        """Route the subscriber's PLI/FIR for this sender to the publisher."""
        sender._send_keyframe = self.request_keyframe  # type: ignore[method-assign]

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        if self._source is not None:
            self._source.request_keyframe()

    # -- fan-out side (never awaits) ---------------------------------------------------
    def push(self, frame: EncodedFrame) -> None:
        self.frames_in += 1
        if self.readyState != "live":
            return
        if self._waiting_keyframe:
            if not frame.keyframe:
                self.dropped += 1
                # Publishers may ignore a PLI (e.g. one right after a keyframe):
                # keep asking while we wait.
                now = time.monotonic()
                if self._source is not None and now - self._last_request > KEYFRAME_RETRY_S:
                    self._last_request = now
                    self._source.request_keyframe()
                return
            self._waiting_keyframe = False
        if len(self._frames) >= self._max:
            self.dropped += len(self._frames)
            self._frames.clear()
            if self.kind == "video" and not frame.keyframe:
                self._waiting_keyframe = True
                self.dropped += 1
                self.request_keyframe()
                return
        self._frames.append(frame)
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._frames)

    # -- sender side -------------------------------------------------------------------
    async def recv(self) -> av.Packet:
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.readyState != "live":
            raise MediaStreamError
        frame = self._frames.popleft()
        self.frames_out += 1
        packet = av.Packet(frame.data)
        packet.pts = self._out_timestamp(frame)
        packet.time_base = fractions.Fraction(1, frame.clock_rate)
        return packet

    def _out_timestamp(self, frame: EncodedFrame) -> int:
        """Keep the outgoing RTP clock continuous across a change of source."""
        ts = frame.timestamp
        if self._rebase:
            self._rebase = False
            if self._last_out_ts is not None:
                step = frame.clock_rate // 30 if self.kind == "video" else 960
                self._ts_offset = self._last_out_ts + step - ts
            self._last_in_ts = None
        out = (ts + self._ts_offset) & 0xFFFFFFFF
        self._last_out_ts = out
        return out

    def stop(self) -> None:
        super().stop()
        self._wakeup.set()
        if self._source is not None:
            self._source.remove_sink(self)
            self._source = None


class TrackSource:
    """One published track: reads the pass-through remote track and fans out."""

    def __init__(
        self,
        track_id: str,
        kind: str,
        remote: MediaStreamTrack,
        receiver: RTCRtpReceiver | None,
        *,
        on_frame: Callable[[EncodedFrame], None] | None = None,
    ) -> None:
        self.track_id = track_id
        self.kind = kind
        self.remote = remote
        self.receiver = receiver
        self.muted = False
        self.mime_type: str | None = None
        self._sinks: list[ForwardedTrack] = []
        self._taps: list[Callable[[EncodedFrame], None]] = []
        if on_frame is not None:
            self._taps.append(on_frame)
        self._last_pli = 0.0
        self._pli_pending = False
        self.plis_sent = 0
        self._task: asyncio.Task[None] | None = None
        self.frames = 0
        self.bytes = 0
        self.last_frame_at = time.monotonic()
        self.ended = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"track-source-{self.track_id}")

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.remote.recv()
                if not isinstance(frame, EncodedFrame):
                    continue
                self.frames += 1
                self.bytes += len(frame.data)
                self.last_frame_at = time.monotonic()
                self.mime_type = frame.mime_type
                for tap in tuple(self._taps):
                    try:
                        tap(frame)
                    except Exception:
                        log.exception("track tap failed")
                if self.muted:
                    continue
                for sink in tuple(self._sinks):
                    sink.push(frame)
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        finally:
            self.ended.set()

    def add_sink(self, sink: ForwardedTrack) -> None:
        if sink not in self._sinks:
            self._sinks.append(sink)

    def remove_sink(self, sink: ForwardedTrack) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def add_tap(self, tap: Callable[[EncodedFrame], None]) -> None:
        self._taps.append(tap)

    def remove_tap(self, tap: Callable[[EncodedFrame], None]) -> None:
        if tap in self._taps:
            self._taps.remove(tap)

    @property
    def sinks(self) -> tuple[ForwardedTrack, ...]:
        return tuple(self._sinks)

    def set_muted(self, muted: bool) -> None:
        self.muted = muted
        if not muted:
            self.request_keyframe()

    def request_keyframe(self) -> None:
        """Send a PLI to the publisher, at most every PLI_MIN_INTERVAL_S."""
        if self.kind != "video" or self.receiver is None or self._pli_pending:
            return
        now = time.monotonic()
        wait = self._last_pli + PLI_MIN_INTERVAL_S - now
        self._pli_pending = True
        asyncio.get_running_loop().call_later(max(0.0, wait), self._send_pli)

    def _send_pli(self) -> None:
        self._pli_pending = False
        self._last_pli = time.monotonic()
        receiver = self.receiver
        if receiver is None:
            return
        # Name the media SSRC; when unsure which one it is (the RTX mapping comes
        # from the SDP), name every SSRC heard recently: a sender ignores the others.
        ssrc = synchronization_ssrc(receiver)
        targets = {ssrc} if ssrc is not None else set()
        if not getattr(receiver, "_RTCRtpReceiver__rtx_ssrc", None):
            targets |= {s.source for s in receiver.getSynchronizationSources()}
        for target in targets:
            task = asyncio.ensure_future(receiver._send_rtcp_pli(target))
            task.add_done_callback(_ignore_result)
        self.plis_sent += 1

    async def stop(self) -> None:
        for sink in tuple(self._sinks):
            sink.detach()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.ended.set()


def _ignore_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
