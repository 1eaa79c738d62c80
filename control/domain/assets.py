"""Assets: the VOD records every broadcast, upload and clip becomes.

Owns the ``assets`` collection and the asset lifecycle (``preparing`` →
``ready`` | ``errored``), always changed through the outbox commit so each
move and its event (``asset.created|progress|ready|errored|deleted|
live_stream_completed``, ``upload.asset_created``) land together. Media lives
in the BlobStore under the asset's ``prefix`` (``assets/<id>``); what is in
the record is only what the API shows and what playback needs to find it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from control.domain.errors import InvalidState, NotFoundError
from control.domain.live_streams import (
    COLLECTION as LIVE_STREAMS,
)
from control.domain.live_streams import (
    LIVE_STREAM_RECORDS,
    delete_playable,
    new_playback_id,
    playback_id_put,
    rfc3339,
)
from control.domain.records import Collection
from control.ids import new_id
from control.outbox import Change, Outbox
from control.store.base import EventDraft, Op, Put, Record, Store
from vod.recorder import RecordingWarning, WarningCallback

RECENT_ASSETS_KEPT = 10


class AssetStatus(StrEnum):
    PREPARING = "preparing"
    READY = "ready"
    ERRORED = "errored"


_ALLOWED: dict[AssetStatus, set[AssetStatus]] = {
    AssetStatus.PREPARING: {AssetStatus.PREPARING, AssetStatus.READY, AssetStatus.ERRORED},
    AssetStatus.READY: {AssetStatus.READY},
    AssetStatus.ERRORED: {AssetStatus.ERRORED},
}


class InvalidAssetTransition(InvalidState):
    pass


def check_transition(current: AssetStatus, new: AssetStatus) -> None:
    if new not in _ALLOWED[current]:
        raise InvalidAssetTransition(f"asset cannot go from {current.value} to {new.value}")


def asset_prefix(asset_id: str) -> str:
    return f"assets/{asset_id}"


MAX_WARNINGS = 20
UPLOAD_RECORDS = Collection("uploads", tags=lambda d: {"status": str(d["status"])})
"""Upload records: ``waiting`` → ``uploading`` (the body is arriving) →
``asset_created``; ``errored`` when the reconciler found one interrupted."""
UPLOADS = UPLOAD_RECORDS.name


UPLOAD_ALIVE_TTL_S = 120.0
"""An upload's body is arriving while its alive key (refreshed every quarter of
this, or of ONAIR_RECONCILE_AFTER_S when shorter) exists; the reconciler leaves
such an upload alone however long it takes."""


def upload_alive_key(upload_id: str) -> str:
    return f"upload_alive:{upload_id}"


def upload_put(upload_id: str, data: dict[str, Any], expect_version: int) -> Put:
    """The compare-and-set put of an upload record."""
    return UPLOAD_RECORDS.put(upload_id, data, expect_version=expect_version)


def _asset_tags(data: Mapping[str, Any]) -> dict[str, str]:
    """What assets are listed by: their live stream, and their status and MP4
    status (the reconciler lists what is still preparing)."""
    tags = {"status": str(data["status"]), "mp4_status": str(data.get("mp4_status", ""))}
    if data.get("live_stream_id"):
        tags["live_stream_id"] = str(data["live_stream_id"])
    return tags


ASSET_RECORDS = Collection("assets", tags=_asset_tags)
COLLECTION = ASSET_RECORDS.name


class AssetService:
    def __init__(self, store: Store, outbox: Outbox) -> None:
        self.store = store
        self.outbox = outbox

    # ------------------------------------------------------------------ views
    @staticmethod
    def to_json(record: Record) -> dict[str, Any]:
        d = record.data
        out: dict[str, Any] = {
            "id": record.id,
            "object": "asset",
            "status": d["status"],
            "source": d["source"],
            "duration_s": d.get("duration_s"),
            "live_stream_id": d.get("live_stream_id"),
            "playback_ids": list(d.get("playback_ids", [])),
            "gaps": list(d.get("gaps", [])),
            "warnings": list(d.get("warnings", [])),
            "progress": d.get("progress", 0 if d["status"] == "preparing" else 100),
            "mp4_status": d.get("mp4_status", "preparing"),
            "passthrough": d.get("passthrough"),
            "created_at": rfc3339(record.created_at),
            "updated_at": rfc3339(d.get("updated_at")),
        }
        if d.get("error"):
            out["error"] = d["error"]
        if d.get("input"):
            out["input"] = d["input"]
        if d.get("room_id"):
            out["room_id"] = d["room_id"]
        return out

    # ---------------------------------------------------------------- queries
    async def get(self, asset_id: str) -> Record | None:
        return await self.store.get(COLLECTION, asset_id)

    # --------------------------------------------------------------- commands
    def _new_record_ops(
        self,
        asset_id: str,
        *,
        source: str,
        policy: str,
        live_stream_id: str | None = None,
        passthrough: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[list[Op], dict[str, Any], float]:
        now = time.time()
        playback = {"id": new_playback_id(), "policy": policy}
        data: dict[str, Any] = {
            "status": AssetStatus.PREPARING.value,
            "source": source,
            "duration_s": None,
            "live_stream_id": live_stream_id,
            "playback_ids": [playback],
            "gaps": [],
            "progress": 0,
            "mp4_status": "preparing",
            "passthrough": passthrough,
            "prefix": asset_prefix(asset_id),
            "updated_at": now,
            **(extra or {}),
        }
        ops: list[Op] = [
            ASSET_RECORDS.put(asset_id, data),
            playback_id_put(playback["id"], "asset", asset_id, policy),
        ]
        return ops, data, now

    async def create(
        self,
        *,
        source: str,
        policy: str = "public",
        passthrough: str | None = None,
        extra: dict[str, Any] | None = None,
        extra_events: tuple[str, ...] = (),
        asset_id: str | None = None,
        with_ops: Sequence[Op] = (),
    ) -> dict[str, Any]:
        """A new `preparing` asset (upload, clip, room) and its `asset.created`
        event, committed with `with_ops` (the job that will process it, the
        record that points at it) in one transaction."""
        asset_id = asset_id or new_id("as")
        ops, data, now = self._new_record_ops(
            asset_id, source=source, policy=policy, passthrough=passthrough, extra=extra
        )
        view = self.to_json(Record(COLLECTION, asset_id, 1, now, data))
        events = [EventDraft("asset.created", asset_id, view)]
        events += [EventDraft(t, asset_id, view) for t in extra_events]
        await self.outbox.commit([*ops, *with_ops], events)
        return view

    async def create_for_live_stream(self, live_stream_id: str) -> str:
        """Create the asset a broadcast records into and make it the stream's
        ``active_asset_id`` — both in one commit with ``asset.created``."""

        async def attempt() -> Change[str]:
            ls = await self.store.get(LIVE_STREAMS, live_stream_id)
            if ls is None:
                raise NotFoundError("live stream", live_stream_id)
            if ls.data.get("active_asset_id"):
                return Change(str(ls.data["active_asset_id"]))
            policy = (
                ls.data["playback_ids"][0]["policy"] if ls.data.get("playback_ids") else "public"
            )
            asset_id = new_id("as")
            ops, data, now = self._new_record_ops(
                asset_id,
                source="live",
                policy=policy,
                live_stream_id=live_stream_id,
                passthrough=ls.data.get("passthrough"),
            )
            ls_data = dict(ls.data)
            ls_data["active_asset_id"] = asset_id
            ls_data["updated_at"] = now
            ops.append(LIVE_STREAM_RECORDS.put(ls.id, ls_data, expect_version=ls.version))
            view = self.to_json(Record(COLLECTION, asset_id, 1, now, data))
            return Change(asset_id, ops, [EventDraft("asset.created", asset_id, view)])

        return await self.outbox.compare_and_set(attempt, what=f"live stream {live_stream_id}")

    async def change(
        self,
        asset_id: str,
        mutate: Callable[[dict[str, Any]], list[str]],
        *,
        then: Sequence[Op] = (),
        also: Callable[[], Awaitable[Sequence[Op]]] | None = None,
    ) -> dict[str, Any] | None:
        """CAS-apply `mutate` (returns the event types to emit). None if gone.

        `then`: ops committed with the change when there is one (the job a new
        state calls for). `also`: read-modify-write ops on other records,
        produced again on every attempt and committed with it whatever the change
        (a whole flow in one transaction; a conflict on any retries them all)."""

        async def attempt() -> Change[dict[str, Any] | None]:
            rec = await self.store.get(COLLECTION, asset_id)
            if rec is None:
                return Change(None)
            data = dict(rec.data)
            before = AssetStatus(data["status"])
            event_types = mutate(data)
            check_transition(before, AssetStatus(data["status"]))
            others = list(await also()) if also is not None else []
            if data == rec.data:
                return Change(self.to_json(rec), others)
            data["updated_at"] = time.time()
            view = self.to_json(Record(COLLECTION, rec.id, rec.version + 1, rec.created_at, data))
            return Change(
                view,
                [
                    ASSET_RECORDS.put(rec.id, data, expect_version=rec.version),
                    *others,
                    *then,
                ],
                [EventDraft(t, rec.id, view) for t in event_types],
            )

        return await self.outbox.compare_and_set(attempt, what=f"asset {asset_id}")

    async def progress(self, asset_id: str, percent: int) -> None:
        def mutate(data: dict[str, Any]) -> list[str]:
            if data["status"] != AssetStatus.PREPARING.value or data.get("progress") == percent:
                return []
            data["progress"] = max(0, min(100, int(percent)))
            return ["asset.progress"]

        await self.change(asset_id, mutate)

    async def mark_ready(
        self,
        asset_id: str,
        *,
        duration_s: float,
        gaps: list[dict[str, Any]],
        events: tuple[str, ...] = (),
        then: Sequence[Op] = (),
        also: Callable[[], Awaitable[Sequence[Op]]] | None = None,
    ) -> dict[str, Any] | None:
        def mutate(data: dict[str, Any]) -> list[str]:
            if data["status"] != AssetStatus.PREPARING.value:
                return []
            data.update(
                status=AssetStatus.READY.value,
                duration_s=round(duration_s, 3),
                gaps=gaps,
                progress=100,
            )
            return [*events, "asset.ready"]

        return await self.change(asset_id, mutate, then=then, also=also)

    async def mark_errored(
        self,
        asset_id: str,
        reason: str,
        *,
        events: tuple[str, ...] = (),
        error_type: str = "invalid_input",
        also: Callable[[], Awaitable[Sequence[Op]]] | None = None,
    ) -> dict[str, Any] | None:
        def mutate(data: dict[str, Any]) -> list[str]:
            if data["status"] != AssetStatus.PREPARING.value:
                return []
            data.update(
                status=AssetStatus.ERRORED.value, error={"type": error_type, "message": reason}
            )
            return [*events, "asset.errored"]

        return await self.change(asset_id, mutate, also=also)

    async def warn(self, asset_id: str, warning: dict[str, Any]) -> dict[str, Any] | None:
        """Record a warning on the asset (the last `MAX_WARNINGS` are kept) and emit
        ``asset.warning`` naming it, e.g. recording segments lost to storage."""
        stamped = {**warning, "since": rfc3339(time.time())}

        def mutate(data: dict[str, Any]) -> list[str]:
            data["warnings"] = [*data.get("warnings", []), stamped][-MAX_WARNINGS:]
            return ["asset.warning"]

        return await self.change(asset_id, mutate)

    async def set_fields(self, asset_id: str, **fields: Any) -> None:
        def mutate(data: dict[str, Any]) -> list[str]:
            data.update(fields)
            return []

        await self.change(asset_id, mutate)

    async def delete(self, asset_id: str) -> dict[str, Any]:
        return await delete_playable(
            self.outbox,
            ASSET_RECORDS,
            asset_id,
            what="asset",
            event_type="asset.deleted",
            view=self.to_json,
        )


def recording_warnings(assets: AssetService, asset_id: str) -> WarningCallback:
    """The recorder's losses, as ``asset.warning`` events on its asset."""

    async def warn(w: RecordingWarning) -> None:
        await assets.warn(
            asset_id, {"type": w.kind, "message": w.message, "segments": list(w.msns)}
        )

    return warn
