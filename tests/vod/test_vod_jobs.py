"""VOD jobs end to end on real media: MP4 download, thumbnails, uploads, clips (local and S3)."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

import av
import pytest

from tests.vod.conftest import ffmpeg
from tests.vod.vod_media import segments_from_hls
from vod.blobstore import BlobStore
from vod.jobs import PermanentJobError, VodContext, make_handlers, make_process_pool
from vod.manifest import load_manifest
from vod.playlist import render_media_playlist
from vod.recorder import Recorder


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    executor = make_process_pool(1)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def ctx(blobs: BlobStore, pool: ProcessPoolExecutor, tmp_path: Path) -> VodContext:
    return VodContext(blobs=blobs, executor=pool, scratch_dir=str(tmp_path / "scratch"))


class Progress:
    def __init__(self) -> None:
        self.values: list[int] = []

    async def __call__(self, pct: int) -> None:
        self.values.append(pct)


async def record(blobs: BlobStore, prefix: str, *hls_dirs: Path) -> float:
    """Record one publication per directory (reconnects in between); returns total duration."""
    rec = Recorder(blobs, prefix)
    pdt = 1_800_000_000.0
    for gen, d in enumerate(hls_dirs):
        init, segs = segments_from_hls(d, generation=gen, pdt0=pdt)
        rec.on_init(init)
        for s in segs:
            rec.on_segment(s)
        rec.on_end()
        pdt = segs[-1].program_date_time + segs[-1].duration + 3.0
    m = await rec.finalize()
    return m.duration_s


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return json.loads(out)


async def test_mp4_download_plays_with_both_tracks_across_a_reconnect(
    ctx: VodContext, hls_a: Path, hls_b: Path, tmp_path: Path
) -> None:
    total = await record(ctx.blobs, "assets/rec1", hls_a, hls_b)
    progress = Progress()
    result = await make_handlers(ctx)["mp4"]({"prefix": "assets/rec1"}, progress)
    assert result["status"] == "ready" and result["key"] == "assets/rec1/download.mp4"
    assert progress.values[0] == 0 and progress.values[-1] == 100
    assert progress.values == sorted(progress.values)
    local = tmp_path / "dl.mp4"
    await ctx.blobs.get_file(result["key"], local)
    info = ffprobe(local)
    assert sorted(s["codec_type"] for s in info["streams"]) == ["audio", "video"]
    assert abs(float(info["format"]["duration"]) - total) < 0.2
    head = local.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and head.find(b"moov") < max(head.find(b"mdat"), 4096)
    # Decodes from start to end, including the reconnect at another resolution.
    sizes: dict[tuple[int, int], int] = {}
    with av.open(str(local)) as c:
        for frame in c.decode(video=0):
            sizes[(frame.width, frame.height)] = sizes.get((frame.width, frame.height), 0) + 1
    assert sizes == {(320, 180): 180, (256, 144): 120}


async def test_thumbnail_is_a_jpeg_of_at_most_640_wide(ctx: VodContext, hls_a: Path) -> None:
    await record(ctx.blobs, "assets/rec2", hls_a)
    result = await make_handlers(ctx)["thumbnail"](
        {"prefix": "assets/rec2", "time_s": 2.5}, Progress()
    )
    assert result["status"] == "ready" and abs(result["time_s"] - 0.5) < 0.05
    data = await ctx.blobs.get(result["key"])
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    with av.open(io.BytesIO(data), "r") as c:
        frame = next(c.decode(video=0))
    assert frame.width == 320 and frame.height == 180


async def test_thumbnail_past_the_end_is_the_last_frame(ctx: VodContext, hls_a: Path) -> None:
    await record(ctx.blobs, "assets/rec3", hls_a)
    result = await make_handlers(ctx)["thumbnail"](
        {"prefix": "assets/rec3", "time_s": 999}, Progress()
    )
    assert result["status"] == "ready"


async def _upload(ctx: VodContext, src: Path, key: str) -> dict:
    await ctx.blobs.put_file(key, src)
    return await make_handlers(ctx)["upload"](
        {"source_key": key, "prefix": "assets/up", "delete_source": True}, Progress()
    )


async def assert_plays(ctx: VodContext, prefix: str, tmp_path: Path) -> float:
    m = await load_manifest(ctx.blobs, prefix)
    out = tmp_path / "play"
    out.mkdir(exist_ok=True)
    for key in await ctx.blobs.list(prefix + "/"):
        if key.endswith((".m4s", ".mp4")):
            await ctx.blobs.get_file(key, out / key.rsplit("/", 1)[1])
    (out / "index.m3u8").write_text(render_media_playlist(m))
    info = ffprobe(out / "index.m3u8")
    codecs = sorted(s["codec_name"] for s in info["streams"])
    assert codecs == ["aac", "h264"]
    return m.duration_s


async def test_upload_of_h264_aac_mp4_is_remuxed(
    ctx: VodContext, media_dir: Path, tmp_path: Path
) -> None:
    src = media_dir / "upload.mp4"
    if not src.exists():
        ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=4",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-c:a",
            "aac",
            str(src),
        )
    result = await _upload(ctx, src, "uploads/u1")
    assert result["status"] == "ready" and result["mode"] == "remux"
    assert result["source"]["video_codec"] == "h264"
    assert not await ctx.blobs.exists("uploads/u1")
    assert abs(await assert_plays(ctx, "assets/up", tmp_path) - 4.0) < 0.2


async def test_upload_of_vp9_opus_webm_is_transcoded(
    ctx: VodContext, media_dir: Path, tmp_path: Path
) -> None:
    src = media_dir / "upload.webm"
    if not src.exists():
        ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=3",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=3:sample_rate=48000",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "300k",
            "-c:a",
            "libopus",
            str(src),
        )
    result = await _upload(ctx, src, "uploads/u2")
    assert result["status"] == "ready" and result["mode"] == "transcode", result
    assert result["source"] == {
        "video_codec": "vp9",
        "audio_codec": "opus",
        "format": "matroska,webm",
    }
    assert abs(await assert_plays(ctx, "assets/up", tmp_path) - 3.0) < 0.2


async def test_upload_of_a_text_file_is_errored_with_a_reason(
    ctx: VodContext, tmp_path: Path
) -> None:
    src = tmp_path / "notes.txt"
    src.write_text("this is not a video\n" * 100)
    result = await _upload(ctx, src, "uploads/u3")
    assert result["status"] == "errored"
    assert "not a media file" in result["error"] and str(tmp_path) not in result["error"]
    assert await ctx.blobs.list("assets/up/") == []


async def test_upload_of_a_wav_is_errored_no_video(ctx: VodContext, tmp_path: Path) -> None:
    src = tmp_path / "a.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", str(src))
    result = await _upload(ctx, src, "uploads/u4")
    assert result == {"status": "errored", "error": "no video track in the file"}


async def test_clip_of_a_recording_without_reencoding(
    ctx: VodContext, hls_a: Path, hls_b: Path, tmp_path: Path
) -> None:
    await record(ctx.blobs, "assets/rec4", hls_a, hls_b)
    result = await make_handlers(ctx)["clip"](
        {"source_prefix": "assets/rec4", "prefix": "assets/clip1", "start_s": 2.5, "end_s": 7.5},
        Progress(),
    )
    assert result["status"] == "ready", result
    # Starts at the keyframe at or before 2.5 s (GOP 1 s): 5 s <= duration <= 6 s.
    assert 5.0 - 0.1 <= result["duration_s"] <= 6.0 + 0.1
    assert await assert_plays(ctx, "assets/clip1", tmp_path) == result["duration_s"]


async def test_clip_outside_the_asset_is_errored(ctx: VodContext, hls_a: Path) -> None:
    await record(ctx.blobs, "assets/rec5", hls_a)
    handler = make_handlers(ctx)["clip"]
    bad = await handler(
        {"source_prefix": "assets/rec5", "prefix": "assets/c", "start_s": 50, "end_s": 60},
        Progress(),
    )
    assert bad["status"] == "errored" and "past the end" in bad["error"]
    inverted = await handler(
        {"source_prefix": "assets/rec5", "prefix": "assets/c", "start_s": 3, "end_s": 1}, Progress()
    )
    assert inverted["status"] == "errored"


async def test_jobs_on_a_missing_asset_fail_permanently(ctx: VodContext) -> None:
    with pytest.raises(PermanentJobError):
        await make_handlers(ctx)["mp4"]({"prefix": "assets/none"}, Progress())


class CountingExecutor(Executor):
    """Delegates to the process pool and remembers which functions went there."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.names: list[str] = []

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.names.append(getattr(fn, "func", fn).__name__)
        return self.inner.submit(fn, *args, **kwargs)


async def test_cpu_work_goes_to_the_process_pool(
    blobs: BlobStore, pool: ProcessPoolExecutor, hls_a: Path
) -> None:
    await record(blobs, "assets/rec6", hls_a)
    executor = CountingExecutor(pool)
    handlers = make_handlers(VodContext(blobs, executor))
    await handlers["mp4"]({"prefix": "assets/rec6"}, Progress())
    await handlers["thumbnail"]({"prefix": "assets/rec6", "time_s": 1}, Progress())
    await handlers["clip"](
        {"source_prefix": "assets/rec6", "prefix": "assets/c6", "start_s": 1, "end_s": 2},
        Progress(),
    )
    await blobs.put("uploads/x", b"not a video")
    await handlers["upload"]({"source_key": "uploads/x", "prefix": "assets/u6"}, Progress())
    assert executor.names == ["remux_to_mp4", "extract_thumbnail", "clip_to_cmaf", "process_upload"]


def test_pool_workers_yield_the_cpu_to_the_live_path(pool: ProcessPoolExecutor) -> None:
    import os

    from vod.jobs import WORKER_NICENESS

    assert pool.submit(os.nice, 0).result(timeout=30) >= os.nice(0) + WORKER_NICENESS
