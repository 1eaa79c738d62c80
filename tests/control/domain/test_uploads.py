"""Uploads and clips without HTTP: the upload's state machine, its body streamed
to storage, and the asset, the upload and the job in one commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.domain.assets import UPLOADS, AssetService
from control.domain.errors import Busy, InvalidInput, InvalidState, NotFoundError, Refused
from control.domain.uploads import Clips, Uploads, upload_view
from control.jobs import JobRunner
from control.outbox import Outbox
from control.settings import Settings, load_settings
from control.store.base import Store
from control.vod_jobs import AssetJobs
from tests.control.domain.conftest import events
from vod.blobstore import LocalBlobStore


class Body:
    """What an HTTP request body offers: `read(n)` until b""."""

    def __init__(self, data: bytes, chunk: int = 1000) -> None:
        self.data = data
        self.chunk = chunk

    async def read(self, n: int = -1) -> bytes:
        size = self.chunk if n < 0 else min(n, self.chunk)
        out, self.data = self.data[:size], self.data[size:]
        return out


def spawn(coro: object) -> None:
    coro.close()  # type: ignore[attr-defined]


def make(
    store: Store, outbox: Outbox, tmp_path: Path, settings: Settings
) -> tuple[Uploads, Clips, AssetService, LocalBlobStore]:
    assets = AssetService(store, outbox)
    jobs = AssetJobs(store, assets, None, JobRunner(store))  # type: ignore[arg-type]
    blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    return (
        Uploads(outbox, assets, jobs, blobs, settings),
        Clips(assets, jobs, settings),
        assets,
        blobs,
    )


async def test_an_upload_becomes_an_asset_with_its_job_in_one_commit(
    store: Store, outbox: Outbox, tmp_path: Path, settings: Settings
) -> None:
    uploads, _clips, assets, blobs = make(store, outbox, tmp_path, settings)
    rec, token = await uploads.create(playback_policy="signed", passthrough="p1")
    assert upload_view(rec)["status"] == "waiting" and token not in str(rec.data)
    data = b"\x00\x01" * 5000
    _upload, asset_id, size = await uploads.receive(
        rec.id, token, Body(data), content_type="video/mp4", declared_length=len(data), spawn=spawn
    )
    assert size == len(data) and await blobs.get(f"uploads/{rec.id}/source") == data
    done = await store.get(UPLOADS, rec.id)
    assert done is not None and done.data["status"] == "asset_created"
    assert done.data["asset_id"] == asset_id
    asset = await assets.get(asset_id)
    assert asset is not None and asset.data["source"] == "upload"
    assert asset.data["playback_ids"][0]["policy"] == "signed"
    assert await store.queue_depth("jobs") == 1
    types = [e.type for e in await events(store, asset_id)]
    assert types == ["asset.created", "upload.asset_created"]
    with pytest.raises(InvalidState):  # the same URL twice
        await uploads.receive(
            rec.id, token, Body(data), content_type="video/mp4", declared_length=None, spawn=spawn
        )


async def test_a_wrong_token_finds_nothing_and_a_refused_body_waits_again(
    store: Store, outbox: Outbox, tmp_path: Path
) -> None:
    settings = load_settings({}, data_dir=str(tmp_path / "d"), upload_max_bytes=1000)
    uploads, *_ = make(store, outbox, tmp_path, settings)
    rec, token = await uploads.create(playback_policy="public", passthrough=None)
    with pytest.raises(NotFoundError):
        await uploads.receive(
            rec.id, "wrong", Body(b"x"), content_type="", declared_length=None, spawn=spawn
        )
    with pytest.raises(Refused) as err:
        await uploads.receive(
            rec.id, token, Body(b"x" * 5000), content_type="", declared_length=None, spawn=spawn
        )
    assert err.value.too_large and err.value.error_type == "upload_rejected"
    with pytest.raises(Refused) as err:
        await uploads.receive(
            rec.id, token, Body(b""), content_type="", declared_length=None, spawn=spawn
        )
    assert not err.value.too_large
    back = await store.get(UPLOADS, rec.id)
    assert back is not None and back.data["status"] == "waiting"


async def test_a_full_job_queue_refuses_new_work(
    store: Store, outbox: Outbox, tmp_path: Path
) -> None:
    settings = load_settings({}, data_dir=str(tmp_path / "d"), max_queued_jobs=0)
    uploads, clips, assets, _ = make(store, outbox, tmp_path, settings)
    rec, token = await uploads.create(playback_policy="public", passthrough=None)
    with pytest.raises(Busy) as err:
        await uploads.receive(
            rec.id, token, Body(b"x"), content_type="", declared_length=None, spawn=spawn
        )
    assert err.value.error_type == "queue_full"
    source = await assets.create(source="upload")
    await assets.mark_ready(source["id"], duration_s=10.0, gaps=[])
    with pytest.raises(Busy):
        await clips.create(
            asset_id=source["id"], start_s=1, end_s=2, playback_policy=None, passthrough=None
        )


async def test_a_clip_of_a_ready_asset_inherits_its_policy(
    store: Store, outbox: Outbox, tmp_path: Path, settings: Settings
) -> None:
    _uploads, clips, assets, _ = make(store, outbox, tmp_path, settings)
    source = await assets.create(source="upload", policy="signed")
    with pytest.raises(InvalidState):  # not ready yet
        await clips.create(
            asset_id=source["id"], start_s=1, end_s=2, playback_policy=None, passthrough=None
        )
    await assets.mark_ready(source["id"], duration_s=10.0, gaps=[])
    for start, end, param in ((3, 2, "input.end_s"), (11, 12, "input.start_s")):
        with pytest.raises(InvalidInput) as err:
            await clips.create(
                asset_id=source["id"],
                start_s=start,
                end_s=end,
                playback_policy=None,
                passthrough=None,
            )
        assert err.value.param == param
    clip = await clips.create(
        asset_id=source["id"], start_s=2, end_s=60, playback_policy=None, passthrough=None
    )
    assert clip["source"] == "clip" and clip["playback_ids"][0]["policy"] == "signed"
    assert await store.queue_depth("jobs") == 1
