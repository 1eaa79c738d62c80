"""A recording survives kill -9: a new process finalises it from the stored blobs alone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from tests.support.s3_server import ACCESS_KEY, REGION, SECRET_KEY
from tests.vod.vod_media import segments_from_hls, synthetic
from vod.blobstore import BlobStore, LocalBlobStore
from vod.manifest import load_manifest, save_manifest
from vod.playlist import render_media_playlist
from vod.recorder import Recorder, finalize_recording

ROOT = Path(__file__).resolve().parents[2]

# The recording process: records 6 segments, one every 50 ms, prints progress, never ends.
RECORDER = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tests.vod.vod_media import segments_from_hls
from vod.recorder import Recorder

cfg = json.loads(sys.argv[2])
if cfg["kind"] == "local":
    from vod.blobstore import LocalBlobStore
    blobs = LocalBlobStore(cfg["root"])
else:
    from vod.blobstore.s3 import S3BlobStore
    blobs = S3BlobStore(cfg["endpoint"], cfg["bucket"], cfg["region"], cfg["ak"], cfg["sk"],
                        create_bucket=True)

async def main():
    init, segs = segments_from_hls(Path(cfg["hls"]))
    rec = Recorder(blobs, "assets/killed",
                   on_progress=lambda p: print(f"stored {p.segments}", flush=True))
    rec.on_init(init)
    for s in segs:
        rec.on_segment(s)
        await asyncio.sleep(0.05)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def store_config(blobs: BlobStore) -> dict[str, str]:
    if isinstance(blobs, LocalBlobStore):
        return {"kind": "local", "root": str(blobs.root)}
    from vod.blobstore.s3 import S3BlobStore

    assert isinstance(blobs, S3BlobStore)
    assert blobs.endpoint_url is not None
    return {
        "kind": "s3",
        "endpoint": blobs.endpoint_url,
        "bucket": blobs.bucket,
        "region": REGION,
        "ak": ACCESS_KEY,
        "sk": SECRET_KEY,
    }


async def test_kill_9_mid_recording_then_finalise_from_blobs(blobs: BlobStore, hls_a: Path) -> None:
    cfg = {**store_config(blobs), "hls": str(hls_a)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RECORDER, str(ROOT), json.dumps(cfg),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    reported = 0
    try:
        async with asyncio.timeout(60):
            while reported < 4:
                line = await proc.stdout.readline()
                assert line, "recorder process died"
                if line.startswith(b"stored "):
                    reported = int(line.split()[1])
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    m = await finalize_recording(blobs, "assets/killed")
    stored = [k for k in await blobs.list("assets/killed/") if k.endswith(".m4s")]
    # Everything up to the last completed segment, nothing missing, nothing invented.
    assert m.final and len(m.segments) >= reported
    assert [f"assets/killed/{s.uri}" for s in m.segments] == stored
    assert [s.index for s in m.segments] == list(range(len(m.segments)))
    text = render_media_playlist(m)
    assert text.count("#EXTINF") == len(stored) and text.endswith("#EXT-X-ENDLIST\n")
    assert "#EXT-X-DISCONTINUITY\n" not in text


async def test_several_unlisted_segments_are_adopted_in_order(
    blobs: BlobStore, hls_a: Path
) -> None:
    init, segs = segments_from_hls(hls_a)
    rec = Recorder(blobs, "assets/orphans")
    rec.on_init(init)
    rec.on_segment(segs[0])
    m = await rec.close()
    for i, s in enumerate(segs[1:4], start=1):
        await blobs.put(f"assets/orphans/seg{i:06d}-g0.m4s", s.data)
    await save_manifest(blobs, "assets/orphans", m)
    final = await finalize_recording(blobs, "assets/orphans")
    assert len(final.segments) == 4
    assert abs(final.duration_s - sum(s.duration for s in segs[:4])) < 0.05
    assert (await load_manifest(blobs, "assets/orphans")).final


async def test_finalising_an_asset_that_recorded_nothing(blobs: BlobStore) -> None:
    m = await finalize_recording(blobs, "assets/nothing")
    assert m.final and m.segments == [] and m.duration_s == 0


async def test_a_reconnect_with_an_identical_init_is_still_a_discontinuity(
    blobs: BlobStore,
) -> None:
    rec = Recorder(blobs, "assets/same-init")
    init, segs = synthetic(3)
    rec.on_init(init)
    for s in segs:
        rec.on_segment(s)
    rec.on_end()
    _, again = synthetic(2, pdt0=2000.0)  # same encoder settings → same init bytes
    rec.on_init(init)
    for s in again:
        rec.on_segment(s)
    m = await rec.finalize()
    assert [s.generation for s in m.segments] == [0, 0, 0, 1, 1]
    assert [s.discontinuity for s in m.segments] == [False, False, False, True, False]


async def test_a_timeline_reset_without_on_end_starts_a_new_generation(
    blobs: BlobStore,
) -> None:
    rec = Recorder(blobs, "assets/reset")
    init, segs = synthetic(3)
    rec.on_init(init)
    for s in segs + segs[:1]:  # msn goes back to 0
        rec.on_segment(s)
    m = await rec.finalize()
    assert [s.generation for s in m.segments] == [0, 0, 0, 1]
    assert m.segments[3].discontinuity


async def test_finalize_can_wait_for_the_segmenters_last_segment(blobs: BlobStore) -> None:
    rec = Recorder(blobs, "assets/wait-end")
    init, segs = synthetic(3)
    rec.on_init(init)
    rec.on_segment(segs[0])

    def segmenter_flushes() -> None:
        for s in segs[1:]:
            rec.on_segment(s)
        rec.on_end()

    asyncio.get_running_loop().call_later(0.1, segmenter_flushes)
    m = await rec.finalize(wait_for_end=5.0)
    assert len(m.segments) == 3 and m.final
