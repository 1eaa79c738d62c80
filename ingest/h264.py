"""H.264 helpers: the avcC record, SPS parsing (resolution, profile, level), codec strings.

Owns what ingest (and anyone packaging H.264) needs to know about an H.264
stream without decoding it:

* `parse_avcc(record)` → `AvcConfig` (profile/compat/level, NAL length size,
  SPS and PPS NAL units) from an AVCDecoderConfigurationRecord;
* `parse_sps(nal)` → `SpsInfo` with width and height after cropping, using a
  small exp-Golomb bit reader (emulation prevention bytes removed first);
* `codec_string(record)` → RFC 6381 "avc1.PPCCLL";
* `avcc_from_annexb` / `iter_avcc_nalus` for AVCC ↔ Annex B work.

Malformed input raises `H264Error` (a `MediaError`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ingest.media_error import MediaError


class H264Error(MediaError):
    """Malformed H.264 data (an SPS, an avcC record, AVCC framing)."""


NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


@dataclass(frozen=True, slots=True)
class AvcConfig:
    profile: int
    compatibility: int
    level: int
    nal_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SpsInfo:
    profile_idc: int
    constraint_flags: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    width: int
    height: int
    frame_mbs_only: bool
    bit_depth_chroma: int = 8
    frame_rate: float = 0.0
    """From the VUI timing info; 0.0 when the SPS does not say."""


def unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation prevention bytes (00 00 03 → 00 00)."""
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    i = 0
    n = len(nal)
    while i < n:
        j = nal.find(b"\x00\x00\x03", i)
        if j < 0:
            out += nal[i:]
            break
        out += nal[i : j + 2]
        i = j + 3
    return bytes(out)


class BitReader:
    """MSB-first bit reader with exp-Golomb codes; reading past the end raises H264Error."""

    __slots__ = ("_bits", "_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = int.from_bytes(data, "big") if data else 0
        self._bits = len(data) * 8
        self._pos = 0

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        if self._pos + n > self._bits:
            raise H264Error("bitstream: read past the end")
        self._pos += n
        return (self._data >> (self._bits - self._pos)) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise H264Error("bitstream: exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last = 8
    nxt = 8
    for _ in range(size):
        if nxt != 0:
            delta = r.se()
            nxt = (last + delta + 256) % 256
        last = last if nxt == 0 else nxt


def parse_sps(nal: bytes) -> SpsInfo:
    """Profile, level and the displayed resolution (cropping applied) of an SPS NAL unit."""
    if len(nal) < 4 or nal[0] & 0x1F != NAL_SPS:
        raise H264Error("not an SPS NAL unit")
    r = BitReader(unescape_rbsp(nal[1:]))
    profile = r.u(8)
    constraints = r.u(8)
    level = r.u(8)
    sps_id = r.ue()
    if sps_id > 31:
        raise H264Error("SPS: bad seq_parameter_set_id")
    chroma = 1
    separate_planes = False
    bit_depth = bit_depth_chroma = 8
    if profile in _HIGH_PROFILES:
        chroma = r.ue()
        if chroma > 3:
            raise H264Error("SPS: bad chroma_format_idc")
        if chroma == 3:
            separate_planes = r.flag()
        bit_depth = r.ue() + 8
        bit_depth_chroma = r.ue() + 8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.u(1)
        r.se()
        r.se()
        cycle = r.ue()
        if cycle > 255:
            raise H264Error("SPS: bad num_ref_frames_in_pic_order_cnt_cycle")
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        raise H264Error("SPS: bad pic_order_cnt_type")
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if r.flag():
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    if chroma == 0 or separate_planes:
        crop_x, crop_y = 1, 2 - frame_mbs_only
    else:
        sub_w = 1 if chroma == 3 else 2
        sub_h = 2 if chroma == 1 else 1
        crop_x, crop_y = sub_w, sub_h * (2 - frame_mbs_only)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_map_units * 16 - crop_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0 or width > 16384 or height > 16384:
        raise H264Error(f"SPS: implausible resolution {width}x{height}")
    return SpsInfo(
        profile,
        constraints,
        level,
        sps_id,
        chroma,
        bit_depth,
        width,
        height,
        frame_mbs_only,
        bit_depth_chroma,
        _vui_frame_rate(r),
    )


def _vui_frame_rate(r: BitReader) -> float:
    """The frame rate from the VUI timing info, 0.0 if absent or truncated."""
    try:
        if not r.flag():  # vui_parameters_present_flag
            return 0.0
        if r.flag() and r.u(8) == 255:  # aspect_ratio_info_present_flag, Extended_SAR
            r.u(32)
        if r.flag():  # overscan_info_present_flag
            r.u(1)
        if r.flag():  # video_signal_type_present_flag
            r.u(4)
            if r.flag():  # colour_description_present_flag
                r.u(24)
        if r.flag():  # chroma_loc_info_present_flag
            r.ue()
            r.ue()
        if r.flag():  # timing_info_present_flag
            units, scale = r.u(32), r.u(32)
            if units:
                return scale / (2 * units)
    except H264Error:
        pass
    return 0.0


def parse_avcc(record: bytes) -> AvcConfig:
    """An AVCDecoderConfigurationRecord (ISO 14496-15 5.2.4.1)."""
    n = len(record)
    if n < 7 or record[0] != 1:
        raise H264Error("avcC: bad version or too short")
    profile, compat, level = record[1], record[2], record[3]
    nal_length_size = (record[4] & 3) + 1
    if nal_length_size == 3:
        raise H264Error("avcC: 3-byte NAL lengths are not allowed")
    pos = 5
    sets: list[tuple[bytes, ...]] = []
    for count_mask in (0x1F, 0xFF):
        if pos >= n:
            raise H264Error("avcC: truncated")
        count = record[pos] & count_mask
        pos += 1
        items: list[bytes] = []
        for _ in range(count):
            if pos + 2 > n:
                raise H264Error("avcC: truncated parameter set length")
            size = (record[pos] << 8) | record[pos + 1]
            pos += 2
            if pos + size > n or size == 0:
                raise H264Error("avcC: truncated parameter set")
            items.append(bytes(record[pos : pos + size]))
            pos += size
        sets.append(tuple(items))
    if not sets[0]:
        raise H264Error("avcC: no SPS")
    return AvcConfig(profile, compat, level, nal_length_size, sets[0], sets[1])


def codec_string(record: bytes) -> str:
    """RFC 6381 codec string from an avcC record, e.g. "avc1.64001f"."""
    if len(record) < 4:
        raise H264Error("avcC: too short")
    return f"avc1.{record[1]:02x}{record[2]:02x}{record[3]:02x}"


def iter_avcc_nalus(data: bytes, nal_length_size: int = 4) -> Iterator[bytes]:
    """The NAL units of an AVCC access unit (length-prefixed)."""
    pos = 0
    n = len(data)
    while pos < n:
        if pos + nal_length_size > n:
            raise H264Error("AVCC: truncated NAL length")
        size = int.from_bytes(data[pos : pos + nal_length_size], "big")
        pos += nal_length_size
        if pos + size > n:
            raise H264Error("AVCC: NAL unit runs past the end")
        yield data[pos : pos + size]
        pos += size


def avcc_from_annexb(data: bytes) -> bytes:
    """Annex B (start codes) → AVCC (4-byte lengths)."""
    out = bytearray()
    parts = data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
    for nal in parts:
        nal = nal.rstrip(b"\x00") if nal.endswith(b"\x00") else nal
        if nal:
            out += len(nal).to_bytes(4, "big") + nal
    return bytes(out)
