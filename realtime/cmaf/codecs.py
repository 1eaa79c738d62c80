"""Codec configuration parsing for packaging: avcC + SPS (H.264), AudioSpecificConfig (AAC).

Owns what the muxer and the playlists need to know from a track's decoder
configuration: RFC 6381 codec strings (`avc1.PPCCLL`, `mp4a.40.<aot>`), picture
size and frame rate from the SPS, and sample rate / channels from the AAC
config. Pure functions over bytes; malformed input raises `ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def _unescape_rbsp(nal: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


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


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def parse_sps(nal: bytes) -> SpsInfo:
    """Picture size (after cropping) and VUI frame rate of an H.264 SPS NAL unit."""
    if not nal or nal[0] & 0x1F != 7:
        raise ValueError("not an SPS NAL unit")
    r = _Bits(_unescape_rbsp(nal[1:]))
    profile_idc = r.u(8)
    r.u(16)  # constraint flags + level
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc == 3:
            separate_colour_plane = r.u(1)
        r.ue()
        r.ue()
        r.u(1)
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.u(1):
                    size = 16 if i < 6 else 64
                    last, nxt = 8, 8
                    for _ in range(size):
                        if nxt != 0:
                            nxt = (last + r.se() + 256) % 256
                        last = nxt if nxt != 0 else last
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.u(1)
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.u(1)
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.u(1)
    r.u(1)
    crop = (0, 0, 0, 0)
    if r.u(1):
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    if separate_colour_plane or chroma_format_idc == 0:
        crop_x, crop_y = 1, 2 - frame_mbs_only
    else:
        sub_w = 1 if chroma_format_idc == 3 else 2
        sub_h = 2 if chroma_format_idc == 1 else 1
        crop_x, crop_y = sub_w, sub_h * (2 - frame_mbs_only)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_map_units * 16 - crop_y * (crop[2] + crop[3])
    fps = 0.0
    try:
        if r.u(1):  # vui_parameters_present_flag
            if r.u(1) and r.u(8) == 255:
                r.u(32)
            if r.u(1):
                r.u(1)
            if r.u(1):
                r.u(4)
                if r.u(1):
                    r.u(24)
            if r.u(1):
                r.ue()
                r.ue()
            if r.u(1):
                units, scale = r.u(32), r.u(32)
                if units:
                    fps = scale / (2 * units)
    except ValueError:
        fps = 0.0
    return SpsInfo(width, height, fps)


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
