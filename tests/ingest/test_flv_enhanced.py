"""Enhanced RTMP in FLV: HEVC (hvc1) and AV1 (av01) tags, as PyAV's FFmpeg 8
writes them, become hub tracks and units; what is still unsupported is refused
by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.flv import FlvDemuxer
from ingest.hevc_av1 import CodecConfigError, parse_av1c, parse_hvcc
from ingest.hub import MediaUnit, TrackKind
from ingest.rtmp.amf0 import decode_all
from ingest.rtmp.errors import UnsupportedMedia
from tests.e2e._pyav_publish import publish


def flv_tags(path: Path) -> list[tuple[int, int, bytes]]:
    """(type, timestamp ms, body) of every tag of an FLV file."""
    data = path.read_bytes()
    pos, tags = 13, []
    while pos + 11 <= len(data):
        kind, size = data[pos], int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        tags.append((kind, ts, data[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    return tags


def demux(path: Path) -> tuple[FlvDemuxer, list[MediaUnit]]:
    demuxer, units = FlvDemuxer(), []
    for kind, ts, body in flv_tags(path):
        if kind == 18:
            values = decode_all(body)
            meta = next(v for v in values if isinstance(v, dict))
            demuxer.set_metadata(meta)
        elif kind == 9:
            unit = demuxer.video(ts, body)
            units += [unit] if unit else []
        elif kind == 8:
            unit = demuxer.audio(ts, body)
            units += [unit] if unit else []
    return demuxer, units


@pytest.fixture(scope="module", params=["hevc", "av1"])
def published(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    path = tmp_path_factory.mktemp("flv") / f"{request.param}.flv"
    publish(str(path), request.param, 2.0)
    return request.param, path


def test_the_sequence_start_makes_the_track(published: tuple[str, Path]) -> None:
    codec, path = published
    demuxer, _ = demux(path)
    video = demuxer.video_track
    assert video is not None and video.codec == codec
    assert (video.width, video.height) == (320, 180)
    assert demuxer.ready
    if codec == "hevc":
        assert parse_hvcc(video.config).codec_string.startswith("hvc1.1.6.L")
    else:
        config = parse_av1c(video.config)
        assert config.codec_string == "av01.0.00M.08" and (config.width, config.height) == (
            320,
            180,
        )


def test_coded_frames_become_units_from_a_keyframe(published: tuple[str, Path]) -> None:
    _, path = published
    _, units = demux(path)
    video = [u for u in units if u.kind is TrackKind.VIDEO]
    assert len(video) == 60 and video[0].keyframe and sum(u.keyframe for u in video) == 2
    assert [u.dts for u in video] == sorted(u.dts for u in video)
    assert any(u.kind is TrackKind.AUDIO for u in units)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"\x90vp09" + bytes(8), "vp09"),
        (b"\x96\x00hvc1" + bytes(8), "multitrack"),
    ],
)
def test_other_enhanced_codecs_are_refused_by_name(body: bytes, named: str) -> None:
    with pytest.raises(UnsupportedMedia, match=named):
        FlvDemuxer().video(0, body)


@pytest.mark.parametrize("record", [b"", b"\x02" + bytes(30), b"\x01" + bytes(5)])
def test_malformed_hvcc_is_refused(record: bytes) -> None:
    with pytest.raises(CodecConfigError):
        parse_hvcc(record)


@pytest.mark.parametrize(
    "record", [b"", b"\x01\x00\x00\x00", b"\x81\x00\x0c\x00\x0a\x0b\x00\x00\x00"]
)
def test_malformed_av1c_is_refused(record: bytes) -> None:
    with pytest.raises(CodecConfigError):
        parse_av1c(record)
