"""Assets made from something other than a broadcast: uploads and clips.

An upload is a record (collection ``uploads``, `control.domain.assets`) with a
secret URL token (only its hash is kept) that moves ``waiting`` →
``uploading`` (claimed by the one request sending the body: a second gets
`InvalidState`) → ``asset_created``; a body that is refused or cut off puts it
back to ``waiting``; the reconciler errors one whose receiver died
(``interrupted``). While bytes arrive the upload says it is alive (a store key
with a TTL), so a slow upload is never taken for a dead one. The asset, the
upload pointing at it and the job that packages it are one commit.

A clip is an asset cut from a ready asset (`Clips.create`): the asset and its
job in one commit, its playback policy the source's unless the request says
otherwise. Both refuse work with `Busy` when the job queue is full.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from control.domain.api_keys import rfc3339
from control.domain.assets import (
    UPLOAD_ALIVE_TTL_S,
    UPLOADS,
    AssetService,
    AssetStatus,
    upload_alive_key,
    upload_put,
)
from control.domain.errors import Busy, InvalidInput, InvalidState, NotFoundError, Refused
from control.faults import fault_point
from control.ids import new_id
from control.outbox import Outbox
from control.settings import Settings
from control.store.base import Conflict, Record
from control.vod_jobs import CLIP, UPLOAD, AssetJobs
from vod.blobstore import BlobStore
from vod.uploads import ByteReader, EmptyUpload, UploadTooLarge, receive_upload

UPLOAD_URL_TTL_S = 24 * 3600.0
JOB_QUEUE = "jobs"

Spawn = Callable[[Coroutine[Any, Any, Any]], object]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def upload_view(rec: Record, url: str | None = None) -> dict[str, Any]:
    d = rec.data
    out: dict[str, Any] = {
        "id": rec.id,
        "object": "upload",
        "status": d["status"],
        "asset_id": d.get("asset_id"),
        "max_bytes": d["max_bytes"],
        "playback_policy": d["playback_policy"],
        "created_at": rfc3339(rec.created_at),
        "expires_at": rfc3339(d["expires_at"]),
        "error": d.get("error"),
    }
    if url is not None:
        out["url"] = url
    return out


async def _check_queue(jobs: AssetJobs, settings: Settings) -> None:
    depth = await jobs.store.queue_depth(JOB_QUEUE)
    if depth >= settings.max_queued_jobs:
        raise Busy(
            "The processing queue is full; try again later",
            retry_after_s=5,
            error_type="queue_full",
        )


class Uploads:
    def __init__(
        self,
        outbox: Outbox,
        assets: AssetService,
        jobs: AssetJobs,
        blobs: BlobStore,
        settings: Settings,
    ) -> None:
        self.outbox = outbox
        self.store = outbox.store
        self.assets = assets
        self.jobs = jobs
        self.blobs = blobs
        self.settings = settings

    async def create(self, *, playback_policy: str, passthrough: str | None) -> tuple[Record, str]:
        """A new upload waiting for its body, and the token of its URL (shown once)."""
        upload_id = new_id("up")
        token = secrets.token_urlsafe(32)
        data = {
            "status": "waiting",
            "token_hash": _token_hash(token),
            "asset_id": None,
            "max_bytes": self.settings.upload_max_bytes,
            "playback_policy": playback_policy,
            "passthrough": passthrough,
            "expires_at": time.time() + UPLOAD_URL_TTL_S,
        }
        await self.outbox.commit([upload_put(upload_id, data, 0)])
        return await self.get(upload_id), token

    async def get(self, upload_id: str) -> Record:
        rec = await self.store.get(UPLOADS, upload_id)
        if rec is None:
            raise NotFoundError("upload", upload_id)
        return rec

    async def receive(
        self,
        upload_id: str,
        token: str,
        body: ByteReader,
        *,
        content_type: str,
        declared_length: int | None,
        spawn: Spawn,
    ) -> tuple[Record, str, int]:
        """Take the upload's body: (the upload, its new asset's id, the bytes stored)."""
        rec = await self.store.get(UPLOADS, upload_id) if len(upload_id) <= 64 else None
        if rec is None or not hmac.compare_digest(_token_hash(token), rec.data["token_hash"]):
            raise NotFoundError("upload", message="No such upload (or a wrong token)")
        if rec.data["status"] != "waiting":
            raise InvalidState(f"this upload is {rec.data['status']}")
        if rec.data["expires_at"] < time.time():
            raise InvalidState("this upload URL has expired")
        await _check_queue(self.jobs, self.settings)
        # Claim the upload before reading the body: a second PUT is refused, not a race.
        claimed = dict(rec.data, status="uploading", claimed_at=time.time())
        try:
            await self.outbox.commit([upload_put(rec.id, claimed, rec.version)])
        except Conflict:
            raise InvalidState("this upload is already in progress") from None
        version = rec.version + 1
        source_key = f"uploads/{rec.id}/source"
        # while bytes arrive, the upload says it is alive: the reconciler errors only
        # uploads whose receiver stopped (a slow 4 GB upload is not interrupted)
        alive = upload_alive_key(rec.id)
        alive_ttl = min(UPLOAD_ALIVE_TTL_S, self.settings.reconcile_after_s)
        await self.store.kv_set(alive, "1", ttl_s=alive_ttl)
        beat = time.monotonic()

        def progress(_received: int) -> None:
            nonlocal beat
            if time.monotonic() - beat >= alive_ttl / 4:
                beat = time.monotonic()
                spawn(self.store.kv_set(alive, "1", ttl_s=alive_ttl))

        waiting = upload_put(rec.id, dict(claimed, status="waiting"), version)
        try:
            size = await receive_upload(
                body,
                self.blobs,
                source_key,
                int(rec.data["max_bytes"]),
                content_type=content_type,
                declared_length=declared_length,
                on_progress=progress,
            )
        except (UploadTooLarge, EmptyUpload) as exc:
            await self.outbox.commit([waiting])
            raise Refused(
                str(exc),
                error_type="upload_rejected",
                too_large=isinstance(exc, UploadTooLarge),
            ) from None
        except BaseException:
            await self.outbox.commit([waiting])
            raise
        fault_point("upload.received")
        # the asset, the upload pointing at it and the job that processes it: one commit
        asset_id = new_id("as")
        done = dict(claimed, status="asset_created", asset_id=asset_id)
        await self.assets.create(
            asset_id=asset_id,
            source="upload",
            policy=rec.data["playback_policy"],
            passthrough=rec.data.get("passthrough"),
            extra={"upload_id": rec.id, "source_bytes": size},
            extra_events=("upload.asset_created",),
            with_ops=[
                upload_put(rec.id, done, version),
                self.jobs.op(UPLOAD, {"asset_id": asset_id, "source_key": source_key}),
            ],
        )
        self.jobs.notify()
        fault_point("upload.committed")
        return rec, asset_id, size


class Clips:
    def __init__(self, assets: AssetService, jobs: AssetJobs, settings: Settings) -> None:
        self.assets = assets
        self.jobs = jobs
        self.settings = settings

    async def create(
        self,
        *,
        asset_id: str,
        start_s: float,
        end_s: float,
        playback_policy: str | None,
        passthrough: str | None,
    ) -> dict[str, Any]:
        """A clip of a ready asset, `[start_s, end_s)` (cut at the end of the source)."""
        if end_s <= start_s:
            raise InvalidInput("input.end_s must be after input.start_s", param="input.end_s")
        source = await self.assets.get(asset_id)
        if source is None:
            raise InvalidInput("input.asset_id names no asset", param="input.asset_id")
        if source.data["status"] != AssetStatus.READY.value:
            raise InvalidState("the source asset is not ready")
        duration = float(source.data.get("duration_s") or 0)
        if start_s >= duration:
            raise InvalidInput("input.start_s is past the end of the asset", param="input.start_s")
        await _check_queue(self.jobs, self.settings)
        inherited = (source.data.get("playback_ids") or [{}])[0].get("policy", "public")
        clip_id = new_id("as")
        job = {
            "asset_id": clip_id,
            "source_asset_id": asset_id,
            "start_s": start_s,
            "end_s": min(end_s, duration),
        }
        view = await self.assets.create(
            asset_id=clip_id,
            source="clip",
            policy=playback_policy or inherited,
            passthrough=passthrough,
            extra={"input": {"asset_id": asset_id, "start_s": start_s, "end_s": end_s}},
            with_ops=[self.jobs.op(CLIP, job)],
        )
        self.jobs.notify()
        fault_point("clip.committed")
        return view
