"""Real H.264/AAC media for realtime tests: ffmpeg makes an FLV, PyAV demuxes it
into hub items (TrackInfo + MediaUnit, AVCC video and raw AAC, as RTMP gives them)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av

from ingest.hub import MediaUnit, Publication, TrackInfo, TrackKind


def make_flv(
    path: Path,
    *,
    seconds: float = 4.0,
    fps: int = 30,
    gop: int = 30,
    size: str = "320x240",
    audio: bool = True,
    video: bool = True,
    bframes: bool = True,
) -> Path:
    """An FLV of testsrc (+ a sine tone) encoded with libx264/aac, keyframes every `gop`."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-t", str(seconds)]
    if video:
        cmd += [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            str(gop),
            "-keyint_min",
            str(gop),
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
        ]
        if not bframes:
            cmd += ["-bf", "0"]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "64k"]
    cmd += ["-f", "flv", str(path)]
    subprocess.run(cmd, check=True, timeout=60)
    return path


@dataclass
class Demuxed:
    tracks: tuple[TrackInfo, ...]
    units: list[MediaUnit]


def demux(path: Path, *, wallclock0: float | None = None) -> Demuxed:
    """Hub tracks and units (in dts order) of a media file, stamped with a synthetic
    wall clock that advances with the media time from `wallclock0`."""
    t0 = time.time() if wallclock0 is None else wallclock0
    with av.open(str(path)) as c:
        tracks: list[TrackInfo] = []
        kinds: dict[int, TrackKind] = {}
        scales: dict[int, int] = {}
        for s in c.streams:
            tb = s.time_base or Fraction(1, 1000)
            if s.type == "video":
                kind = TrackKind.VIDEO
                tracks.append(
                    TrackInfo(
                        kind,
                        "h264",
                        tb.denominator,
                        bytes(s.codec_context.extradata),
                        width=s.codec_context.width,
                        height=s.codec_context.height,
                    )
                )
            elif s.type == "audio":
                kind = TrackKind.AUDIO
                tracks.append(
                    TrackInfo(
                        kind,
                        "aac",
                        tb.denominator,
                        bytes(s.codec_context.extradata),
                        sample_rate=s.codec_context.sample_rate,
                        channels=s.codec_context.channels,
                    )
                )
            else:
                continue
            kinds[s.index] = kind
            scales[s.index] = tb.denominator
        units: list[MediaUnit] = []
        for p in c.demux():
            if p.size == 0 or p.dts is None or p.stream.index not in kinds:
                continue
            scale = scales[p.stream.index]
            pts = p.pts if p.pts is not None else p.dts
            units.append(
                MediaUnit(
                    kinds[p.stream.index],
                    p.dts,
                    pts,
                    bytes(p),
                    bool(p.is_keyframe),
                    wallclock=t0 + p.dts / scale,
                )
            )
    return Demuxed(tuple(tracks), units)


class Collect:
    """A SegmentSink that keeps everything it gets."""

    def __init__(self) -> None:
        self.inits: list = []
        self.parts: list = []
        self.segments: list = []
        self.ended = 0
        self.events: list[tuple[str, object]] = []

    def on_init(self, init) -> None:  # type: ignore[no-untyped-def]
        self.inits.append(init)
        self.events.append(("init", init))

    def on_part(self, part) -> None:  # type: ignore[no-untyped-def]
        self.parts.append(part)
        self.events.append(("part", part))

    def on_segment(self, segment) -> None:  # type: ignore[no-untyped-def]
        self.segments.append(segment)
        self.events.append(("segment", segment))

    def on_end(self) -> None:
        self.ended += 1
        self.events.append(("end", None))


async def feed_realtime(
    publication: Publication, units: list[MediaUnit], *, speed: float = 1.0, loop_count: int = 1
) -> None:
    """Write units into a hub publication paced by their dts (like `ffmpeg -re`),
    stamping each with the wall clock at which it is written. With `loop_count` > 1
    the clip repeats with timestamps continuing."""
    if not units:
        return
    scale = 1000
    first = units[0].dts
    span = units[-1].dts - first + 33
    start = time.monotonic()
    for n in range(loop_count):
        for u in units:
            dts = u.dts - first + n * span
            due = start + dts / scale / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            publication.write(
                replace(u, dts=dts, pts=u.pts - first + n * span, wallclock=time.time())
            )


# -- synthetic media (no encoder): valid containers, opaque payloads ------------

FAKE_SPS = bytes.fromhex("6764001facd9")
"""An SPS header that parses as avc1.64001f (High@3.1); the body is truncated on purpose."""
FAKE_AVCC = (
    bytes([1, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0, len(FAKE_SPS)])
    + FAKE_SPS
    + bytes([1, 0, 4])
    + bytes.fromhex("68ebe3cb")
)
AAC_LC_48K_STEREO = bytes([0x11, 0x90])


def synthetic_tracks(
    *, video: bool = True, audio: bool = True, width: int = 640
) -> tuple[TrackInfo, ...]:
    tracks: list[TrackInfo] = []
    if video:
        tracks.append(TrackInfo(TrackKind.VIDEO, "h264", 1000, FAKE_AVCC, width=width, height=360))
    if audio:
        tracks.append(
            TrackInfo(
                TrackKind.AUDIO, "aac", 1000, AAC_LC_48K_STEREO, sample_rate=48000, channels=2
            )
        )
    return tuple(tracks)


def synthetic_units(
    seconds: float,
    *,
    fps: float = 30.0,
    gop_s: float = 1.0,
    video: bool = True,
    audio: bool = True,
    start_ms: int = 0,
    wallclock0: float = 1_700_000_000.0,
) -> list[MediaUnit]:
    """Interleaved (by dts) video frames and AAC frames with millisecond timestamps,
    a keyframe every `gop_s`, wall clock = wallclock0 + media time."""
    units: list[tuple[float, int, MediaUnit]] = []
    if video:
        n = int(seconds * fps)
        per_gop = max(1, round(gop_s * fps))
        for i in range(n):
            t = i / fps
            ms = start_ms + round(t * 1000)
            key = i % per_gop == 0
            data = (b"\x00\x00\x00\x05\x65" if key else b"\x00\x00\x00\x05\x41") + bytes(
                [i & 0xFF]
            ) * 4
            units.append(
                (t, 0, MediaUnit(TrackKind.VIDEO, ms, ms, data, key, wallclock=wallclock0 + t))
            )
    if audio:
        n = int(seconds * 48000 / 1024)
        for i in range(n):
            t = i * 1024 / 48000
            ms = start_ms + round(t * 1000)
            units.append(
                (
                    t,
                    1,
                    MediaUnit(TrackKind.AUDIO, ms, ms, b"\x21" * 8, True, wallclock=wallclock0 + t),
                )
            )
    units.sort(key=lambda x: (x[0], x[1]))
    return [u for _, _, u in units]
