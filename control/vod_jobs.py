"""Asset jobs: control's durable job kinds wrapped around vod's media work.

`vod.jobs` does the media (remux, transcode, clip, MP4) and knows nothing of
records; these handlers run it for an asset and move the asset record along
(``asset.progress``, ``asset.ready``, ``asset.errored``, ``mp4_status``).
Job kinds:

* ``asset.mp4`` ``{asset_id}`` — the downloadable MP4 of a ready asset;
* ``asset.upload`` ``{asset_id, source_key}`` — an uploaded file → asset;
* ``asset.clip`` ``{asset_id, source_asset_id, start_s, end_s}``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from control.domain.assets import AssetService, asset_prefix
from control.jobs import (
    DEFAULT_QUEUE,
    JobContext,
    JobRunner,
    PermanentJobError,
    enqueue_job,
    job_op,
)
from control.store.base import Enqueue, Store
from vod import jobs as vod_jobs
from vod.jobs import VodContext

log = logging.getLogger(__name__)

MP4 = "asset.mp4"
UPLOAD = "asset.upload"
CLIP = "asset.clip"


async def _run(work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Await vod's work; its permanent failures are the runner's permanent failures."""
    try:
        return await work
    except vod_jobs.PermanentJobError as exc:
        raise PermanentJobError(str(exc)) from exc


class AssetJobs:
    def __init__(
        self, store: Store, assets: AssetService, vod: VodContext, runner: JobRunner
    ) -> None:
        self.store = store
        self.assets = assets
        self.vod = vod
        self.runner = runner

    def register(self) -> None:
        self.runner.handlers[MP4] = self.mp4
        self.runner.handlers[UPLOAD] = self.upload
        self.runner.handlers[CLIP] = self.clip
        previous = self.runner.on_failure

        async def on_failure(job: JobContext, error: str) -> None:
            if previous is not None:
                await previous(job, error)
            await self._failed(job, error)

        self.runner.on_failure = on_failure

    @staticmethod
    def op(kind: str, payload: dict[str, Any]) -> Enqueue:
        """This asset job as an op for the commit that makes it due (one per asset
        and kind); `notify()` after the commit."""
        return job_op(kind, payload, job_id=f"{kind}:{payload['asset_id']}", queue=DEFAULT_QUEUE)

    def notify(self) -> None:
        self.runner.notify()

    async def enqueue(
        self, kind: str, payload: dict[str, Any], *, max_depth: int | None = None
    ) -> str:
        """Queue a job for an asset (one per asset and kind)."""
        job_id = await enqueue_job(
            self.store,
            kind,
            payload,
            job_id=f"{kind}:{payload['asset_id']}",
            max_depth=max_depth,
            queue=DEFAULT_QUEUE,
        )
        self.runner.notify()
        return job_id

    # ---------------------------------------------------------------- handlers
    async def mp4(self, job: JobContext) -> None:
        asset_id = str(job.payload["asset_id"])
        rec = await self.assets.get(asset_id)
        if rec is None:
            return  # deleted meanwhile
        result = await _run(
            vod_jobs.mp4_job(self.vod, {"prefix": asset_prefix(asset_id)}, job.progress)
        )
        if result.get("status") == "ready":
            await self.assets.set_fields(asset_id, mp4_status="ready", mp4_size=result.get("size"))
        else:
            await self.assets.set_fields(asset_id, mp4_status="errored")

    async def upload(self, job: JobContext) -> None:
        asset_id = str(job.payload["asset_id"])
        if await self.assets.get(asset_id) is None:
            return

        async def progress(pct: int) -> None:
            await job.progress(pct)
            await self.assets.progress(asset_id, min(int(pct), 99))

        result = await _run(
            vod_jobs.upload_job(
                self.vod,
                {
                    "source_key": job.payload["source_key"],
                    "prefix": asset_prefix(asset_id),
                    "delete_source": True,
                },
                progress,
            )
        )
        await self._finish(asset_id, result)

    async def clip(self, job: JobContext) -> None:
        asset_id = str(job.payload["asset_id"])
        if await self.assets.get(asset_id) is None:
            return

        async def progress(pct: int) -> None:
            await job.progress(pct)
            await self.assets.progress(asset_id, min(int(pct), 99))

        result = await _run(
            vod_jobs.clip_job(
                self.vod,
                {
                    "source_prefix": asset_prefix(str(job.payload["source_asset_id"])),
                    "prefix": asset_prefix(asset_id),
                    "start_s": float(job.payload["start_s"]),
                    "end_s": float(job.payload["end_s"]),
                },
                progress,
            )
        )
        await self._finish(asset_id, result)

    async def _finish(self, asset_id: str, result: dict[str, Any]) -> None:
        if result.get("status") == "ready":
            await self.assets.mark_ready(
                asset_id,
                duration_s=float(result.get("duration_s") or 0.0),
                gaps=list(result.get("gaps") or []),
                then=[self.op(MP4, {"asset_id": asset_id})],
            )
            self.notify()
        else:
            await self.assets.mark_errored(
                asset_id, str(result.get("error") or "processing failed")
            )

    async def _failed(self, job: JobContext, error: str) -> None:
        asset_id = job.payload.get("asset_id")
        if not asset_id:
            return
        if job.kind == MP4:
            await self.assets.set_fields(str(asset_id), mp4_status="errored")
        elif job.kind in (UPLOAD, CLIP):
            await self.assets.mark_errored(str(asset_id), f"processing failed: {error}")
