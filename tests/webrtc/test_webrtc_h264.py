"""ingest.webrtc.h264: Annex B <-> AVCC, SPS parsing, avcC records (sans-IO)."""

from __future__ import annotations

import fractions

import av
import pytest

from ingest.webrtc import h264


def _encode(width: int, height: int, profile: str = "High") -> list[bytes]:
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.profile = profile
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency"}
    out = []
    for i in range(3):
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([100 + i]) * plane.buffer_size)
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return out


@pytest.mark.parametrize(
    ("width", "height", "profile"),
    [(1280, 720, "High"), (640, 360, "Baseline"), (322, 242, "Main")],
)
def test_sps_parse_gives_the_picture_size(width: int, height: int, profile: str) -> None:
    first = h264.split_annexb(_encode(width, height, profile)[0])
    sps, pps = h264.find_parameter_sets(first)
    assert sps is not None and pps is not None
    info = h264.parse_sps(sps)
    assert (info.width, info.height) == (width, height)


def test_annexb_avcc_round_trip_and_keyframes() -> None:
    units = _encode(320, 240)
    nals = h264.split_annexb(units[0])
    assert h264.is_keyframe(nals)
    avcc = h264.annexb_to_avcc(units[0])
    assert h264.split_avcc(avcc) == nals
    assert h264.split_annexb(h264.avcc_to_annexb(avcc)) == nals
    assert not h264.is_keyframe(h264.split_annexb(units[1]))
    # 3-byte start codes too
    stream = b"\x00\x00\x01\x09\xf0\x00\x00\x01\x67\x42"
    assert h264.split_annexb(stream) == [b"\x09\xf0", b"\x67\x42"]


def test_avcc_config_decodes_with_ffmpeg() -> None:
    units = _encode(320, 240)
    sps, pps = h264.find_parameter_sets(h264.split_annexb(units[0]))
    assert sps and pps
    config = h264.build_avcc_config(sps, pps)
    assert h264.parse_avcc_config(config) == ([sps], [pps], 4)
    ctx = av.CodecContext.create("h264", "r")
    ctx.extradata = config
    frames = []
    for u in units:
        frames += ctx.decode(av.Packet(h264.annexb_to_avcc(u)))
    frames += ctx.decode(None)
    assert len(frames) == 3 and frames[0].width == 320


def test_malformed_input_raises_h264error() -> None:
    with pytest.raises(h264.H264Error):
        h264.split_avcc(b"\x00\x00\x00\x09abc")
    with pytest.raises(h264.H264Error):
        h264.parse_sps(b"\x67")
    with pytest.raises(h264.H264Error):
        h264.parse_avcc_config(b"\x02")
