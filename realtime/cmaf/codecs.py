"""Codec configuration parsing for packaging: avcC + SPS (H.264), AudioSpecificConfig (AAC).

Owns what the muxer and the playlists need to know from a track's decoder
configuration: RFC 6381 codec strings (`avc1.PPCCLL`, `mp4a.40.<aot>`), picture
size and frame rate from the SPS, and sample rate / channels from the AAC
config. Pure functions over bytes; malformed input raises `ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest import aac, h264


@dataclass(frozen=True, slots=True)
class AvcConfig:
    profile: int
    compatibility: int
    level: int
    nal_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]

    @property
    def codec_string(self) -> str:
        return f"avc1.{self.profile:02x}{self.compatibility:02x}{self.level:02x}"


@dataclass(frozen=True, slots=True)
class SpsInfo:
    width: int
    height: int
    frame_rate: float
    """From the VUI timing info; 0.0 when the SPS does not say."""


@dataclass(frozen=True, slots=True)
class AacConfig:
    object_type: int
    sample_rate: int
    channels: int

    @property
    def codec_string(self) -> str:
        return f"mp4a.40.{self.object_type}"


def parse_avcc(data: bytes) -> AvcConfig:
    """An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1), parsed by
    `ingest.h264` (the parser ingest already validated it with)."""
    c = h264.parse_avcc(data)  # a MediaError is a ValueError
    return AvcConfig(c.profile, c.compatibility, c.level, c.nal_length_size, c.sps, c.pps)


def parse_sps(nal: bytes) -> SpsInfo:
    """Picture size (after cropping) and VUI frame rate of an H.264 SPS NAL unit."""
    info = h264.parse_sps(nal)
    return SpsInfo(info.width, info.height, info.frame_rate)


def parse_audio_specific_config(data: bytes) -> AacConfig:
    """Object type, sample rate and channel count of an MPEG-4 AudioSpecificConfig."""
    c = aac.parse_audio_specific_config(data)
    return AacConfig(c.object_type, c.sample_rate, c.channels)
