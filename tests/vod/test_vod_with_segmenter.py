"""The recorder behind the real CMAF segmenter: two publications become one playable VOD."""

from __future__ import annotations

import time
from pathlib import Path

import av
import pytest

from ingest.hub import MediaUnit, PublicationEnded, PublicationStarted, TrackInfo, TrackKind
from tests.vod.conftest import ffmpeg
from vod.blobstore import BlobStore
from vod.jobs import VodContext, make_handlers
from vod.playlist import gaps, render_media_playlist
from vod.recorder import Recorder

Segmenter = pytest.importorskip("realtime.segmenter").Segmenter


def publication(path: Path, generation: int, t0: float) -> list[object]:
    """Hub items of one publication of ``path`` (AVCC H.264 + raw AAC, as RTMP gives them)."""
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        tracks = (
            TrackInfo(TrackKind.VIDEO, "h264", 90000, bytes(v.codec_context.extradata or b""),
                      v.codec_context.width, v.codec_context.height),
            TrackInfo(TrackKind.AUDIO, "aac", a.codec_context.sample_rate,
                      bytes(a.codec_context.extradata or b""),
                      sample_rate=a.codec_context.sample_rate, channels=2),
        )  # fmt: skip
        items: list[object] = [PublicationStarted(generation, tracks, "test", t0)]
        for p in c.demux(v, a):
            if p.size == 0 or p.pts is None or p.dts is None or p.time_base is None:
                continue
            kind = TrackKind.VIDEO if p.stream.type == "video" else TrackKind.AUDIO
            scale = 90000 if kind is TrackKind.VIDEO else a.codec_context.sample_rate
            dts = round(p.dts * p.time_base * scale)
            pts = round(p.pts * p.time_base * scale)
            wall = t0 + float(p.dts * p.time_base)
            items.append(MediaUnit(kind, dts, pts, bytes(p), p.is_keyframe, wall))
        items.append(PublicationEnded(generation, "ended"))
    return items


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seg") / "src.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=6",
        "-f", "lavfi", "-i", "sine=sample_rate=48000:duration=6",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-keyint_min", "30",
        "-sc_threshold", "0", "-c:a", "aac", str(path),
    )  # fmt: skip
    return path


async def test_reconnect_through_the_segmenter_gives_one_vod_with_a_gap(
    blobs: BlobStore, source: Path, tmp_path: Path
) -> None:
    rec = Recorder(blobs, "assets/live1")
    seg = Segmenter(None, rec, part_target_s=0.5, segment_target_s=2.0)
    t0 = time.time() - 60
    for item in publication(source, 1, t0):
        seg.feed(item)  # type: ignore[arg-type]
    for item in publication(source, 2, t0 + 10):  # back 4 s after the first ended
        seg.feed(item)  # type: ignore[arg-type]
    seg.close()
    assert rec.ended.is_set()
    m = await rec.finalize()

    assert abs(m.duration_s - 12.0) < 0.5
    assert len(m.inits) == 1  # same tracks: the segmenter keeps its init
    assert sum(s.discontinuity for s in m.segments) == 1
    [gap] = gaps(m)
    assert abs(gap["at_s"] - 6.0) < 0.5 and abs(gap["duration_s"] - 4.0) < 0.5
    text = render_media_playlist(m)
    assert text.endswith("#EXT-X-ENDLIST\n") and text.count("#EXT-X-DISCONTINUITY\n") == 1

    # The stored recording plays (FFmpeg reads the playlist) and exports to MP4.
    out = tmp_path / "files"
    out.mkdir()
    for key in await blobs.list("assets/live1/"):
        await blobs.get_file(key, out / key.rsplit("/", 1)[1])
    (out / "index.m3u8").write_text(text)
    with av.open(str(out / "index.m3u8")) as c:
        assert sorted(s.type for s in c.streams) == ["audio", "video"]
    result = await make_handlers(VodContext(blobs))["mp4"]({"prefix": "assets/live1"}, _noop)
    assert result["status"] == "ready" and abs(result["duration_s"] - m.duration_s) < 0.3
    await blobs.get_file(result["key"], tmp_path / "dl.mp4")
    with av.open(str(tmp_path / "dl.mp4")) as c:
        assert sorted(s.type for s in c.streams) == ["audio", "video"]
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == 360

    handlers = make_handlers(VodContext(blobs))
    thumb = await handlers["thumbnail"]({"prefix": "assets/live1", "time_s": 7.0}, _noop)
    jpeg = await blobs.get(thumb["key"])
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    clip = await handlers["clip"](
        {"source_prefix": "assets/live1", "prefix": "assets/clip", "start_s": 5, "end_s": 8},
        _noop,
    )
    assert clip["status"] == "ready" and 3.0 - 0.1 <= clip["duration_s"] <= 4.0 + 0.1


async def _noop(_: int) -> None:
    return None
