"""Probing media with PyAV: what an upload is, and small facts about CMAF fragments.

Plain functions on bytes or local paths (safe in a process pool or a thread):
``probe_file(path)`` says whether a file is a playable video and what it holds
(``ProbeResult.error`` is a human-readable reason when it is not);
``init_codecs`` gives the RFC 6381 codecs string of an init segment;
``fragment_timing`` reads a segment's start and duration (used by crash recovery).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from vod.inputs import open_input

# Keep PyAV quiet on garbage input.
av.logging.set_level(av.logging.ERROR)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    error: str | None = None
    format_name: str = ""
    duration_s: float = 0.0
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int = 0
    height: int = 0
    fps: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def remuxable(self) -> bool:
        """H.264 video with AAC audio (or none): copy into CMAF, no re-encode."""
        return self.ok and self.video_codec == "h264" and self.audio_codec in (None, "aac")


_REFERRING = {
    b"#EXTM3U": "an HLS playlist",
    b"ffconcat": "an FFmpeg concat list",
    b"<?xml": "an XML document (DASH manifest?)",
    b"<MPD": "a DASH manifest",
    b"v=0": "an SDP description",
}


def _refers_to_other_files(path: str | Path) -> str | None:
    """A precise reason for uploads that name other files or URLs (the demuxer
    allowlist refuses them anyway; this says why)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return None
    for magic, what in _REFERRING.items():
        if head.startswith(magic):
            return f"{what} is not a video file: upload the media itself"
    return None


def probe_file(path: str | Path) -> ProbeResult:
    """Open ``path`` with PyAV and describe it; never raises for bad input."""
    refused = _refers_to_other_files(path)
    if refused is not None:
        return ProbeResult(ok=False, error=refused)
    try:
        container = open_input(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        return ProbeResult(ok=False, error=f"not a media file: {_reason(exc)}")
    try:
        video = next((s for s in container.streams.video), None)
        audio = next((s for s in container.streams.audio), None)
        fmt = container.format.name
        if video is None:
            return ProbeResult(ok=False, error="no video track in the file", format_name=fmt)
        if video.codec_context.name in ("png", "mjpeg", "bmp", "gif", "webp", "tiff") and (
            container.duration is None or video.frames <= 1
        ):
            return ProbeResult(ok=False, error="a still image, not a video", format_name=fmt)
        duration = 0.0
        if container.duration is not None:
            duration = container.duration / av.time_base
        elif video.duration is not None and video.time_base is not None:
            duration = float(video.duration * video.time_base)
        rate = video.average_rate or video.guessed_rate or Fraction(0)
        # Make sure at least one video packet can actually be read.
        got_packet = False
        for packet in container.demux(video):
            if packet.size:
                got_packet = True
                break
        if not got_packet:
            return ProbeResult(ok=False, error="the video track has no frames", format_name=fmt)
        return ProbeResult(
            ok=True,
            format_name=fmt,
            duration_s=duration,
            video_codec=video.codec_context.name,
            audio_codec=audio.codec_context.name if audio is not None else None,
            width=video.codec_context.width,
            height=video.codec_context.height,
            fps=float(rate),
        )
    except (av.error.FFmpegError, ValueError) as exc:
        return ProbeResult(ok=False, error=f"unreadable media: {_reason(exc)}")
    finally:
        container.close()


def _reason(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    text = (strerror if isinstance(strerror, str) and strerror else str(exc)).strip()
    text = text or type(exc).__name__
    return text[:200]


def codec_string(codec_name: str, extradata: bytes | None) -> str:
    """RFC 6381 codecs entry for one track."""
    if codec_name == "h264":
        if extradata and len(extradata) >= 4 and extradata[0] == 1:
            return f"avc1.{extradata[1]:02x}{extradata[2]:02x}{extradata[3]:02x}"
        return "avc1.64001f"
    if codec_name == "aac":
        aot = 2
        if extradata:
            aot = extradata[0] >> 3 or 2
        return f"mp4a.40.{aot}"
    if codec_name == "hevc":
        return "hvc1"
    if codec_name == "opus":
        return "opus"
    return codec_name


def init_codecs(init: bytes | str | Path) -> str:
    """The codecs string (video first) of an fMP4 init segment, given as bytes or path."""
    source: Any = io.BytesIO(init) if isinstance(init, bytes | bytearray) else str(init)
    with av.open(source, "r") as container:
        parts: list[str] = []
        for stream in sorted(container.streams, key=lambda s: 0 if s.type == "video" else 1):
            if stream.type in ("video", "audio"):
                cc = stream.codec_context
                parts.append(codec_string(cc.name, cc.extradata))
        return ",".join(parts)


def fragment_timing(init: bytes, segment: bytes) -> tuple[float, float]:
    """(start seconds, duration seconds) of a CMAF segment, from its samples.

    Uses the video track when there is one (segments are cut at video keyframes).
    """
    with av.open(io.BytesIO(init + segment), "r") as container:
        streams: list[Any] = list(container.streams.video) or list(container.streams.audio)
        if not streams:
            raise ValueError("no media track")
        stream = streams[0]
        tb = stream.time_base
        assert tb is not None
        lo: int | None = None
        hi: int | None = None
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            end = packet.pts + (packet.duration or 0)
            lo = packet.pts if lo is None else min(lo, packet.pts)
            hi = end if hi is None else max(hi, end)
        if lo is None or hi is None:
            raise ValueError("no samples")
        return float(lo * tb), float((hi - lo) * tb)
