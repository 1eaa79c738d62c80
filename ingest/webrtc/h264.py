"""H.264 bitstream helpers for WebRTC (sans-IO): Annex B <-> AVCC, SPS/PPS, avcC.

WebRTC carries H.264 as NAL units (aiortc hands them over in Annex B form); the
hub, FLV and MP4 carry AVCC (4-byte big-endian length before each NAL unit) with
the SPS/PPS in an AVCDecoderConfigurationRecord (avcC). The SPS parser reads
only what is needed for the picture size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

MAX_NAL_SIZE = 16 * 1024 * 1024


class H264Error(ValueError):
    """Malformed H.264 data."""


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F if nal else 0


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes)."""
    nals: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        if j == -1:
            nal = data[start:]
        else:
            end = j - 1 if data[j - 1] == 0 else j
            nal = data[start:end]
        nal = nal.rstrip(b"\x00") if j == -1 else nal
        if nal:
            nals.append(nal)
        i = j
    return nals


def split_avcc(data: bytes, length_size: int = 4) -> list[bytes]:
    nals: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            raise H264Error("truncated AVCC length")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size > MAX_NAL_SIZE or pos + size > len(data):
            raise H264Error("AVCC NAL unit overruns the buffer")
        nals.append(data[pos : pos + size])
        pos += size
    return nals


def to_avcc(nals: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(n)) + n for n in nals)


def to_annexb(nals: list[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def annexb_to_avcc(data: bytes) -> bytes:
    return to_avcc(split_annexb(data))


def avcc_to_annexb(data: bytes) -> bytes:
    return to_annexb(split_avcc(data))


def is_keyframe(nals: list[bytes]) -> bool:
    return any(nal_type(n) == NAL_IDR for n in nals)


def find_parameter_sets(nals: list[bytes]) -> tuple[bytes | None, bytes | None]:
    sps = next((n for n in nals if nal_type(n) == NAL_SPS), None)
    pps = next((n for n in nals if nal_type(n) == NAL_PPS), None)
    return sps, pps


def build_avcc_config(sps: bytes, pps: bytes) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1) for one SPS and PPS."""
    if len(sps) < 4:
        raise H264Error("SPS too short")
    record = bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1])
    record += struct.pack(">H", len(sps)) + sps
    record += bytes([1]) + struct.pack(">H", len(pps)) + pps
    if sps[1] in (100, 110, 122, 144):
        info = parse_sps(sps)
        record += bytes(
            [
                0xFC | info.chroma_format_idc,
                0xF8 | info.bit_depth_luma_minus8,
                0xF8 | info.bit_depth_chroma_minus8,
                0,
            ]
        )
    return record


def parse_avcc_config(config: bytes) -> tuple[list[bytes], list[bytes], int]:
    """(SPS list, PPS list, NAL length size) from an avcC record."""
    if len(config) < 7 or config[0] != 1:
        raise H264Error("not an avcC record")
    length_size = (config[4] & 0x03) + 1
    pos = 5
    sps_list: list[bytes] = []
    pps_list: list[bytes] = []
    count = config[pos] & 0x1F
    pos += 1
    for _ in range(count):
        (n,) = struct.unpack_from(">H", config, pos)
        sps_list.append(config[pos + 2 : pos + 2 + n])
        pos += 2 + n
    count = config[pos]
    pos += 1
    for _ in range(count):
        (n,) = struct.unpack_from(">H", config, pos)
        pps_list.append(config[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return sps_list, pps_list, length_size


@dataclass(frozen=True, slots=True)
class SpsInfo:
    profile_idc: int
    level_idc: int
    width: int
    height: int
    chroma_format_idc: int = 1
    bit_depth_luma_minus8: int = 0
    bit_depth_chroma_minus8: int = 0


class _Bits:
    def __init__(self, rbsp: bytes) -> None:
        self.data = rbsp
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise H264Error("SPS truncated")
            v = (v << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise H264Error("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _unescape(nal: bytes) -> bytes:
    """Remove emulation prevention bytes (00 00 03 -> 00 00)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def parse_sps(sps: bytes) -> SpsInfo:
    """Picture size and format from an SPS NAL unit (header byte included)."""
    if nal_type(sps) != NAL_SPS or len(sps) < 4:
        raise H264Error("not an SPS")
    b = _Bits(_unescape(sps[1:]))
    profile_idc = b.u(8)
    b.u(8)  # constraint flags
    level_idc = b.u(8)
    b.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    depth_l = depth_c = 0
    separate_colour_plane = 0
    if profile_idc in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format_idc = b.ue()
        if chroma_format_idc == 3:
            separate_colour_plane = b.u(1)
        depth_l = b.ue()
        depth_c = b.ue()
        b.u(1)  # qpprime_y_zero_transform_bypass_flag
        if b.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if b.u(1):
                    size = 16 if i < 6 else 64
                    last = nxt = 8
                    for _ in range(size):
                        if nxt != 0:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt if nxt != 0 else last
    b.ue()  # log2_max_frame_num_minus4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1)
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()  # max_num_ref_frames
    b.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = b.ue() + 1
    height_map_units = b.ue() + 1
    frame_mbs_only = b.u(1)
    if not frame_mbs_only:
        b.u(1)  # mb_adaptive_frame_field_flag
    b.u(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if b.u(1):  # frame_cropping_flag
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        if separate_colour_plane or chroma_format_idc == 0:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        else:
            sub_w = 1 if chroma_format_idc == 3 else 2
            sub_h = 2 if chroma_format_idc == 1 else 1
            crop_x, crop_y = sub_w, sub_h * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    return SpsInfo(profile_idc, level_idc, width, height, chroma_format_idc, depth_l, depth_c)
