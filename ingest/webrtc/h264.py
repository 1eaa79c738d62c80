"""H.264 bitstream helpers for WebRTC (sans-IO): Annex B <-> AVCC, SPS/PPS, avcC.

WebRTC carries H.264 as NAL units (aiortc hands them over in Annex B form); the
hub, FLV and MP4 carry AVCC (4-byte big-endian length before each NAL unit) with
the SPS/PPS in an AVCDecoderConfigurationRecord (avcC). The SPS parser reads
only what is needed for the picture size.
"""

from __future__ import annotations

import struct

from ingest.h264 import H264Error as H264Error  # re-exported: the one H.264 error
from ingest.h264 import parse_sps as parse_sps

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

MAX_NAL_SIZE = 16 * 1024 * 1024


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
                0xF8 | (info.bit_depth_luma - 8),
                0xF8 | (info.bit_depth_chroma - 8),
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
