"""Synthetic media tracks and hub helpers for the WebRTC tests."""

from __future__ import annotations

import array
import asyncio
import fractions
import math
import time
from dataclasses import dataclass, field

import av
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from ingest.hub import MediaUnit, PublicationEnded, PublicationStarted, StreamReader, TrackKind
from ingest.ports import PublishDenied, PublishGrant
from realtime.whep import PlaybackDenied


class PatternVideoTrack(VideoStreamTrack):
    """A moving colour pattern (never black), 30 fps."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width, self.height = width, height
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        x = (self.count * 4) % self.width
        self.count += 1
        y_plane = frame.planes[0]
        row = bytearray(y_plane.line_size)
        for i in range(self.width):
            row[i] = 60 + (i * 160) // self.width
        row[x : x + 16] = b"\xeb" * len(row[x : x + 16])
        y_plane.update(bytes(row) * self.height)
        for idx, value in ((1, 90), (2, 200)):
            plane = frame.planes[idx]
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneAudioTrack(AudioStreamTrack):
    """A 440 Hz tone, 20 ms frames at 48 kHz."""

    def __init__(self) -> None:
        super().__init__()
        self._n = 0
        self._t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        samples = 960
        if self._t0 is None:
            self._t0 = time.time()
        wait = self._t0 + self._n / 48000 - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        tone = array.array(
            "h",
            (
                int(8000 * math.sin(2 * math.pi * 440 * (i + self._n) / 48000))
                for i in range(samples)
            ),
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(tone.tobytes())
        frame.sample_rate = 48000
        frame.pts = self._n
        frame.time_base = fractions.Fraction(1, 48000)
        self._n += samples
        return frame


async def collect(
    reader: StreamReader,
    *,
    video: int,
    audio: int,
    timeout: float,  # noqa: ASYNC109
) -> tuple[PublicationStarted, list[MediaUnit], list[MediaUnit]]:
    started: PublicationStarted | None = None
    vids: list[MediaUnit] = []
    auds: list[MediaUnit] = []

    async def run() -> None:
        nonlocal started
        async for item in reader:
            if isinstance(item, PublicationStarted):
                started = item
            elif isinstance(item, PublicationEnded):
                continue
            elif item.kind is TrackKind.VIDEO:
                vids.append(item)
            else:
                auds.append(item)
            if started and len(vids) >= video and len(auds) >= audio:
                return

    await asyncio.wait_for(run(), timeout)
    assert started is not None
    return started, vids, auds


def decode_h264_units(config: bytes, units: list[MediaUnit]) -> list[av.VideoFrame]:
    ctx = av.CodecContext.create("h264", "r")
    ctx.extradata = config
    frames: list[av.VideoFrame] = []
    for u in units:
        frames.extend(ctx.decode(av.Packet(u.data)))
    frames.extend(ctx.decode(None))
    return frames


def decode_aac_units(config: bytes, units: list[MediaUnit]) -> list[av.AudioFrame]:
    ctx = av.CodecContext.create("aac", "r")
    ctx.extradata = config
    frames: list[av.AudioFrame] = []
    for u in units:
        frames.extend(ctx.decode(av.Packet(u.data)))
    return frames


def make_h264_aac_file(path: str, seconds: int = 4, size: str = "320x240", bframes: int = 0) -> str:
    """An MP4 with H.264 (AVCC, 1 s GOP) and AAC, made by ffmpeg (like an RTMP source)."""
    import subprocess

    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size={size}:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "30",
            "-bf",
            str(bframes),
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
            "-b:a",
            "96k",
            path,
        ],
        check=True,
    )
    return path


async def feed_file(hub, stream_id: str, path: str, *, loops: int = 100) -> None:
    """Publish the file into the hub in real time, as an RTMP publisher would."""
    from ingest.hub import TrackInfo

    with av.open(path) as container:
        vs = container.streams.video[0]
        aus = container.streams.audio[0]
        tracks = (
            TrackInfo(
                kind=TrackKind.VIDEO,
                codec="h264",
                timescale=90000,
                config=bytes(vs.codec_context.extradata),
                width=vs.width,
                height=vs.height,
            ),
            TrackInfo(
                kind=TrackKind.AUDIO,
                codec="aac",
                timescale=aus.rate,
                config=bytes(aus.codec_context.extradata),
                sample_rate=aus.rate,
                channels=2,
            ),
        )
        packets = []
        for p in container.demux():
            if p.size == 0 or p.dts is None:
                continue
            kind = TrackKind.VIDEO if p.stream.type == "video" else TrackKind.AUDIO
            scale = 90000 if kind is TrackKind.VIDEO else aus.rate
            tb = p.time_base
            dts = int(p.dts * tb * scale)
            pts = int((p.pts if p.pts is not None else p.dts) * tb * scale)
            packets.append((kind, dts, pts, bytes(p), p.is_keyframe, float(p.dts * tb)))
    packets.sort(key=lambda x: x[5])
    duration = packets[-1][5] + 0.05
    pub = hub.publish(stream_id, tracks, source="rtmp")
    t0 = time.monotonic()
    try:
        for n in range(loops):
            for kind, dts, pts, data, key, at in packets:
                wait = t0 + n * duration + at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                scale = 90000 if kind is TrackKind.VIDEO else tracks[1].sample_rate
                off = int(n * duration * scale)
                pub.write(
                    MediaUnit(
                        kind=kind,
                        dts=dts + off,
                        pts=pts + off,
                        data=data,
                        keyframe=key or kind is TrackKind.AUDIO,
                    )
                )
    finally:
        pub.close("ended")


@dataclass
class FakeAuthority:
    keys: dict[str, str] = field(
        default_factory=lambda: {"key-live-1": "ls_1", "key-live-2": "ls_2"}
    )
    disabled: set[str] = field(default_factory=lambda: {"key-disabled"})

    async def authorize_publish(
        self, stream_key: str, *, protocol: str, remote: str
    ) -> PublishGrant:
        if stream_key in self.disabled:
            raise PublishDenied("disabled", "this live stream is disabled")
        if stream_key not in self.keys:
            raise PublishDenied("bad_key", "unknown stream key")
        return PublishGrant(self.keys[stream_key])


def resolve_playback(playback_id: str, token: str | None) -> str:
    """pb_N -> ls_N (public); sig_N -> ls_N with token "good" (signed)."""
    if playback_id.startswith("pb_"):
        return "ls_" + playback_id[3:]
    if playback_id.startswith("sig_"):
        if token != "good":
            raise PlaybackDenied(403, "a valid playback token is required")
        return "ls_" + playback_id[4:]
    raise LookupError(playback_id)
