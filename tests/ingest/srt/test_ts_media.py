"""MPEG-TS media (as PyAV demuxes it) becomes hub media: AVCC video from the
first keyframe, raw AAC at exact frame steps, one clock from near zero."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import av
import pytest

from ingest import aac
from ingest.hub import MediaUnit, TrackKind
from ingest.srt.ts_media import TS_CLOCK, TsMedia, TsMediaError
from ingest.webrtc.h264 import split_avcc


def make_ts(path: Path, *, size: str = "320x240", gop: int = 30, seconds: float = 2.0) -> Path:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc=size={size}:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop),
         "-bf", "2", "-c:a", "aac", "-f", "mpegts", str(path)],
        check=True,
    )  # fmt: skip
    return path


def demux(path: Path, media: TsMedia) -> list[MediaUnit]:
    units: list[MediaUnit] = []
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.dts is None or packet.size == 0:
                continue
            if packet.stream.type == "video":
                unit = media.video(packet.dts, packet.pts, bytes(packet), packet.is_keyframe)
                units += [unit] if unit else []
            else:
                units += media.audio(packet.pts, bytes(packet))
    return units


@pytest.fixture(scope="module")
def ts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ts(tmp_path_factory.mktemp("ts") / "a.ts")


def test_tracks_come_from_the_parameter_sets_and_adts_headers(ts_file: Path) -> None:
    media = TsMedia(video=True, audio=True)
    assert media.tracks is None
    demux(ts_file, media)
    tracks = media.tracks
    assert tracks is not None
    video, audio = tracks
    assert (video.codec, video.width, video.height, video.timescale) == ("h264", 320, 240, TS_CLOCK)
    assert video.config[0] == 1  # an AVCDecoderConfigurationRecord
    assert (audio.codec, audio.sample_rate, audio.channels) == ("aac", 48000, 1)
    assert aac.parse_audio_specific_config(audio.config).object_type == 2
    assert not media.config_changed


def test_video_is_avcc_without_parameter_sets_and_starts_at_a_keyframe(ts_file: Path) -> None:
    units = [
        u for u in demux(ts_file, TsMedia(video=True, audio=True)) if u.kind is TrackKind.VIDEO
    ]
    assert units[0].keyframe
    assert sum(u.keyframe for u in units) == 2  # a keyframe a second, two seconds
    for unit in units:
        types = {nal[0] & 0x1F for nal in split_avcc(unit.data)}
        assert types and not types & {7, 8, 9}
    dts = [u.dts for u in units]
    assert dts == sorted(set(dts)) and 0 <= dts[0] <= 2 * TS_CLOCK
    assert any(u.pts != u.dts for u in units)  # B-frames keep their composition offsets


def test_audio_is_raw_aac_one_frame_length_apart(ts_file: Path) -> None:
    units = [
        u for u in demux(ts_file, TsMedia(video=True, audio=True)) if u.kind is TrackKind.AUDIO
    ]
    assert len(units) > 80
    assert {b.dts - a.dts for a, b in itertools.pairwise(units)} == {1024}
    assert all(u.data[:2] != b"\xff\xf1" for u in units)


def test_the_clocks_of_both_tracks_stay_together(ts_file: Path) -> None:
    units = demux(ts_file, TsMedia(video=True, audio=True))
    first_video = next(u for u in units if u.kind is TrackKind.VIDEO)
    first_audio = next(u for u in units if u.kind is TrackKind.AUDIO)
    assert abs(first_video.dts / TS_CLOCK - first_audio.dts / 48000) < 0.2


def test_timestamps_unwrap_at_33_bits() -> None:
    media = TsMedia(video=False, audio=True)
    frame = adts_frame(b"\x21" * 10)
    near_wrap = (1 << 33) - 1920
    a = media.audio(near_wrap, frame)
    b = media.audio(near_wrap + 1920 - (1 << 33), frame)  # the counter wrapped
    assert b[0].dts - a[0].dts == 1024


def test_new_parameter_sets_mean_new_tracks(tmp_path: Path) -> None:
    media = TsMedia(video=True, audio=True)
    demux(make_ts(tmp_path / "a.ts"), media)
    assert media.tracks is not None
    demux(make_ts(tmp_path / "b.ts", size="640x360"), media)
    assert media.config_changed
    tracks = media.tracks
    assert tracks is not None and (tracks[0].width, tracks[0].height) == (640, 360)
    assert not media.config_changed


def adts_frame(payload: bytes, *, rate_index: int = 3, channels: int = 2) -> bytes:
    length = 7 + len(payload)
    header = bytes(
        [
            0xFF,
            0xF1,
            (1 << 6) | (rate_index << 2) | (channels >> 2),
            ((channels & 3) << 6) | (length >> 11),
            (length >> 3) & 0xFF,
            ((length & 7) << 5) | 0x1F,
            0xFC,
        ]
    )
    return header + payload


def test_several_adts_frames_in_one_packet_become_several_units() -> None:
    media = TsMedia(video=False, audio=True)
    units = media.audio(9000, adts_frame(b"a" * 5) + adts_frame(b"b" * 6))
    assert [u.data for u in units] == [b"a" * 5, b"b" * 6]
    assert units[1].dts - units[0].dts == 1024


@pytest.mark.parametrize(
    "data",
    [b"\x00" * 20, adts_frame(b"x" * 5)[:-2], adts_frame(b"x", rate_index=15)],
)
def test_audio_that_is_not_adts_aac_is_refused(data: bytes) -> None:
    with pytest.raises(TsMediaError):
        TsMedia(video=False, audio=True).audio(0, data)
