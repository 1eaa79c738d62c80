"""The media the hub carries: track kinds, track descriptions (`TrackInfo`) and
access units (`MediaUnit`). No behaviour: every ingest driver, output and
measurement (`ingest.health`) shares these types without importing the hub."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class TrackKind(enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """What a reader needs to package a track without seeing its first frames."""

    kind: TrackKind
    codec: str
    """"h264" | "hevc" | "av1" | "vp8" | "aac" | "opus"."""
    timescale: int
    """Ticks per second of `MediaUnit.dts`/`pts` for this track."""
    config: bytes = b""
    """h264: AVCDecoderConfigurationRecord (avcC); aac: AudioSpecificConfig; else empty."""
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0
    bitrate: int = 0
    """Declared bits/s when the publisher says (onMetaData, SDP), else 0."""


def describe_tracks(tracks: tuple[TrackInfo, ...]) -> str:
    """For logs: "h264 1280x720, aac 48000Hz/2ch"."""
    return ", ".join(
        f"{t.codec} {t.width}x{t.height}"
        if t.kind is TrackKind.VIDEO
        else f"{t.codec} {t.sample_rate}Hz/{t.channels}ch"
        for t in tracks
    )


@dataclass(slots=True)
class MediaUnit:
    """One access unit: a video frame or an audio frame, still encoded.

    H.264 data is in AVCC form (4-byte big-endian length before each NAL unit),
    as FLV and MP4 carry it. AAC data is a raw frame (no ADTS header).

    Treat as immutable (it is shared by every reader). It is not a frozen
    dataclass only because one is built per frame and frozen construction pays
    an `object.__setattr__` per field.
    """

    kind: TrackKind
    dts: int
    pts: int
    data: bytes
    keyframe: bool
    wallclock: float = field(default_factory=time.time)
    """Wall-clock seconds when the unit reached the server (latency, program-date-time)."""
