"""The marker-bit jitter buffer releases a frame with its last packet."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from ingest.webrtc.passthrough import MarkerJitterBuffer


def _packet(seq: int, ts: int, marker: bool, data: bytes) -> RtpPacket:
    p = RtpPacket(payload_type=97, sequence_number=seq, timestamp=ts, marker=int(marker))
    p._data = data  # type: ignore[attr-defined]
    return p


def test_frame_is_released_on_its_marker_packet() -> None:
    jb = MarkerJitterBuffer(capacity=128, is_video=True)
    assert jb.add(_packet(10, 3000, False, b"a"))[1] is None
    _, frame = jb.add(_packet(11, 3000, True, b"b"))
    assert frame is not None and (frame.data, frame.timestamp) == (b"ab", 3000)
    # next frame: out of order, released only when the gap is filled
    assert jb.add(_packet(13, 6000, True, b"d"))[1] is None
    _, frame = jb.add(_packet(12, 6000, False, b"c"))
    assert frame is not None and (frame.data, frame.timestamp) == (b"cd", 6000)


def test_a_missing_packet_holds_the_frame() -> None:
    jb = MarkerJitterBuffer(capacity=128, is_video=True)
    jb.add(_packet(1, 100, False, b"x"))
    assert jb.add(_packet(3, 100, True, b"z"))[1] is None
