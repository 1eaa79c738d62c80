"""FLV tag bodies → hub tracks and media units (H.264 + AAC), and what is refused."""

from __future__ import annotations

import pytest

from ingest.flv import FlvDemuxer
from ingest.hub import MediaUnit, TrackKind
from ingest.rtmp.errors import ProtocolError, UnsupportedMedia

AVCC_360P = bytes.fromhex(
    "0164001effe1001a6764001eacd940a02ff970110000030001000003003c0f162d9601000468ef8fcbfdf8f800"
)
AVCC_720P = bytes.fromhex(
    "0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000468ef8fcbfdf8f800"
)
ASC_48K_STEREO = bytes.fromhex("1190")
ASC_44K_MONO = bytes.fromhex("1208")


def vconf(avcc: bytes = AVCC_360P) -> bytes:
    return b"\x17\x00\x00\x00\x00" + avcc


def vframe(key: bool, cts: int = 0, nals: bytes = b"\x00\x00\x00\x02\x65\x88") -> bytes:
    return bytes((0x17 if key else 0x27, 1)) + (cts & 0xFFFFFF).to_bytes(3, "big") + nals


def aconf(asc: bytes = ASC_48K_STEREO) -> bytes:
    # FLV sound rate bits say 44 kHz stereo 16-bit whatever the real rate is.
    return b"\xaf\x00" + asc


def aframe(data: bytes = b"\x21\x00\x49") -> bytes:
    return b"\xaf\x01" + data


def unit(x: MediaUnit | None) -> MediaUnit:
    assert x is not None
    return x


def test_avc_sequence_header_makes_the_video_track() -> None:
    d = FlvDemuxer()
    assert d.video(0, vconf()) is None
    t = d.video_track
    assert t is not None
    assert (t.kind, t.codec, t.timescale) == (TrackKind.VIDEO, "h264", 90000)
    assert (t.width, t.height) == (640, 360)
    assert t.config == AVCC_360P


def test_avc_frames_dts_pts_keyframe_and_avcc_data() -> None:
    d = FlvDemuxer(clock=lambda: 123.0)
    d.video(0, vconf())
    u = unit(d.video(1000, vframe(True, cts=66)))
    assert (u.dts, u.pts, u.keyframe, u.wallclock) == (90_000, 90_000 + 66 * 90, True, 123.0)
    assert u.data == b"\x00\x00\x00\x02\x65\x88"
    u2 = unit(d.video(1033, vframe(False, cts=-33 & 0xFFFFFF)))
    assert (u2.dts, u2.pts, u2.keyframe) == (1033 * 90, 1000 * 90, False)


def test_frames_before_the_sequence_header_are_dropped() -> None:
    d = FlvDemuxer()
    assert d.video(0, vframe(True)) is None and d.audio(0, aframe()) is None
    assert d.dropped == 2


def test_aac_rate_comes_from_the_config_not_the_flv_flags() -> None:
    d = FlvDemuxer()
    d.audio(0, aconf(ASC_48K_STEREO))
    t = d.audio_track
    assert t is not None
    assert (t.codec, t.timescale, t.sample_rate, t.channels) == ("aac", 48000, 48000, 2)


def test_aac_is_restamped_in_whole_frames_on_the_flv_clock() -> None:
    d = FlvDemuxer()
    d.audio(0, aconf(ASC_44K_MONO))
    # 44.1 kHz: 1024 samples = 23.22 ms, FLV rounds to whole ms: 0, 23, 46, 70, 93...
    stamps = [round(i * 1024 * 1000 / 44100) for i in range(50)]
    dts = [unit(d.audio(1000 + ms, aframe())).dts for ms in stamps]
    first = 1000 * 44100 // 1000
    assert dts == [first + 1024 * i for i in range(50)]
    u = unit(d.audio(1000 + stamps[-1] + 23, aframe()))
    assert u.dts == u.pts and u.keyframe and u.data == b"\x21\x00\x49"


def test_aac_resyncs_forward_after_a_gap_and_drops_frames_stamped_late() -> None:
    d = FlvDemuxer()
    d.audio(0, aconf(ASC_48K_STEREO))
    assert unit(d.audio(0, aframe())).dts == 0
    assert unit(d.audio(21, aframe())).dts == 1024
    # 500 ms gap: jump to the FLV clock.
    assert unit(d.audio(543, aframe())).dts == 543 * 48
    assert d.audio_resyncs == 1
    assert unit(d.audio(564, aframe())).dts == 543 * 48 + 1024
    # Stamped late (same ms again): the count would run over a frame ahead: dropped.
    assert d.audio(564, aframe()) is None
    assert d.audio_sync_drops == 1
    assert unit(d.audio(585, aframe())).dts == 543 * 48 + 2048


def test_timestamps_unwrap_past_32_bits() -> None:
    d = FlvDemuxer()
    d.video(0, vconf())
    a = unit(d.video(0xFFFFFFF0, vframe(True)))
    b = unit(d.video(0x10, vframe(False)))
    assert b.dts - a.dts == 0x20 * 90


def test_dts_stays_monotonic() -> None:
    d = FlvDemuxer()
    d.video(0, vconf())
    a = unit(d.video(100, vframe(True)))
    b = unit(d.video(90, vframe(False)))
    assert b.dts > a.dts


def test_a_changed_sequence_header_is_counted() -> None:
    d = FlvDemuxer()
    d.video(0, vconf(AVCC_360P))
    d.video(0, vconf(AVCC_360P))
    assert d.config_changes == 0
    d.video(0, vconf(AVCC_720P))
    assert d.config_changes == 1
    assert d.video_track is not None and d.video_track.width == 1280


def test_metadata_bitrates_and_expected_tracks() -> None:
    d = FlvDemuxer()
    d.set_metadata(
        {"videocodecid": 7.0, "videodatarate": 2500.0, "audiocodecid": 10.0, "audiodatarate": 128.0}
    )
    assert d.expect_video and d.expect_audio and not d.ready
    d.video(0, vconf())
    assert not d.ready
    d.audio(0, aconf())
    assert d.ready
    assert [t.bitrate for t in d.tracks] == [2_500_000, 128_000]


def test_info_frames_end_of_sequence_and_empty_tags_are_ignored() -> None:
    d = FlvDemuxer()
    d.video(0, vconf())
    assert d.video(0, b"") is None
    assert d.video(0, b"\x57\x00") is None  # frame type 5: video info
    assert d.video(0, b"\x17\x02\x00\x00\x00") is None  # end of sequence
    assert d.audio(0, b"") is None


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        # Enhanced RTMP: IsExHeader, key frame (hvc1 and av01 are taken: test_flv_enhanced.py)
        (b"\x91vp09" + b"\x00" * 8, "VP9"),
        (b"\x96\x00hvc1" + b"\x00" * 8, "HEVC"),  # multitrack packet
        (b"\x22" + b"\x00" * 8, "Sorenson H.263"),
        (b"\x14" + b"\x00" * 8, "VP6"),
        (b"\x1c" + b"\x00" * 8, "HEVC"),  # non-standard codec id 12
    ],
)
def test_unsupported_video_is_refused_clearly(tag: bytes, name: str) -> None:
    with pytest.raises(UnsupportedMedia, match=name) as exc:
        FlvDemuxer().video(0, tag)
    assert "not supported" in str(exc.value)


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        (b"\x2f" + b"\x00" * 4, "MP3"),
        (b"\xb6" + b"\x00" * 4, "Speex"),
        (b"\x6e" + b"\x00" * 4, "Nellymoser"),
        (b"\x7e" + b"\x00" * 4, "G.711"),
        (b"\x90Opus" + b"\x00" * 4, "Opus"),
    ],
)
def test_unsupported_audio_is_refused_clearly(tag: bytes, name: str) -> None:
    with pytest.raises(UnsupportedMedia, match=name):
        FlvDemuxer().audio(0, tag)


@pytest.mark.parametrize(
    "tag",
    [b"\x17\x00", b"\x17\x00\x00\x00\x00\x01\x64", b"\x17\x07\x00\x00\x00", b"\x90hv"],
)
def test_malformed_video_raises_protocol_error(tag: bytes) -> None:
    with pytest.raises(ProtocolError):
        FlvDemuxer().video(0, tag)


@pytest.mark.parametrize("tag", [b"\xaf", b"\xaf\x00\x00", b"\xaf\x05\x00"])
def test_malformed_audio_raises_protocol_error(tag: bytes) -> None:
    with pytest.raises(ProtocolError):
        FlvDemuxer().audio(0, tag)


def test_avcc_framing_must_tile_the_access_unit() -> None:
    d = FlvDemuxer()
    d.video(0, vconf())
    two_nals = b"\x00\x00\x00\x02\x09\xf0\x00\x00\x00\x03\x65\x88\x84"
    assert unit(d.video(0, vframe(True, nals=two_nals))).data == two_nals
    with pytest.raises(ProtocolError):
        d.video(33, vframe(False, nals=b"\x00\x00\x00\x09\x41\x9a"))
