"""The forwarding jitter buffer releases frames as soon as they are complete."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from realtime.rooms.forwarder import LowLatencyJitterBuffer


def pkt(seq: int, ts: int, data: bytes, marker: bool = False) -> RtpPacket:
    p = RtpPacket(sequence_number=seq, timestamp=ts, marker=int(marker), payload_type=96)
    p._data = data  # type: ignore[attr-defined]
    return p


def released(jb: LowLatencyJitterBuffer) -> list[bytes]:
    out = [f.data for f in jb.delivered]
    jb.delivered.clear()
    return out


def test_video_frame_released_on_its_marker_packet() -> None:
    jb = LowLatencyJitterBuffer(128, True)
    jb.add(pkt(10, 3000, b"a"))
    jb.add(pkt(12, 3000, b"c", marker=True))  # 11 missing: nothing yet
    assert released(jb) == []
    jb.add(pkt(11, 3000, b"b"))
    assert released(jb) == [b"abc"]
    jb.add(pkt(13, 6000, b"d", marker=True))
    assert released(jb) == [b"d"]


def test_frames_completed_by_one_retransmission_all_come_out() -> None:
    jb = LowLatencyJitterBuffer(128, True)
    jb.add(pkt(1, 3000, b"a"))
    jb.add(pkt(3, 6000, b"c", marker=True))
    jb.add(pkt(4, 9000, b"d", marker=True))
    assert released(jb) == []
    jb.add(pkt(2, 3000, b"b", marker=True))  # the retransmission
    assert released(jb) == [b"ab", b"c", b"d"]


def test_video_frame_without_marker_released_by_next_frame() -> None:
    jb = LowLatencyJitterBuffer(128, True)
    jb.add(pkt(1, 0, b"x"))
    jb.add(pkt(2, 3000, b"y"))
    assert released(jb) == [b"x"]


def test_audio_passes_at_once_reorders_briefly_and_never_stalls_on_loss() -> None:
    jb = LowLatencyJitterBuffer(16, False)
    for s in (1, 2):
        jb.add(pkt(s, s * 960, bytes([s])))
    assert released(jb) == [b"\x01", b"\x02"]
    jb.add(pkt(4, 4 * 960, b"\x04"))  # 3 may only be late
    assert released(jb) == []
    jb.add(pkt(3, 3 * 960, b"\x03"))
    assert released(jb) == [b"\x03", b"\x04"]
    jb.add(pkt(6, 6 * 960, b"\x06"))
    jb.add(pkt(7, 7 * 960, b"\x07"))
    jb.add(pkt(8, 8 * 960, b"\x08"))  # 5 is lost: give it up
    assert released(jb) == [b"\x06", b"\x07", b"\x08"]
    jb.add(pkt(9, 9 * 960, b"\x09"))
    assert released(jb) == [b"\x09"]
