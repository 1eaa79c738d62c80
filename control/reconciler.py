"""The reconciler: finds records a crash left half done and finishes or errors
them, each with a reason. One node runs it at a time (the ``reconciler``
lease), every ``reconcile_every_s``; a record counts as stuck once it has not
moved for ``reconcile_after_s``.

Flows commit in one transaction where the store allows (an upload's asset,
record and job; a clip and its job; a broadcast's asset ready with its MP4
job), so what is left to repair is what cannot be one transaction, or what an
older version left:

* an upload ``uploading`` whose body stopped arriving (the node died while it
  arrived: its alive key expired) → ``errored`` (``interrupted``), its partial
  source deleted;
* an asset ``preparing`` from an upload or a clip → its job queued again (one
  id per asset and kind: a job still queued or running is left alone; a gone
  source makes the job fail, and the asset says why);
* a live asset ``preparing`` that is no longer its stream's active recording →
  its recording finalised from storage, then ``ready`` (with its MP4 job) or
  ``errored``;
* a ``ready`` asset whose MP4 is still ``preparing`` → its MP4 job queued again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from control.domain.assets import (
    COLLECTION as ASSETS,
)
from control.domain.assets import (
    UPLOADS,
    AssetService,
    AssetStatus,
    asset_prefix,
    upload_alive_key,
    upload_put,
)
from control.domain.live_streams import COLLECTION as LIVE_STREAMS
from control.leased_loop import LeasedLoop
from control.settings import Settings
from control.store.base import Conflict, Record, Store, list_all
from control.vod_jobs import CLIP, MP4, UPLOAD, AssetJobs
from vod.blobstore import BlobError, BlobStore
from vod.recorder import finalize_recording

log = logging.getLogger(__name__)

LEASE = "reconciler"


class Reconciler:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        assets: AssetService,
        jobs: AssetJobs,
        blobs: BlobStore,
        owner: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.assets = assets
        self.jobs = jobs
        self.blobs = blobs
        self.owner = owner
        self.clock = clock
        self._loop: LeasedLoop | None = None

    async def _all(self, collection: str, tag: str, value: str) -> list[Record]:
        return await list_all(self.store, collection, where=(tag, value))

    def _stuck(self, data: dict[str, Any], field: str = "updated_at") -> bool:
        moved = data.get(field) or data.get("updated_at") or 0.0
        return float(moved) < self.clock() - self.settings.reconcile_after_s

    async def run_once(self) -> dict[str, int]:
        repaired = {"uploads": 0, "jobs": 0, "recordings": 0, "mp4": 0}
        for rec in await self._all(UPLOADS, "status", "uploading"):
            if self._stuck(rec.data, "claimed_at") and not await self.store.kv_get(
                upload_alive_key(rec.id)
            ):
                repaired["uploads"] += await self._interrupted_upload(rec)
        for rec in await self._all(ASSETS, "status", AssetStatus.PREPARING.value):
            if not self._stuck(rec.data):
                continue
            source = rec.data.get("source")
            if source in ("upload", "clip"):
                repaired["jobs"] += await self._requeue(rec)
            elif source == "live":
                repaired["recordings"] += await self._finish_recording(rec)
        for rec in await self._all(ASSETS, "mp4_status", "preparing"):
            if rec.data.get("status") == AssetStatus.READY.value and self._stuck(rec.data):
                await self.store.commit([self.jobs.op(MP4, {"asset_id": rec.id})])
                repaired["mp4"] += 1
        if any(repaired.values()):
            self.jobs.notify()
            log.warning("reconciler repaired what a crash left", extra={"repaired": repaired})
        return repaired

    async def _interrupted_upload(self, rec: Record) -> int:
        data = dict(
            rec.data,
            status="errored",
            error={
                "type": "interrupted",
                "message": "the upload was interrupted (the server stopped while the file "
                "arrived); create a new upload and send the file again",
            },
        )
        try:
            await self.store.commit([upload_put(rec.id, data, rec.version)])
        except Conflict:
            return 0
        with contextlib.suppress(BlobError, OSError):
            await self.blobs.delete(f"uploads/{rec.id}/source")
        return 1

    async def _requeue(self, rec: Record) -> int:
        d = rec.data
        if d["source"] == "upload":
            upload_id = d.get("upload_id")
            if not upload_id:
                return 0
            op = self.jobs.op(
                UPLOAD, {"asset_id": rec.id, "source_key": f"uploads/{upload_id}/source"}
            )
        else:
            clip = d.get("input") or {}
            if not clip.get("asset_id"):
                return 0
            source = await self.assets.get(str(clip["asset_id"]))
            duration = float(source.data.get("duration_s") or 0) if source else 0.0
            op = self.jobs.op(
                CLIP,
                {
                    "asset_id": rec.id,
                    "source_asset_id": clip["asset_id"],
                    "start_s": clip.get("start_s", 0),
                    "end_s": min(float(clip.get("end_s", duration)), duration or 1e9),
                },
            )
        await self.store.commit([op])  # a no-op when that job is still queued or running
        return 1

    async def _finish_recording(self, rec: Record) -> int:
        ls_id = rec.data.get("live_stream_id")
        stream = await self.store.get(LIVE_STREAMS, str(ls_id)) if ls_id else None
        if stream is not None and stream.data.get("active_asset_id") == rec.id:
            return 0  # still the stream's recording: the live lifecycle owns it
        try:
            manifest = await finalize_recording(self.blobs, asset_prefix(rec.id))
        except (BlobError, OSError) as exc:
            await self.assets.mark_errored(
                rec.id,
                f"the recording could not be finalized: {exc}",
                error_type="storage_failed",
            )
            return 1
        if manifest.segments:
            await self.assets.mark_ready(
                rec.id,
                duration_s=manifest.duration_s,
                gaps=[g.to_dict() for g in manifest.gaps()],
                then=[self.jobs.op(MP4, {"asset_id": rec.id})],
            )
        else:
            await self.assets.mark_errored(
                rec.id, "the broadcast's node stopped before anything was recorded"
            )
        return 1

    # -- the loop ----------------------------------------------------------------------
    def start(self) -> None:
        self._loop = LeasedLoop(
            self.store, LEASE, self.owner, self.settings.reconcile_every_s, self.run_once
        )
        self._loop.start()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()
