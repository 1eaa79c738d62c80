"""Codec configuration parsing for packaging: avcC + SPS (H.264), AudioSpecificConfig (AAC).

Owns what the muxer and the playlists need to know from a track's decoder
configuration: RFC 6381 codec strings (`avc1.PPCCLL`, `mp4a.40.<aot>`), picture
size and frame rate from the SPS, and sample rate / channels from the AAC
config. Pure functions over bytes; malformed input raises `ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest import h264
from ingest.rtmp.errors import ProtocolError


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
    """Parse an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1)."""
    if len(data) < 7 or data[0] != 1:
        raise ValueError("not an avcC record")
    pos = 5
    nsps = data[pos] & 0x1F
    pos += 1
    sps: list[bytes] = []
    for _ in range(nsps):
        if pos + 2 > len(data):
            raise ValueError("truncated avcC")
        n = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + n > len(data):
            raise ValueError("truncated avcC SPS")
        sps.append(data[pos : pos + n])
        pos += n
    pps: list[bytes] = []
    if pos < len(data):
        npps = data[pos]
        pos += 1
        for _ in range(npps):
            if pos + 2 > len(data):
                raise ValueError("truncated avcC")
            n = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
            if pos + n > len(data):
                raise ValueError("truncated avcC PPS")
            pps.append(data[pos : pos + n])
            pos += n
    return AvcConfig(data[1], data[2], data[3], (data[4] & 3) + 1, tuple(sps), tuple(pps))


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ValueError("SPS truncated")
            v = (v << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def parse_sps(nal: bytes) -> SpsInfo:
    """Picture size (after cropping) and VUI frame rate of an H.264 SPS NAL unit."""
    try:
        info = h264.parse_sps(nal)
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None
    return SpsInfo(info.width, info.height, info.frame_rate)


_AAC_RATES = (
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
)


def parse_audio_specific_config(data: bytes) -> AacConfig:
    """Object type, sample rate and channel count of an MPEG-4 AudioSpecificConfig."""
    if len(data) < 2:
        raise ValueError("AudioSpecificConfig too short")
    r = _Bits(data)
    aot = r.u(5)
    if aot == 31:
        aot = 32 + r.u(6)
    idx = r.u(4)
    rate = r.u(24) if idx == 15 else (_AAC_RATES[idx] if idx < len(_AAC_RATES) else 0)
    channels = r.u(4)
    if rate == 0:
        raise ValueError("bad AAC sampling frequency index")
    return AacConfig(aot, rate, channels)
