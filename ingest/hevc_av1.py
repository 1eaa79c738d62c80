"""HEVC and AV1 decoder configuration records: checked, and named for CODECS.

Owns reading what Enhanced RTMP's SequenceStart carries and CMAF needs:

* the HEVCDecoderConfigurationRecord (`hvcC`, ISO/IEC 14496-15 §8.3.3.1):
  profile, tier, level, compatibility and constraint flags, NAL length size
  → the RFC 6381 / ISO 14496-15 Annex E codec string `hvc1.<profile
  space><profile>.<compat, bit-reversed hex>.<L|H><level>.<constraints>`;
* the AV1CodecConfigurationRecord (`av1C`, AV1-ISOBMFF §2.3.3): profile,
  level, tier, bit depth → `av01.<profile>.<level><M|H>.<depth>`; and the
  picture size from the sequence header OBU it carries (AV1 spec §5.5).

Malformed input raises `MediaError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.h264 import BitReader, H264Error
from ingest.media_error import MediaError


class CodecConfigError(MediaError):
    """A malformed hvcC or av1C."""


@dataclass(frozen=True, slots=True)
class HevcConfig:
    codec_string: str
    nal_length_size: int


def parse_hvcc(record: bytes) -> HevcConfig:
    if len(record) < 23 or record[0] != 1:
        raise CodecConfigError("HEVCDecoderConfigurationRecord: too short or not version 1")
    profile_space = record[1] >> 6
    tier = (record[1] >> 5) & 1
    profile = record[1] & 0x1F
    compat = int.from_bytes(record[2:6], "big")
    reversed_compat = int(f"{compat:032b}"[::-1], 2)
    constraints = bytes(record[6:12]).rstrip(b"\0")
    level = record[12]
    nal_length_size = (record[21] & 3) + 1
    space = "" if profile_space == 0 else "ABC"[profile_space - 1]
    parts = [
        "hvc1",
        f"{space}{profile}",
        f"{reversed_compat:X}",
        f"{'H' if tier else 'L'}{level}",
        *(f"{b:X}" for b in constraints),
    ]
    return HevcConfig(".".join(parts), nal_length_size)


@dataclass(frozen=True, slots=True)
class Av1Config:
    codec_string: str
    width: int
    """From the sequence header (0 when the record carries none)."""
    height: int


def parse_av1c(record: bytes) -> Av1Config:
    if len(record) < 4 or record[0] != 0x81:
        raise CodecConfigError("AV1CodecConfigurationRecord: too short or not version 1")
    profile = record[1] >> 5
    level = record[1] & 0x1F
    tier = record[2] >> 7
    high_bitdepth = (record[2] >> 6) & 1
    twelve_bit = (record[2] >> 5) & 1
    depth = 12 if twelve_bit else 10 if high_bitdepth else 8
    width = height = 0
    obus = bytes(record[4:])
    if obus:
        try:
            width, height = _sequence_header_size(obus)
        except (H264Error, IndexError) as exc:
            raise CodecConfigError(f"AV1 sequence header: {exc}") from exc
    return Av1Config(f"av01.{profile}.{level:02d}{'H' if tier else 'M'}.{depth:02d}", width, height)


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        b = data[pos + i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, pos + i + 1
    raise CodecConfigError("leb128 longer than 8 bytes")


def _sequence_header_size(obus: bytes) -> tuple[int, int]:
    """max_frame_width/height of the first sequence header OBU (AV1 §5.5.1)."""
    pos = 0
    while pos < len(obus):
        header = obus[pos]
        obu_type = (header >> 3) & 0x0F
        extension = (header >> 2) & 1
        has_size = (header >> 1) & 1
        pos += 1 + extension
        if has_size:
            size, pos = _leb128(obus, pos)
        else:
            size = len(obus) - pos
        if obu_type == 1:
            return _frame_size(obus[pos : pos + size])
        pos += size
    return 0, 0


def _frame_size(payload: bytes) -> tuple[int, int]:
    r = BitReader(payload)
    r.u(3)  # seq_profile
    r.u(1)  # still_picture
    reduced = r.u(1)
    if reduced:
        r.u(5)  # seq_level_idx[0]
    else:
        decoder_model_info = 0
        buffer_delay_length = 0
        if r.u(1):  # timing_info_present_flag
            r.u(32)
            r.u(32)
            if r.u(1):  # equal_picture_interval
                _uvlc(r)
            decoder_model_info = r.u(1)
            if decoder_model_info:
                buffer_delay_length = r.u(5) + 1
                r.u(32)
                r.u(5)
                r.u(5)
        initial_display_delay = r.u(1)
        for _ in range(r.u(5) + 1):  # operating points
            r.u(12)  # operating_point_idc
            level = r.u(5)
            if level > 7:
                r.u(1)  # seq_tier
            if decoder_model_info and r.u(1):
                r.u(buffer_delay_length)
                r.u(buffer_delay_length)
                r.u(1)
            if initial_display_delay and r.u(1):
                r.u(4)
    width_bits = r.u(4) + 1
    height_bits = r.u(4) + 1
    return r.u(width_bits) + 1, r.u(height_bits) + 1


def _uvlc(r: BitReader) -> int:
    zeros = 0
    while not r.u(1):
        zeros += 1
        if zeros >= 32:
            return (1 << 32) - 1
    return r.u(zeros) + (1 << zeros) - 1 if zeros else 0
