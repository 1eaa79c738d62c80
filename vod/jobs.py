"""VOD job handlers for control's JobRunner: "mp4", "thumbnail", "upload", "clip".

Each handler is ``async def handler(payload: dict, progress) -> dict`` where
``progress(percent)`` is awaited with 0..100. ``make_handlers(ctx)`` binds them
to a ``VodContext`` (the BlobStore, a process pool, a scratch directory) and
returns ``{kind: handler}`` ready to register. The async side only moves bytes
(BlobStore ⇄ local temp files, streamed); every PyAV call runs in the pool.

Outcomes: a handler returns a result dict. Bad user input that no retry can fix
(not a video, a clip range outside the asset) returns
``{"status": "errored", "error": "<reason>"}``; a missing source raises
``PermanentJobError``; anything else raised is transient (retry).

Payloads (all keys are BlobStore keys / asset prefixes):
- mp4: ``{"prefix"}`` (+ ``"key"``, default ``<prefix>/download.mp4``)
  → ``{"status": "ready", "key", "size", "duration_s"}``
- thumbnail: ``{"prefix", "time_s"}`` (+ ``"key"``, ``"max_width"``)
  → ``{"status": "ready", "key", "time_s", "width", "height"}``
- upload: ``{"source_key", "prefix"}`` (+ ``"delete_source"``: bool)
  → ``{"status": "ready", "mode": "remux"|"transcode", "duration_s", "gaps", ...}``
- clip: ``{"source_prefix", "prefix", "start_s", "end_s"}``
  → ``{"status": "ready", "duration_s", "start_s", "end_s", ...}``
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from vod.blobstore import BlobNotFound, BlobStore, join_key
from vod.clip import ClipError, clip_to_cmaf, plan_clip, runs
from vod.inputs import MediaPath
from vod.manifest import (
    InitEntry,
    Manifest,
    SegmentEntry,
    init_name,
    load_manifest,
    save_manifest,
    segment_name,
)
from vod.media import Packaged
from vod.mp4 import remux_to_mp4
from vod.thumbnails import extract_thumbnail
from vod.transcode import process_upload, read_progress

Progress = Callable[[int], Awaitable[None]]
Handler = Callable[[dict[str, Any], Progress], Awaitable[dict[str, Any]]]
T = TypeVar("T")

JOB_KINDS = ("mp4", "thumbnail", "upload", "clip")


class PermanentJobError(Exception):
    """The job can never succeed (e.g. its source is gone): do not retry."""

    permanent = True


@dataclass(slots=True)
class VodContext:
    """What the handlers need. ``executor`` None runs CPU work in a thread (tests)."""

    blobs: BlobStore
    executor: Executor | None = None
    scratch_dir: str | None = None
    """Where temp files go (default: the system temp dir)."""

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        if self.executor is None:
            return await asyncio.to_thread(call)
        return await loop.run_in_executor(self.executor, call)

    def tempdir(self) -> tempfile.TemporaryDirectory[str]:
        if self.scratch_dir:
            Path(self.scratch_dir).mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix="onair-vod-", dir=self.scratch_dir)


WORKER_NICENESS = 10
"""VOD work (MP4s, thumbnails, uploads, clips) yields the CPU to the live path:
a flood of thumbnail requests must not slow playback or the API."""


def _lower_priority() -> None:
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)


class LazyProcessPool(Executor):
    """A process pool made at its first task: a node that never makes an MP4,
    thumbnail or clip pays nothing for it (multiprocessing starts its resource
    tracker, ~13 MB, as soon as a pool exists — per worker of the machine)."""

    def __init__(self, make: Callable[[], ProcessPoolExecutor]) -> None:
        self._make = make
        self._pool: ProcessPoolExecutor | None = None
        self._shut = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if self._shut:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self._pool is None:
            self._pool = self._make()
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shut = True
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def make_process_pool(max_workers: int = 1) -> LazyProcessPool:
    """A process pool for VOD CPU work (forkserver with the media modules
    preloaded), its workers at a lower CPU priority than the node; made at its
    first task."""

    def make() -> ProcessPoolExecutor:
        mp = multiprocessing.get_context("forkserver")
        mp.set_forkserver_preload(["av", "vod.media", "vod.mp4", "vod.thumbnails", "vod.transcode"])
        return ProcessPoolExecutor(
            max_workers=max_workers, mp_context=mp, initializer=_lower_priority
        )

    return LazyProcessPool(make)


def make_handlers(ctx: VodContext) -> dict[str, Handler]:
    """``{"mp4": ..., "thumbnail": ..., "upload": ..., "clip": ...}`` bound to ``ctx``."""
    return {
        "mp4": functools.partial(mp4_job, ctx),
        "thumbnail": functools.partial(thumbnail_job, ctx),
        "upload": functools.partial(upload_job, ctx),
        "clip": functools.partial(clip_job, ctx),
    }


# -- moving bytes ---------------------------------------------------------------


async def _load(ctx: VodContext, prefix: str) -> Manifest:
    try:
        return await load_manifest(ctx.blobs, prefix)
    except BlobNotFound:
        raise PermanentJobError(f"no asset at {prefix!r}") from None


async def _append_blob(blobs: BlobStore, key: str, f: BinaryIO) -> None:
    async for chunk in blobs.open(key):
        await asyncio.to_thread(f.write, chunk)


async def fetch_runs(
    ctx: VodContext,
    prefix: str,
    manifest: Manifest,
    indexes: Sequence[int],
    workdir: Path,
    progress: Callable[[int], Awaitable[None]] | None = None,
) -> list[tuple[MediaPath, float]]:
    """Write the segments ``indexes`` as local files, one per generation run (init first).

    Returns ``[(path, offset_s)]`` for the media functions. Streams chunk by chunk.
    A local BlobStore is read in place instead (``path`` is then the list of the
    blobs' files, which the media functions read back to back): no copy at all.
    """
    out: list[tuple[MediaPath, float]] = []
    done = 0
    total = max(1, len(indexes))
    for n, (generation, segs, offset) in enumerate(runs(manifest, indexes)):
        path = workdir / f"run{n:04d}.mp4"
        init: InitEntry = manifest.init_for(generation)
        keys = [join_key(prefix, init.uri)] + [join_key(prefix, s.uri) for s in segs]
        local = [ctx.blobs.local_path(k) for k in keys]
        if all(p is not None for p in local):
            files = [str(p) for p in local]
            if not await asyncio.to_thread(_all_files, files):
                raise PermanentJobError("asset media missing")
            out.append((files, offset))
            done += len(segs)
            if progress is not None:
                await progress(done * 100 // total)
            continue
        f: BinaryIO = await asyncio.to_thread(open, path, "wb")
        try:
            await _append_blob(ctx.blobs, join_key(prefix, init.uri), f)
            for seg in segs:
                await _append_blob(ctx.blobs, join_key(prefix, seg.uri), f)
                done += 1
                if progress is not None:
                    await progress(done * 100 // total)
        except BlobNotFound as exc:
            raise PermanentJobError(f"asset media missing: {exc.key}") from None
        finally:
            await asyncio.to_thread(f.close)
        out.append((str(path), offset))
    return out


def _all_files(paths: list[str]) -> bool:
    return all(os.path.isfile(p) for p in paths)


def _ticker(progress: Progress, lo: int, hi: int) -> Callable[[int], Awaitable[None]]:
    """Map 0..100 of a phase onto lo..hi, reporting only on change."""
    last = [-1]

    async def tick(pct: int) -> None:
        value = lo + (hi - lo) * pct // 100
        if value // 5 != last[0] // 5:
            last[0] = value
            await progress(value)

    return tick


async def store_packaged(
    blobs: BlobStore, packaged: Packaged, prefix: str, *, kind: str, created_at: float | None = None
) -> Manifest:
    """Upload a locally packaged CMAF HLS asset under ``prefix`` and save its final manifest."""
    now = time.time() if created_at is None else created_at
    gen = 0
    init_uri = init_name(gen)
    await blobs.put_file(join_key(prefix, init_uri), packaged.init_path, "video/mp4", move=True)
    manifest = Manifest(kind=kind, created_at=now)
    manifest.inits.append(
        InitEntry(
            generation=gen,
            uri=init_uri,
            codecs=packaged.codecs,
            width=packaged.width,
            height=packaged.height,
            bandwidth=_bandwidth(packaged),
        )
    )
    t = 0.0
    for i, seg in enumerate(packaged.segments):
        uri = segment_name(i, gen)
        size = await blobs.put_file(join_key(prefix, uri), seg.path, "video/iso.segment", move=True)
        manifest.segments.append(
            SegmentEntry(
                index=i,
                uri=uri,
                duration=seg.duration,
                generation=gen,
                msn=i,
                program_date_time=now + t,
                start_pts=t,
                size=size,
            )
        )
        t += seg.duration
    manifest.final = True
    manifest.finalized_at = time.time()
    await save_manifest(blobs, prefix, manifest)
    return manifest


def _bandwidth(packaged: Packaged) -> int:
    peak = 0.0
    for seg in packaged.segments:
        if seg.duration > 0:
            peak = max(peak, Path(seg.path).stat().st_size * 8 / seg.duration)
    return int(peak)


# -- handlers ---------------------------------------------------------------------


async def mp4_job(ctx: VodContext, payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Remux the asset at ``payload["prefix"]`` into a faststart MP4 blob."""
    prefix = str(payload["prefix"])
    key = str(payload.get("key") or join_key(prefix, "download.mp4"))
    manifest = await _load(ctx, prefix)
    if not manifest.segments:
        return {"status": "errored", "error": "the asset has no media"}
    await progress(0)
    with ctx.tempdir() as tmp:
        work = Path(tmp)
        sources = await fetch_runs(
            ctx, prefix, manifest, range(len(manifest.segments)), work, _ticker(progress, 0, 50)
        )
        out = work / "download.mp4"
        info = await ctx.run(remux_to_mp4, sources, str(out))
        await progress(90)
        size = await ctx.blobs.put_file(key, out, "video/mp4", move=True)
    await progress(100)
    return {
        "status": "ready",
        "key": key,
        "size": size,
        "duration_s": info["duration_s"],
        "has_video": info["has_video"],
        "has_audio": info["has_audio"],
    }


def thumbnail_key(prefix: str, time_s: float, max_width: int = 640) -> str:
    return join_key(prefix, "thumbs", f"t{round(time_s * 1000)}-w{max_width}.jpg")


async def thumbnail_job(
    ctx: VodContext, payload: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """Render a JPEG of the asset at ``payload["time_s"]`` into a blob."""
    prefix = str(payload["prefix"])
    time_s = max(0.0, float(payload.get("time_s", 0.0)))
    max_width = int(payload.get("max_width", 640))
    key = str(payload.get("key") or thumbnail_key(prefix, time_s, max_width))
    manifest = await _load(ctx, prefix)
    if not manifest.segments:
        return {"status": "errored", "error": "the asset has no media"}
    time_s = min(time_s, manifest.duration_s)
    data, info = await render_thumbnail(ctx, prefix, manifest, time_s, max_width)
    await ctx.blobs.put(key, data, "image/jpeg")
    await progress(100)
    return {"status": "ready", "key": key, **info}


async def render_thumbnail(
    ctx: VodContext, prefix: str, manifest: Manifest, time_s: float, max_width: int = 640
) -> tuple[bytes, dict[str, Any]]:
    """JPEG bytes of the frame at ``time_s`` (for a route that answers directly)."""
    i = manifest.segment_at(time_s)
    offset_in_segment = time_s - manifest.offsets()[i]
    with ctx.tempdir() as tmp:
        work = Path(tmp)
        [(path, _offset)] = await fetch_runs(ctx, prefix, manifest, [i], work)
        out = work / "thumb.jpg"
        info = await ctx.run(extract_thumbnail, path, offset_in_segment, str(out), max_width)
        data = await asyncio.to_thread(out.read_bytes)
    return data, info


async def upload_job(
    ctx: VodContext, payload: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """Probe the uploaded blob and turn it into an asset at ``payload["prefix"]``."""
    source_key = str(payload["source_key"])
    prefix = str(payload["prefix"])
    await progress(0)
    with ctx.tempdir() as tmp:
        work = Path(tmp)
        src = ctx.blobs.local_path(source_key)  # read a local store in place
        try:
            if src is None:
                src = work / "source"
                await ctx.blobs.get_file(source_key, src)
            elif not await asyncio.to_thread(src.is_file):
                raise BlobNotFound(source_key)
        except BlobNotFound:
            raise PermanentJobError(f"upload {source_key!r} is missing") from None
        await progress(10)
        progress_file = work / "progress"
        running = asyncio.ensure_future(
            ctx.run(process_upload, str(src), str(work / "hls"), progress_path=str(progress_file))
        )
        last = 10
        try:
            while True:
                done, _ = await asyncio.wait({running}, timeout=1.0)
                if done:
                    break
                pct = await asyncio.to_thread(read_progress, progress_file)
                if pct is not None and 10 + pct * 70 // 100 > last:
                    last = 10 + pct * 70 // 100
                    await progress(last)
        finally:
            if not running.done():
                running.cancel()
        result = running.result()
        if not result["ok"]:
            return {"status": "errored", "error": result["error"]}
        await progress(80)
        packaged = Packaged.from_dict(result["packaged"])
        manifest = await store_packaged(ctx.blobs, packaged, prefix, kind="upload")
    if payload.get("delete_source"):
        await ctx.blobs.delete(source_key)
    await progress(100)
    probe = result["probe"]
    return {
        "status": "ready",
        "mode": result["mode"],
        "source": {
            "video_codec": probe["video_codec"],
            "audio_codec": probe["audio_codec"],
            "format": probe["format_name"],
        },
        **manifest.summary(),
    }


async def clip_job(ctx: VodContext, payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Cut ``[start_s, end_s]`` of ``source_prefix`` into a new asset at ``prefix``."""
    source_prefix = str(payload["source_prefix"])
    prefix = str(payload["prefix"])
    manifest = await _load(ctx, source_prefix)
    try:
        start_s, end_s, indexes = plan_clip(
            manifest, float(payload["start_s"]), float(payload["end_s"])
        )
    except ClipError as exc:
        return {"status": "errored", "error": str(exc)}
    await progress(0)
    with ctx.tempdir() as tmp:
        work = Path(tmp)
        sources = await fetch_runs(
            ctx, source_prefix, manifest, indexes, work, _ticker(progress, 0, 40)
        )
        try:
            packaged_dict = await ctx.run(clip_to_cmaf, sources, str(work / "hls"), start_s, end_s)
        except ValueError as exc:
            return {"status": "errored", "error": str(exc)}
        await progress(80)
        clip = await store_packaged(
            ctx.blobs, Packaged.from_dict(packaged_dict), prefix, kind="clip"
        )
    await progress(100)
    return {"status": "ready", "start_s": start_s, "end_s": end_s, **clip.summary()}


async def delete_asset(blobs: BlobStore, prefix: str) -> int:
    """Remove every blob of the asset at ``prefix``."""
    return await blobs.delete_prefix(prefix.strip("/") + "/")
