"""The room broadcast: one composite of the participants published into the hub.

`RoomComposite` taps every published `TrackSource` of a recorded room, and in
ONE worker thread (off the event loop) decodes each participant's video and
audio, lays the latest video frames out in a grid, mixes the audio, and
encodes once: H.264 (libx264, zerolatency) and AAC. The result is published
with `Hub.publish(stream_id, tracks, source="room")` as H.264 AVCC units (with
an avcC config) and raw AAC frames, so LL-HLS, WHEP and the recorder treat the
room like any other live stream. `close()` ends the publication.

This is the only place in rooms where media is decoded: the composite needs
pixels and samples. The SFU path (`forwarder`) never decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import math
import queue
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import av

from ingest.hub import Hub, MediaUnit, Publication, TrackInfo, TrackKind
from ingest.webrtc.h264 import build_avcc_config, find_parameter_sets, split_annexb, to_avcc
from realtime.rooms.forwarder import EncodedFrame, TrackSource

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python ≥ 3.13
        audioop = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
AAC_FRAME = 1024
BYTES_PER_SAMPLE = 4  # s16 stereo
MAX_AUDIO_BUFFER = SAMPLE_RATE * BYTES_PER_SAMPLE // 2  # 0.5 s per participant


def _asc(sample_rate: int, channels: int) -> bytes:
    rates = [
        96000,
        88200,
        64000,
        48000,
        44100,
        32000,
        24000,
        22050,
        16000,
        12000,
        11025,
        8000,
        7350,
    ]
    v = (2 << 11) | (rates.index(sample_rate) << 7) | (channels << 3)
    return v.to_bytes(2, "big")


def grid(n: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of n tiles filling width x height, even-aligned."""
    if n <= 0:
        return []
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tw = (width // cols) & ~1
    th = (height // rows) & ~1
    return [((i % cols) * tw, (i // cols) * th, tw, th) for i in range(n)]


def _mix(chunks: list[bytes], size: int) -> bytes:
    if not chunks:
        return bytes(size)
    out = chunks[0]
    for c in chunks[1:]:
        if audioop is not None:
            out = audioop.add(out, c, 2)
        else:  # pragma: no cover - fallback without audioop
            import array

            a, b = array.array("h", out), array.array("h", c)
            out = array.array(
                "h", (max(-32768, min(32767, x + y)) for x, y in zip(a, b, strict=True))
            ).tobytes()
    return out


@dataclass(slots=True)
class _Input:
    identity: str
    kind: str
    decoder: Any = None
    mime: str = ""
    latest: av.VideoFrame | None = None
    audio: bytearray | None = None
    resampler: Any = None


class RoomComposite:
    """Grid video + mixed audio of a room, encoded once, published into the hub."""

    def __init__(
        self,
        hub: Hub,
        stream_id: str,
        *,
        width: int = 1280,
        height: int = 720,
        fps: int = 25,
        video_bitrate: int = 2_500_000,
        audio_bitrate: int = 128_000,
    ) -> None:
        self.hub = hub
        self.stream_id = stream_id
        self.width, self.height, self.fps = width, height, fps
        self.video_bitrate = video_bitrate
        self.audio_bitrate = audio_bitrate
        self._queue: queue.Queue[tuple[str, str, str, EncodedFrame] | None] = queue.Queue(1000)
        self._order: list[str] = []
        self._taps: dict[str, Any] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.publication: Publication | None = None
        self.dropped_inputs = 0
        self.video_frames = 0
        self.audio_frames = 0

    # -- event-loop side ------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, name=f"room-composite-{self.stream_id}", daemon=True
        )
        self._thread.start()

    def add_source(self, identity: str, source: TrackSource) -> None:
        if source.track_id in self._taps:
            return
        if identity not in self._order:
            self._order.append(identity)
        track_id, kind = source.track_id, source.kind

        def tap(frame: EncodedFrame) -> None:
            try:
                self._queue.put_nowait((track_id, identity, kind, frame))
            except queue.Full:
                self.dropped_inputs += 1

        self._taps[track_id] = (source, tap)
        source.add_tap(tap)
        source.request_keyframe()

    def remove_source(self, source: TrackSource) -> None:
        entry = self._taps.pop(source.track_id, None)
        if entry is not None:
            entry[0].remove_tap(entry[1])
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(
                    (source.track_id, "", "remove", EncodedFrame("", 0, 0, b"", False, 0.0))
                )

    async def close(self) -> None:
        for src, tap in list(self._taps.values()):
            src.remove_tap(tap)
        self._taps.clear()
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
        if self.publication is not None:
            self.publication.close("ended")

    def _publish(self, tracks: tuple[TrackInfo, ...]) -> None:
        if not self._stop.is_set():
            self.publication = self.hub.publish(self.stream_id, tracks, source="room")

    def _write(self, unit: MediaUnit) -> None:
        if self.publication is not None:
            self.publication.write(unit)

    def _call(self, fn: Any, *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    # -- worker thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._work()
        except Exception:
            log.exception("room composite failed")

    def _work(self) -> None:
        venc = av.CodecContext.create("libx264", "w")
        venc.width, venc.height, venc.pix_fmt = self.width, self.height, "yuv420p"
        venc.time_base = fractions.Fraction(1, self.fps)
        venc.framerate = fractions.Fraction(self.fps, 1)
        venc.bit_rate = self.video_bitrate
        venc.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "g": str(self.fps * 2),
            "keyint_min": str(self.fps * 2),
            "sc_threshold": "0",
            "bf": "0",
            "repeat-headers": "1",
            "profile": "main",
        }
        venc.open()
        aenc = av.CodecContext.create("aac", "w")
        aenc.sample_rate = SAMPLE_RATE
        aenc.layout = "stereo"
        aenc.format = "fltp"
        aenc.bit_rate = self.audio_bitrate
        aenc.open()
        a_resampler = av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE)
        inputs: dict[str, _Input] = {}
        tracks: tuple[TrackInfo, ...] | None = None
        pending: list[MediaUnit] = []
        t0 = time.monotonic()
        vidx = 0
        apts = 0
        chunk = AAC_FRAME * BYTES_PER_SAMPLE
        while not self._stop.is_set():
            next_video = t0 + vidx / self.fps
            # Drain input until the next video tick.
            while True:
                timeout = next_video - time.monotonic()
                try:
                    item = (
                        self._queue.get(timeout=max(0.0, timeout))
                        if timeout > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if item is None:
                    return
                self._ingest(inputs, *item)
            now = time.monotonic()
            # Video: compose and encode one frame per tick.
            canvas = self._compose(inputs)
            canvas.pts = vidx
            vidx += 1
            if now - next_video > 1.0:  # fell far behind: skip ahead, keep real time
                vidx = int((now - t0) * self.fps) + 1
            wall = time.time()
            for pkt in venc.encode(canvas):
                nals = split_annexb(bytes(pkt))
                if tracks is None:
                    sps, pps = find_parameter_sets(nals)
                    if sps is None or pps is None:
                        continue
                    tracks = (
                        TrackInfo(
                            TrackKind.VIDEO,
                            "h264",
                            90000,
                            build_avcc_config(sps, pps),
                            width=self.width,
                            height=self.height,
                            bitrate=self.video_bitrate,
                        ),
                        TrackInfo(
                            TrackKind.AUDIO,
                            "aac",
                            SAMPLE_RATE,
                            _asc(SAMPLE_RATE, 2),
                            sample_rate=SAMPLE_RATE,
                            channels=2,
                            bitrate=self.audio_bitrate,
                        ),
                    )
                    self._call(self._publish, tracks)
                    # Start audio with the first published video frame.
                    apts = int((pkt.pts or 0) / self.fps * SAMPLE_RATE) // AAC_FRAME * AAC_FRAME
                body = [n for n in nals if n[0] & 0x1F not in (7, 8, 9)]
                ts = int((pkt.pts or 0) * 90000 / self.fps)
                self.video_frames += 1
                pending.append(
                    MediaUnit(TrackKind.VIDEO, ts, ts, to_avcc(body), bool(pkt.is_keyframe), wall)
                )
            # Audio: mix everything due up to now.
            if tracks is not None:
                audio_due = int((time.monotonic() - t0) * SAMPLE_RATE)
                while apts + AAC_FRAME <= audio_due:
                    parts = []
                    for inp in inputs.values():
                        if inp.audio is not None and len(inp.audio) >= chunk:
                            parts.append(bytes(inp.audio[:chunk]))
                            del inp.audio[:chunk]
                    pcm = _mix(parts, chunk)
                    frame = av.AudioFrame(format="s16", layout="stereo", samples=AAC_FRAME)
                    frame.planes[0].update(pcm)
                    frame.sample_rate = SAMPLE_RATE
                    frame.pts = apts
                    frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
                    for rf in a_resampler.resample(frame):
                        for pkt in aenc.encode(rf):
                            pts = int(pkt.pts) if pkt.pts is not None else apts
                            self.audio_frames += 1
                            pending.append(
                                MediaUnit(TrackKind.AUDIO, pts, pts, bytes(pkt), True, time.time())
                            )
                    apts += AAC_FRAME
            if pending and tracks is not None:
                for unit in pending:
                    self._call(self._write, unit)
                pending = []

    def _ingest(
        self,
        inputs: dict[str, _Input],
        track_id: str,
        identity: str,
        kind: str,
        frame: EncodedFrame,
    ) -> None:
        if kind == "remove":
            inputs.pop(track_id, None)
            return
        inp = inputs.get(track_id)
        if inp is None:
            inp = inputs[track_id] = _Input(identity, kind)
        if inp.decoder is None or inp.mime != frame.mime_type:
            name = {"video/h264": "h264", "video/vp8": "vp8", "audio/opus": "opus"}.get(
                frame.mime_type.lower()
            )
            if name is None:
                return
            inp.decoder = av.CodecContext.create(name, "r")
            if kind == "audio":
                inp.audio = bytearray()
                inp.resampler = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
            inp.mime = frame.mime_type
        try:
            decoded = inp.decoder.decode(av.Packet(frame.data))
        except av.FFmpegError:
            return
        for d in decoded:
            if kind == "video":
                inp.latest = d
            elif inp.audio is not None:
                for rf in inp.resampler.resample(d):
                    inp.audio += bytes(rf.planes[0])[: rf.samples * BYTES_PER_SAMPLE]
                if len(inp.audio) > MAX_AUDIO_BUFFER:
                    del inp.audio[: len(inp.audio) - MAX_AUDIO_BUFFER]

    def _compose(self, inputs: dict[str, _Input]) -> av.VideoFrame:
        w, h = self.width, self.height
        frame = av.VideoFrame(w, h, "yuv420p")
        ys, us, vs = (frame.planes[i].line_size for i in range(3))
        y = bytearray(b"\x10" * (ys * h))
        u = bytearray(b"\x80" * (us * (h // 2)))
        v = bytearray(b"\x80" * (vs * (h // 2)))
        videos: dict[str, av.VideoFrame | None] = {}
        for inp in inputs.values():
            if inp.kind == "video":
                videos[inp.identity] = inp.latest
            else:
                videos.setdefault(inp.identity, None)
        people = [i for i in self._order if i in videos]
        for (x, yy, tw, th), ident in zip(grid(len(people), w, h), people, strict=False):
            src = videos[ident]
            if src is None:
                continue
            tile = src.reformat(width=tw, height=th, format="yuv420p")
            for plane_i, (dst, stride, px, py, pw, ph) in enumerate(
                (
                    (y, ys, x, yy, tw, th),
                    (u, us, x // 2, yy // 2, tw // 2, th // 2),
                    (v, vs, x // 2, yy // 2, tw // 2, th // 2),
                )
            ):
                p = tile.planes[plane_i]
                data = bytes(p)
                sl = p.line_size
                for r in range(ph):
                    o = (py + r) * stride + px
                    dst[o : o + pw] = data[r * sl : r * sl + pw]
        frame.planes[0].update(bytes(y))
        frame.planes[1].update(bytes(u))
        frame.planes[2].update(bytes(v))
        return frame
