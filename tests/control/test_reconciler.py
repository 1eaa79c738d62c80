"""The reconciler repairs what a crash (or an older version, whose flows were not
one transaction) left unmoved past its deadline, each with a reason — built on a
real store with no HTTP. Younger records are left alone."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from control.domain.assets import COLLECTION as ASSETS
from control.domain.assets import UPLOADS, AssetService, upload_alive_key, upload_put
from control.domain.live_streams import LiveStreamService
from control.jobs import JobRunner
from control.outbox import Outbox
from control.reconciler import Reconciler
from control.settings import load_settings
from control.store.base import Store
from control.vod_jobs import AssetJobs
from tests.support.stores import make_store
from vod.blobstore.local import LocalBlobStore


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    s = make_store(request.param, tmp_path, url)
    await s.open()
    yield s
    await s.close()


def reconciler(store: Store, tmp_path: Path, *, later_s: float = 0.0) -> Reconciler:
    settings = load_settings({}, data_dir=str(tmp_path), reconcile_after_s=60)
    assets = AssetService(store, Outbox(store))
    jobs = AssetJobs(store, assets, None, JobRunner(store))  # type: ignore[arg-type]
    return Reconciler(
        store,
        settings,
        assets=assets,
        jobs=jobs,
        blobs=LocalBlobStore(tmp_path / "blobs"),
        owner="test",
        clock=lambda: time.time() + later_s,
    )


async def new_asset(store: Store, **fields: Any) -> str:
    view = await AssetService(store, Outbox(store)).create(
        source=fields.pop("source"), extra=fields
    )
    return str(view["id"])


async def queued(store: Store) -> list[str]:
    tasks = await store.lease("jobs", "peek", 1, limit=100)
    return sorted(t.id for t in tasks)


async def test_an_interrupted_upload_is_errored_with_a_reason(store: Store, tmp_path: Path) -> None:
    data = {"status": "uploading", "token_hash": "x", "asset_id": None, "max_bytes": 1,
            "playback_policy": "public", "expires_at": time.time() + 3600,
            "claimed_at": time.time()}  # fmt: skip
    await store.commit([upload_put("up_1", data, 0)])
    assert (await reconciler(store, tmp_path).run_once())["uploads"] == 0, "not stuck yet"
    # a slow upload whose bytes still arrive is left alone, however old its claim
    await store.kv_set(upload_alive_key("up_1"), "1", ttl_s=60)
    assert (await reconciler(store, tmp_path, later_s=120).run_once())["uploads"] == 0
    await store.kv_delete(upload_alive_key("up_1"))
    assert (await reconciler(store, tmp_path, later_s=120).run_once())["uploads"] == 1
    rec = await store.get(UPLOADS, "up_1")
    assert rec is not None and rec.data["status"] == "errored"
    assert rec.data["error"]["type"] == "interrupted"


async def test_preparing_uploads_and_clips_get_their_job_again(
    store: Store, tmp_path: Path
) -> None:
    upload = await new_asset(store, source="upload", upload_id="up_9")
    source = await new_asset(store, source="upload", upload_id="up_8")
    clip = await new_asset(
        store, source="clip", input={"asset_id": source, "start_s": 0, "end_s": 2}
    )
    later = reconciler(store, tmp_path, later_s=120)
    assert (await later.run_once())["jobs"] == 3
    assert await queued(store) == sorted(
        [f"asset.upload:{upload}", f"asset.upload:{source}", f"asset.clip:{clip}"]
    )


async def test_a_ready_asset_without_its_mp4_gets_the_job(store: Store, tmp_path: Path) -> None:
    assets = AssetService(store, Outbox(store))
    asset = await new_asset(store, source="upload", upload_id="up_7")
    await assets.mark_ready(asset, duration_s=3.0, gaps=[])  # an older version: no MP4 job
    assert await queued(store) == []
    assert (await reconciler(store, tmp_path, later_s=120).run_once())["mp4"] == 1
    assert await queued(store) == [f"asset.mp4:{asset}"]


async def test_a_retired_live_recording_left_preparing_is_finished(
    store: Store, tmp_path: Path
) -> None:
    settings = load_settings({}, data_dir=str(tmp_path))
    streams = LiveStreamService(store, settings, Outbox(store))
    ls = await streams.create()
    assets = AssetService(store, Outbox(store))
    active = await assets.create_for_live_stream(ls["id"])
    # the recording the stream still points at belongs to the live lifecycle
    later = reconciler(store, tmp_path, later_s=120)
    assert (await later.run_once())["recordings"] == 0
    # an older version retired it from the stream, then died before it was ready
    await streams.mutate(ls["id"], lambda data: data.update(active_asset_id=None))
    assert (await later.run_once())["recordings"] == 1
    rec = await store.get(ASSETS, active)
    assert rec is not None and rec.data["status"] == "errored"
    assert "before anything was recorded" in rec.data["error"]["message"]
