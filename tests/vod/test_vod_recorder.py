"""The recorder stores every segment as it completes, and the manifest is enough to play it."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import av
import m3u8

from tests.vod.vod_media import segments_from_hls, synthetic
from vod.blobstore import BlobStore
from vod.manifest import load_manifest
from vod.playlist import gaps, render_media_playlist
from vod.recorder import Recorder, RecordingProgress, finalize_recording


async def test_segments_are_stored_in_order_with_a_manifest(blobs: BlobStore) -> None:
    progress: list[RecordingProgress] = []
    rec = Recorder(blobs, "assets/a1", on_progress=progress.append)
    init, segs = synthetic(5)
    rec.on_init(init)
    for seg in segs:
        rec.on_segment(seg)
    await rec.flush()
    keys = await blobs.list("assets/a1/")
    assert keys == sorted(
        ["assets/a1/init-g0.mp4", "assets/a1/manifest.json"]
        + [f"assets/a1/seg{i:06d}-g0.m4s" for i in range(5)]
    )
    m = await load_manifest(blobs, "assets/a1")
    assert [s.msn for s in m.segments] == [0, 1, 2, 3, 4]
    assert m.duration_s == 10.0 and not m.final
    assert await blobs.get("assets/a1/seg000003-g0.m4s") == segs[3].data
    assert progress[-1].segments == 5 and progress[-1].duration_s == 10.0
    final = await rec.finalize()
    assert final.final


async def test_live_playlist_is_a_growing_event_then_vod_with_endlist(blobs: BlobStore) -> None:
    rec = Recorder(blobs, "assets/a2")
    init, segs = synthetic(3)
    rec.on_init(init)
    for seg in segs[:2]:
        rec.on_segment(seg)
    await rec.flush()
    live = m3u8.loads(render_media_playlist(await load_manifest(blobs, "assets/a2")))
    assert live.playlist_type == "event" and not live.is_endlist and len(live.segments) == 2
    rec.on_segment(segs[2])
    rec.on_end()
    m = await rec.finalize()
    text = render_media_playlist(m, suffix="?token=abc")
    vod = m3u8.loads(text)
    assert vod.playlist_type == "vod" and vod.is_endlist
    assert [s.uri for s in vod.segments] == [f"seg{i:06d}-g0.m4s?token=abc" for i in range(3)]
    assert '#EXT-X-MAP:URI="init-g0.mp4?token=abc"' in text
    assert text.rstrip().endswith("#EXT-X-ENDLIST")


async def test_reconnect_gives_one_discontinuity_a_new_map_and_one_gap(blobs: BlobStore) -> None:
    rec = Recorder(blobs, "assets/a3")
    init0, first = synthetic(3, pdt0=1000.0)
    # A new publication 7 s after the first ended: new segmenter, numbering restarts.
    init1, second = synthetic(2, generation=0, pdt0=1013.0, discontinuity_first=False)
    init1 = type(init1)(0, b"another-init", init1.codecs, 640, 360, 1)
    second = [dataclasses.replace(s, init=init1) for s in second]
    rec.on_init(init0)
    for s in first:
        rec.on_segment(s)
    rec.on_init(init1)
    for s in second:
        rec.on_segment(s)
    m = await rec.finalize()
    assert [s.generation for s in m.segments] == [0, 0, 0, 1, 1]
    assert [s.discontinuity for s in m.segments] == [False, False, False, True, False]
    assert gaps(m) == [{"at_s": 6.0, "duration_s": 7.0, "reason": "reconnect"}]
    text = render_media_playlist(m)
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    assert text.count("#EXT-X-MAP:") == 2
    parsed = m3u8.loads(text)
    assert parsed.segments[3].discontinuity


async def test_a_resumed_recorder_continues_the_same_asset(blobs: BlobStore) -> None:
    init, segs = synthetic(4)
    first = Recorder(blobs, "assets/a4")
    first.on_init(init)
    for s in segs[:2]:
        first.on_segment(s)
    await first.close()
    second = Recorder(blobs, "assets/a4")  # e.g. after a restart, same prefix
    second.on_init(init)
    for s in segs[2:]:
        second.on_segment(s)
    m = await second.finalize()
    assert [s.uri for s in m.segments] == [
        "seg000000-g0.m4s",
        "seg000001-g0.m4s",
        "seg000002-g1.m4s",
        "seg000003-g1.m4s",
    ]
    assert [s.discontinuity for s in m.segments] == [False, False, True, False]
    # the second process continued what the first left: the gap says a node was lost
    assert [g["reason"] for g in gaps(m)] == ["node_lost"]


class StallingStore:
    """Wraps a store; puts block until released (storage stalled)."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.release = asyncio.Event()

    async def put(self, key: str, data: bytes, content_type: str = "") -> None:
        await self.release.wait()
        await self.inner.put(key, data, content_type)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_stalled_store_keeps_memory_bounded_and_reports_drops(
    local_blobs: BlobStore,
) -> None:
    store = StallingStore(local_blobs)
    rec = Recorder(store, "assets/a5", max_pending=3)  # type: ignore[arg-type]
    init, segs = synthetic(10)
    rec.on_init(init)
    for s in segs[:1]:
        rec.on_segment(s)
    await asyncio.sleep(0.05)  # writer is now blocked on the init put
    for s in segs[1:]:
        rec.on_segment(s)
    assert rec.stats.pending == 3 and rec.stats.dropped == 7
    assert rec.stats.pending_bytes == sum(len(s.data) for s in segs[:3])
    store.release.set()
    await rec.flush()
    rec.on_segment(dataclasses.replace(segs[9], msn=10))
    m = await rec.finalize()
    assert [s.msn for s in m.segments] == [0, 1, 2, 10] and m.dropped == 7
    # The hole left by the dropped segments shows as a discontinuity.
    assert [s.discontinuity for s in m.segments] == [False, False, False, True]
    assert [g["reason"] for g in gaps(m)] == ["storage"]


async def test_storage_errors_are_retried(local_blobs: BlobStore) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.fails = 2

        async def put(self, key: str, data: bytes, content_type: str = "") -> None:
            if key.endswith(".m4s") and self.fails:
                self.fails -= 1
                raise OSError("transient")
            await local_blobs.put(key, data, content_type)

        def __getattr__(self, name: str) -> object:
            return getattr(local_blobs, name)

    rec = Recorder(Flaky(), "assets/a6", retry_delays=(0.01, 0.01, 0.01))  # type: ignore[arg-type]
    init, segs = synthetic(3)
    rec.on_init(init)
    for s in segs:
        rec.on_segment(s)
    m = await rec.finalize()
    assert len(m.segments) == 3 and m.dropped == 0


async def test_real_cmaf_recording_plays_as_vod(blobs: BlobStore, hls_a: Path) -> None:
    init, segs = segments_from_hls(hls_a)
    rec = Recorder(blobs, "assets/real")
    rec.on_init(init)
    for s in segs:
        rec.on_segment(s)
    m = await rec.finalize()
    assert abs(m.duration_s - 6.0) < 0.1
    # Rebuild the files from the store and let FFmpeg (PyAV) read the playlist.
    out = Path(hls_a.parent / f"replay-{type(blobs).__name__}")
    out.mkdir(exist_ok=True)  # noqa: ASYNC240
    for key in await blobs.list("assets/real/"):
        await blobs.get_file(key, out / key.rsplit("/", 1)[1])
    (out / "index.m3u8").write_text(render_media_playlist(m))
    with av.open(str(out / "index.m3u8")) as c:
        kinds = sorted(s.type for s in c.streams)
        frames = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    assert kinds == ["audio", "video"]
    assert frames == 180


async def test_crash_recovery_finalises_from_the_blobs_alone(blobs: BlobStore, hls_a: Path) -> None:
    init, segs = segments_from_hls(hls_a)
    rec = Recorder(blobs, "assets/crash")
    rec.on_init(init)
    for s in segs[:4]:
        rec.on_segment(s)
    await rec.flush()
    # The process dies: segment 4 reached the store but the manifest write did not.
    await blobs.put("assets/crash/seg000004-g0.m4s", segs[4].data)
    rec._task.cancel()  # type: ignore[union-attr]  # simulate kill -9: nothing more runs
    del rec
    # A new process finalises from storage alone.
    m = await finalize_recording(blobs, "assets/crash")
    assert m.final and len(m.segments) == 5
    assert abs(m.segments[4].duration - segs[4].duration) < 0.05
    assert abs(m.duration_s - sum(s.duration for s in segs[:5])) < 0.05
    again = await finalize_recording(blobs, "assets/crash")  # idempotent
    assert again.to_json() == m.to_json()
    assert "#EXT-X-ENDLIST" in render_media_playlist(await load_manifest(blobs, "assets/crash"))


class BrokenStore:
    """Wraps a store; puts of keys matching `failing` raise while `broken`."""

    def __init__(self, inner: BlobStore, failing: str) -> None:
        self.inner = inner
        self.failing = failing
        self.broken = True

    async def put(self, key: str, data: bytes, content_type: str = "") -> None:
        if self.broken and self.failing in key:
            raise OSError(28, "No space left on device")
        await self.inner.put(key, data, content_type)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_lost_segments_are_told_as_warnings_and_gaps(local_blobs: BlobStore) -> None:
    from vod.recorder import RecordingWarning

    store = BrokenStore(local_blobs, ".m4s")
    warnings: list[RecordingWarning] = []
    rec = Recorder(
        store,  # type: ignore[arg-type]
        "assets/a7",
        retry_delays=(0.01,),
        on_warning=warnings.append,
    )
    init, segs = synthetic(6)
    rec.on_init(init)
    for s in segs[:3]:
        rec.on_segment(s)
    await rec.flush()
    store.broken = False
    for s in segs[3:]:
        rec.on_segment(s)
    m = await rec.finalize()
    assert [s.msn for s in m.segments] == [3, 4, 5]
    assert warnings and warnings[0].kind == "segments_failed"
    assert sorted(msn for w in warnings for msn in w.msns) == [0, 1, 2]
    assert "gap" in warnings[0].message
    assert m.final and m.dropped == 3


async def test_a_final_save_that_keeps_failing_is_not_final(local_blobs: BlobStore) -> None:
    import pytest

    from vod.recorder import RecordingFailed

    store = BrokenStore(local_blobs, "manifest.json")
    store.broken = False
    rec = Recorder(store, "assets/a8", retry_delays=(0.01,), final_retry_s=0.3)  # type: ignore[arg-type]
    init, segs = synthetic(2)
    rec.on_init(init)
    for s in segs:
        rec.on_segment(s)
    await rec.flush()
    store.broken = True
    with pytest.raises(RecordingFailed):
        await rec.finalize()
    assert not rec.manifest.final
    stored = await load_manifest(local_blobs, "assets/a8")
    assert not stored.final, "no ENDLIST for a recording whose end was never stored"
    # storage back: the same recorder finishes the job
    store.broken = False
    assert (await rec.finalize()).final
    assert (await load_manifest(local_blobs, "assets/a8")).final


class UnreachableStore:
    """Wraps a store; puts raise `BlobUnavailable` (the endpoint refuses
    connections) while `down`."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.down = True
        self.refused = 0

    async def put(self, key: str, data: bytes, content_type: str = "") -> None:
        from vod.blobstore import BlobUnavailable

        if self.down:
            self.refused += 1
            raise BlobUnavailable("connection refused")
        await self.inner.put(key, data, content_type)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_an_unreachable_store_is_waited_for_and_nothing_is_lost(
    local_blobs: BlobStore,
) -> None:
    from vod.recorder import RecordingWarning

    store = UnreachableStore(local_blobs)
    warnings: list[RecordingWarning] = []
    # retry_delays would give a refused write up to 0.02 s: the outage lasts far longer
    rec = Recorder(store, "assets/a9", retry_delays=(0.01, 0.01), on_warning=warnings.append)  # type: ignore[arg-type]
    init, segs = synthetic(6)
    rec.on_init(init)
    for s in segs:
        rec.on_segment(s)
        await asyncio.sleep(0.1)
    assert store.refused >= 3 and rec.stats.pending == 6  # all of them wait, none dropped
    store.down = False
    m = await rec.finalize()
    assert [s.msn for s in m.segments] == [0, 1, 2, 3, 4, 5]
    assert gaps(m) == [] and m.dropped == 0 and warnings == []


async def test_an_unreachable_store_at_the_end_is_waited_for_only_until_the_deadline(
    local_blobs: BlobStore,
) -> None:
    import time

    import pytest

    from vod.recorder import RecordingFailed

    store = UnreachableStore(local_blobs)
    rec = Recorder(store, "assets/a10", retry_delays=(0.01,), final_retry_s=0.5)  # type: ignore[arg-type]
    init, segs = synthetic(2)
    rec.on_init(init)
    for s in segs:
        rec.on_segment(s)
    started = time.monotonic()
    with pytest.raises(RecordingFailed):
        await rec.finalize()
    assert time.monotonic() - started < 5
    assert not rec.manifest.final


async def test_a_live_window_reads_its_segments_back_stored_or_not(
    local_blobs: BlobStore,
) -> None:
    """What the live window dropped from memory comes back from the recorder:
    from the store once written, from the queue (or the write in progress)
    while storage is stalled; a segment never recorded is None."""
    store = StallingStore(local_blobs)
    rec = Recorder(store, "assets/a9")  # type: ignore[arg-type]
    init, segs = synthetic(4)
    rec.on_init(init)
    store.release.set()
    for s in segs[:2]:
        rec.on_segment(s)
    await rec.flush()
    store.release.clear()
    for s in segs[2:]:
        rec.on_segment(s)
    await asyncio.sleep(0.05)  # segment 2 is being written, 3 waits in the queue
    for s in segs:
        assert await rec.read_segment(s.msn) == s.data
    assert await rec.read_segment(99) is None
    store.release.set()
    await rec.flush()
    assert await rec.read_segment(3) == segs[3].data
    await rec.finalize()
