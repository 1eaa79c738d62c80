"""H.264 helpers: avcC records and SPS parsing on real encoder output."""

from __future__ import annotations

import pytest

from ingest import h264

# avcC records written by x264 (ffmpeg/libx264 and GStreamer x264enc).
AVCC = {
    "1080p high (crop 1088→1080)": (
        "01640028ffe1001b67640028acd940780227e5c044000003000400000300f03c60c65801000468ef8fcbfdf8f800",
        1920,
        1080,
        100,
        40,
        "avc1.640028",
    ),
    "720p high": (
        "0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000468ef8fcbfdf8f800",
        1280,
        720,
        100,
        31,
        "avc1.64001f",
    ),
    "360p high (crop 368→360)": (
        "0164001effe1001a6764001eacd940a02ff970110000030001000003003c0f162d9601000468ef8fcbfdf8f800",
        640,
        360,
        100,
        30,
        "avc1.64001e",
    ),
    "480p baseline (854 wide, crop both axes)": (
        "0142c01fffe100196742c01fda0360f79bc044000003000400000300f03c60ca8001000468ce0fc8",
        854,
        480,
        66,
        31,
        "avc1.42c01f",
    ),
    "90p high (emulation prevention bytes)": (
        "0164000bffe100186764000bacb4146fc98088000003000800000300f478a15501000468ef3cb0",
        160,
        90,
        100,
        11,
        "avc1.64000b",
    ),
    "QCIF high 4:4:4 (GStreamer)": (
        "01f4000affe1001c67f4000a90d9682c4ec05a83030320000003002000000303d1e244d401000568ef319219",
        176,
        144,
        244,
        10,
        "avc1.f4000a",
    ),
}


@pytest.mark.parametrize("name", list(AVCC))
def test_resolution_profile_level_and_codec_string(name: str) -> None:
    hexdata, width, height, profile, level, codec = AVCC[name]
    record = bytes.fromhex(hexdata)
    cfg = h264.parse_avcc(record)
    assert cfg.nal_length_size == 4 and len(cfg.sps) == 1 and len(cfg.pps) == 1
    sps = h264.parse_sps(cfg.sps[0])
    assert (sps.width, sps.height) == (width, height)
    assert (sps.profile_idc, sps.level_idc) == (profile, level)
    assert h264.codec_string(record) == codec


def test_exp_golomb_reader() -> None:
    # 1 | 010 | 011 | 00100 | 00101 → ue 0, 1, 2, 3, 4
    r = h264.BitReader(bytes([0b10100110, 0b01000010, 0b10000000]))
    assert [r.ue() for _ in range(5)] == [0, 1, 2, 3, 4]
    r = h264.BitReader(bytes([0b01001110, 0b01010000]))
    # 010 → +1, 011 → -1, 1 → 0, 00101 → ue 4 → -2
    assert [r.se(), r.se(), r.se(), r.se()] == [1, -1, 0, -2]


def test_unescape_rbsp() -> None:
    assert h264.unescape_rbsp(b"\x00\x00\x03\x01\x00\x00\x03") == b"\x00\x00\x01\x00\x00"


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"\x01\x64\x00",
        b"\x00" * 10,
        bytes.fromhex("0164001effe1ffff"),
        bytes.fromhex("0164001effe0"),
    ],
)
def test_bad_avcc_records(record: bytes) -> None:
    with pytest.raises(h264.H264Error):
        sps = h264.parse_avcc(record).sps[0]
        h264.parse_sps(sps)


def test_truncated_sps() -> None:
    with pytest.raises(h264.H264Error):
        h264.parse_sps(bytes.fromhex("6764001eacd9"))


def test_avcc_and_annexb() -> None:
    annexb = b"\x00\x00\x00\x01\x67\x64\x00\x1e\x00\x00\x01\x68\xee\x00\x00\x01\x65\x88"
    avcc = h264.avcc_from_annexb(annexb)
    assert list(h264.iter_avcc_nalus(avcc)) == [b"\x67\x64\x00\x1e", b"\x68\xee", b"\x65\x88"]
