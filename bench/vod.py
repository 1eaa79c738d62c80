"""VOD benchmarks: finalise latency (1 min vs 60 min), MP4 job vs ffmpeg -c copy, upload transcode.

Run: ``.venv/bin/python bench/vod.py [--s3] [--skip-transcode]``

1. Window close → ready: a recording is fed through the Recorder faster than
   real time (real 2 s CMAF segments from ffmpeg, the same bytes reused for
   every entry), then ``Recorder.finalize()`` (the normal path) and
   ``finalize_recording()`` (the crash-recovery path, fresh process state) are
   timed. Target ≤ 2 s for both lengths.
2. MP4 download job (fetch from the BlobStore + PyAV remux + faststart + store,
   warm process pool) vs ``ffmpeg -c copy -movflags +faststart`` on the same
   recording's files. Target ratio ≤ 1.5.
3. Upload transcode of a 1080p30 clip: ``vod.transcode.transcode_to_cmaf``
   (libx264 veryfast) vs ``ffmpeg -c:v libx264 -preset veryfast`` on the same
   file, both as x real time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realtime.segments import InitSegment, Part, Segment
from vod.blobstore import BlobStore, LocalBlobStore
from vod.jobs import VodContext, make_handlers, make_process_pool
from vod.manifest import load_manifest
from vod.playlist import render_media_playlist
from vod.recorder import Recorder, finalize_recording
from vod.transcode import transcode_to_cmaf


def ffmpeg(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)
    return time.perf_counter() - t0


def make_hls(out: Path, seconds: int, size: str, seg_s: int = 2) -> list[tuple[float, Path]]:
    out.mkdir(parents=True, exist_ok=True)
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "3M", "-g", str(30 * seg_s),
        "-keyint_min", str(30 * seg_s), "-sc_threshold", "0", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k",
        "-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", str(seg_s),
        "-hls_playlist_type", "vod", "-hls_fmp4_init_filename", "init.mp4",
        "-hls_segment_filename", str(out / "seg%05d.m4s"), str(out / "index.m3u8"),
    )  # fmt: skip
    entries: list[tuple[float, Path]] = []
    duration = 0.0
    for line in (out / "index.m3u8").read_text().splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line and not line.startswith("#"):
            entries.append((duration, out / line))
    return entries


def as_segments(hls: Path, entries: list[tuple[float, Path]], count: int) -> list[Segment]:
    init = InitSegment(0, (hls / "init.mp4").read_bytes(), "avc1.64001f,mp4a.40.2", 1280, 720, 1)
    datas = [(d, p.read_bytes()) for d, p in entries]
    out: list[Segment] = []
    t = 0.0
    for i in range(count):
        dur, data = datas[i % len(datas)]
        out.append(Segment(i, dur, (Part(i, 0, data, dur, True),), 1.8e9 + t, False, 0, init, t))
        t += dur
    return out


async def record(blobs: BlobStore, prefix: str, segs: list[Segment]) -> Recorder:
    rec = Recorder(blobs, prefix, max_pending=10_000, max_pending_bytes=1 << 40)
    rec.on_init(segs[0].init)
    for i, s in enumerate(segs):
        rec.on_segment(s)
        if i % 50 == 0:
            await asyncio.sleep(0)  # feed faster than real time, still interleaved
    await rec.flush()
    return rec


async def bench_finalise(blobs: BlobStore, label: str, hls: Path, entries: list) -> None:
    seg_s = entries[0][0]
    for minutes in (1, 60):
        count = round(minutes * 60 / seg_s)
        segs = as_segments(hls, entries, count)
        prefix = f"bench/{label}/fin{minutes}"
        t0 = time.perf_counter()
        rec = await record(blobs, prefix, segs)
        feed = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = await rec.finalize()
        live_ready = time.perf_counter() - t0
        # Crash path: un-finalise, then recover from the blobs alone.
        m.final = False
        from vod.manifest import save_manifest

        await save_manifest(blobs, prefix, m)
        t0 = time.perf_counter()
        m2 = await finalize_recording(blobs, prefix)
        crash_ready = time.perf_counter() - t0
        assert m2.final and len(m2.segments) == count
        t0 = time.perf_counter()
        text = render_media_playlist(await load_manifest(blobs, prefix))
        render = time.perf_counter() - t0
        assert text.endswith("#EXT-X-ENDLIST\n")
        print(
            f"[finalise/{label}] {minutes:>2} min ({count} segs, fed in {feed:.1f} s): "
            f"finalize() {live_ready * 1000:.0f} ms, recovery finalize_recording() "
            f"{crash_ready * 1000:.0f} ms, load+render playlist {render * 1000:.0f} ms"
        )


async def bench_mp4(blobs: BlobStore, work: Path, seconds: int) -> None:
    hls = work / "mp4src"
    entries = make_hls(hls, seconds, "1280x720")
    segs = as_segments(hls, entries, len(entries))
    prefix = "bench/mp4rec"
    await (await record(blobs, prefix, segs)).finalize()
    # ffmpeg reads the same recording's files (playlist rendered next to them).
    recdir = work / "recfiles"
    recdir.mkdir(exist_ok=True)
    for key in await blobs.list(prefix + "/"):
        await blobs.get_file(key, recdir / key.rsplit("/", 1)[1])
    (recdir / "index.m3u8").write_text(render_media_playlist(await load_manifest(blobs, prefix)))
    pool = make_process_pool(1)
    ctx = VodContext(blobs, pool, str(work / "scratch"))
    handler = make_handlers(ctx)["mp4"]

    async def noop(_: int) -> None:
        return None

    await handler({"prefix": prefix, "key": "bench/warm.mp4"}, noop)  # warm the pool
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(7):
        t0 = time.perf_counter()
        result = await handler({"prefix": prefix}, noop)
        ours.append(time.perf_counter() - t0)
        copy_args = [
            "-allowed_extensions", "ALL", "-i", str(recdir / "index.m3u8"), "-c", "copy",
            "-movflags", "+faststart", str(work / "ffmpeg.mp4"),
        ]  # fmt: skip
        theirs.append(ffmpeg(*copy_args))
    pool.shutdown()
    o, t = statistics.median(ours), statistics.median(theirs)
    size = result["size"] / 1e6
    print(
        f"[mp4] {seconds} s 720p recording ({size:.1f} MB), 7 runs: job median {o:.3f} s "
        f"(min {min(ours):.3f}; incl. blob read + store), ffmpeg -c copy median {t:.3f} s "
        f"(min {min(theirs):.3f}), ratio of medians {o / t:.2f}, of minima "
        f"{min(ours) / min(theirs):.2f}"
    )


def bench_transcode(work: Path, seconds: int) -> None:
    src = work / "src1080.mkv"
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=duration={seconds}:sample_rate=48000",
        "-c:v", "mpeg4", "-q:v", "3", "-c:a", "libopus", str(src),
    )  # fmt: skip
    t0 = time.perf_counter()
    transcode_to_cmaf(str(src), str(work / "tc"))
    ours = time.perf_counter() - t0
    theirs = ffmpeg(
        "-i", str(src), "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
        "-c:a", "aac", "-b:a", "128k", str(work / "tc_ffmpeg.mp4"),
    )  # fmt: skip
    print(
        f"[transcode] {seconds} s 1080p30 MPEG-4/Opus → H.264/AAC: vod.transcode {ours:.1f} s "
        f"= {seconds / ours:.2f}x realtime; ffmpeg 5.1 -preset veryfast {theirs:.1f} s "
        f"= {seconds / theirs:.2f}x realtime"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--s3", action="store_true", help="also run finalise against moto S3")
    ap.add_argument("--mp4-seconds", type=int, default=60)
    ap.add_argument("--transcode-seconds", type=int, default=10)
    ap.add_argument("--skip-transcode", action="store_true")
    ap.add_argument("--only", choices=["finalise", "mp4", "transcode"], default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="onair-bench-vod-") as tmp:
        work = Path(tmp)
        local = LocalBlobStore(work / "blobs")
        only = args.only
        if only in (None, "finalise"):
            hls = work / "fin"
            entries = make_hls(hls, 10, "1280x720")
            await bench_finalise(local, "local", hls, entries)
        if args.s3 and only in (None, "finalise"):
            from tests.support.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server
            from vod.blobstore.s3 import S3BlobStore

            server = S3Server().start()
            try:
                s3 = S3BlobStore(
                    server.endpoint_url, "bench", REGION, ACCESS_KEY, SECRET_KEY,
                    create_bucket=True,
                )  # fmt: skip
                await bench_finalise(s3, "s3-moto", hls, entries)
                await s3.close()
            finally:
                server.stop()
        if only in (None, "mp4"):
            await bench_mp4(local, work, args.mp4_seconds)
        if not args.skip_transcode and only in (None, "transcode"):
            bench_transcode(work, args.transcode_seconds)


if __name__ == "__main__":
    asyncio.run(main())
