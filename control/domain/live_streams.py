"""Live streams: the lifecycle state machine and the domain service.

Status is an Enum; `transition(status, action)` validates a move and names the
one event it emits. `LiveStreamService` changes records only through the
outbox commit (state change + event in one transaction) with compare-and-set
retries; the live lifecycle drives it as publishers come and go.
`LiveStreamAdmin` is what the API does to a stream: the same changes, then the
kick of a live publisher they imply (`LiveControl`: the stream key reset, the
stream disabled, completed or deleted).

Collections: ``live_streams`` (unique index ``stream_key``) and
``playback_ids`` (record id = playback id; data ``{object_type, object_id,
policy}``) so playback can resolve any playback id with one `get`.
"""

from __future__ import annotations

import logging
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from control.domain.errors import InvalidState, NotFoundError
from control.domain.records import Collection
from control.ids import new_id
from control.outbox import Change, Outbox
from control.settings import Settings
from control.store.base import EventDraft, Op, Put, Record, Store

log = logging.getLogger(__name__)

STREAM_KEY_INDEX = "stream_key"
LIVE_STREAM_RECORDS = Collection(
    "live_streams", unique=lambda d: {STREAM_KEY_INDEX: str(d["stream_key"])}
)
"""A stream key opens one stream: the unique index finds it and keeps it unique."""
PLAYBACK_ID_RECORDS = Collection("playback_ids", tags=lambda d: {"object_id": str(d["object_id"])})
"""Record id = playback id; data ``{object_type, object_id, policy}``: playback
resolves any playback id (a stream's, an asset's, a room's) with one `get`."""
COLLECTION = LIVE_STREAM_RECORDS.name
PLAYBACK_IDS = PLAYBACK_ID_RECORDS.name
STREAM_KEY_PREFIX = "sk_"


def playback_id_put(playback_id: str, object_type: str, object_id: str, policy: str) -> Put:
    """A new playback id for a live stream, an asset or a room."""
    return PLAYBACK_ID_RECORDS.put(
        playback_id, {"object_type": object_type, "object_id": object_id, "policy": policy}
    )


def playback_id_deletes(data: dict[str, Any]) -> list[Op]:
    """The deletes of the playback ids a record's data lists."""
    return [PLAYBACK_ID_RECORDS.delete(p["id"]) for p in data.get("playback_ids", [])]


async def delete_playable(
    outbox: Outbox,
    records: Collection,
    record_id: str,
    *,
    what: str,
    event_type: str,
    view: Callable[[Record], dict[str, Any]],
) -> dict[str, Any]:
    """Delete a record that owns playback ids (a live stream, an asset): with
    them and its deletion event, in one commit; its last view is returned."""

    async def attempt() -> Change[dict[str, Any]]:
        rec = await outbox.store.get(records.name, record_id)
        if rec is None:
            raise NotFoundError(what, record_id)
        last = view(rec)
        ops: list[Op] = [records.delete(rec.id, expect_version=rec.version)]
        ops += playback_id_deletes(rec.data)
        return Change(last, ops, [EventDraft(event_type, rec.id, last)])

    return await outbox.compare_and_set(attempt, what=f"{what} {record_id}")


class LiveStreamStatus(StrEnum):
    IDLE = "idle"
    ACTIVE = "active"
    DISABLED = "disabled"


class Action(StrEnum):
    CONNECT = "connect"
    """A publisher connected and was authorized (status unchanged)."""
    ACTIVATE = "activate"
    """Media is flowing: the broadcast is live."""
    DISCONNECT = "disconnect"
    """The publisher went away; the reconnect window runs (still active)."""
    IDLE = "idle"
    """The reconnect window elapsed (or the broadcast was completed)."""
    COMPLETE = "complete"
    DISABLE = "disable"
    ENABLE = "enable"


class InvalidTransition(InvalidState):
    def __init__(self, status: LiveStreamStatus, action: Action) -> None:
        super().__init__(f"cannot {action.value} a live stream that is {status.value}")
        self.status = status
        self.action = action


@dataclass(frozen=True, slots=True)
class Transition:
    status: LiveStreamStatus
    event_type: str | None
    """The one event this move emits (None: a no-op, e.g. disabling twice)."""


_S = LiveStreamStatus
_A = Action
_TABLE: dict[tuple[LiveStreamStatus, Action], Transition] = {
    (_S.IDLE, _A.CONNECT): Transition(_S.IDLE, "live_stream.connected"),
    (_S.ACTIVE, _A.CONNECT): Transition(_S.ACTIVE, "live_stream.connected"),
    (_S.IDLE, _A.ACTIVATE): Transition(_S.ACTIVE, "live_stream.active"),
    (_S.ACTIVE, _A.ACTIVATE): Transition(_S.ACTIVE, None),
    (_S.ACTIVE, _A.DISCONNECT): Transition(_S.ACTIVE, "live_stream.disconnected"),
    (_S.IDLE, _A.DISCONNECT): Transition(_S.IDLE, "live_stream.disconnected"),
    (_S.DISABLED, _A.DISCONNECT): Transition(_S.DISABLED, "live_stream.disconnected"),
    (_S.ACTIVE, _A.IDLE): Transition(_S.IDLE, "live_stream.idle"),
    (_S.IDLE, _A.IDLE): Transition(_S.IDLE, None),
    (_S.DISABLED, _A.IDLE): Transition(_S.DISABLED, None),
    (_S.ACTIVE, _A.COMPLETE): Transition(_S.IDLE, "live_stream.idle"),
    (_S.IDLE, _A.COMPLETE): Transition(_S.IDLE, None),
    (_S.IDLE, _A.DISABLE): Transition(_S.DISABLED, "live_stream.disabled"),
    (_S.ACTIVE, _A.DISABLE): Transition(_S.DISABLED, "live_stream.disabled"),
    (_S.DISABLED, _A.DISABLE): Transition(_S.DISABLED, None),
    (_S.DISABLED, _A.ENABLE): Transition(_S.IDLE, "live_stream.enabled"),
    (_S.IDLE, _A.ENABLE): Transition(_S.IDLE, None),
    (_S.ACTIVE, _A.ENABLE): Transition(_S.ACTIVE, None),
}


def transition(status: LiveStreamStatus, action: Action) -> Transition:
    """Validate a lifecycle move; raises InvalidTransition."""
    try:
        return _TABLE[(status, action)]
    except KeyError:
        raise InvalidTransition(status, action) from None


class LiveControl(Protocol):
    """Kicks a live publisher (the node's live lifecycle)."""

    def kick(self, live_stream_id: str, reason: str, /) -> object: ...


class NoLiveControl:
    def kick(self, live_stream_id: str, reason: str, /) -> object:
        return None


_ALPHANUM = string.ascii_letters + string.digits


def new_stream_key() -> str:
    """`sk_` + 32 url-safe chars (192 random bits)."""
    return STREAM_KEY_PREFIX + secrets.token_urlsafe(24)


def new_playback_id() -> str:
    return "".join(secrets.choice(_ALPHANUM) for _ in range(24))


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


class LiveStreamService:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        outbox: Outbox,
    ) -> None:
        self.store = store
        self.settings = settings
        self.outbox = outbox
        self._ingest: dict[str, str] = {
            "rtmp_url": settings.rtmp_url,
            "whip_url": settings.whip_url,
        }
        if settings.rtmps_url:
            self._ingest["rtmps_url"] = settings.rtmps_url
        if settings.srt_url:
            self._ingest["srt_url"] = settings.srt_url

    # ------------------------------------------------------------- views
    def to_json(self, record: Record, *, with_key: bool = False) -> dict[str, Any]:
        """The API view. `with_key` adds the publishing secret: only for callers
        holding a write or admin key, never in an event (events reach read keys,
        SSE and every webhook receiver)."""
        d = record.data
        view = {
            "id": record.id,
            "object": "live_stream",
            "name": d.get("name"),
            "status": d["status"],
            "latency_mode": d["latency_mode"],
            "reconnect_window_s": d["reconnect_window_s"],
            "record": d["record"],
            "passthrough": d.get("passthrough"),
            "playback_ids": list(d.get("playback_ids", [])),
            "ingest": dict(self._ingest),
            "active_asset_id": d.get("active_asset_id"),
            "recent_asset_ids": list(d.get("recent_asset_ids", [])),
            "warnings": list(d.get("warnings", [])),
            "created_at": rfc3339(d.get("created_at", record.created_at)),
            "updated_at": rfc3339(d.get("updated_at")),
        }
        if with_key:
            view["stream_key"] = d["stream_key"]
        return view

    @staticmethod
    def with_key(view: dict[str, Any], record_data: dict[str, Any]) -> dict[str, Any]:
        return {**view, "stream_key": record_data["stream_key"]}

    def _view(
        self, record_id: str, created_at: float, data: dict[str, Any], version: int
    ) -> dict[str, Any]:
        return self.to_json(Record(COLLECTION, record_id, version, created_at, data))

    # ------------------------------------------------------------- queries
    async def get(self, live_stream_id: str) -> Record | None:
        return await self.store.get(COLLECTION, live_stream_id)

    async def by_stream_key(self, stream_key: str) -> Record | None:
        return await self.store.get_by(COLLECTION, STREAM_KEY_INDEX, stream_key)

    # ------------------------------------------------------------- commands
    async def create(
        self,
        *,
        name: str | None = None,
        latency_mode: str = "low",
        reconnect_window_s: int = 60,
        playback_policy: str = "public",
        record: bool = True,
        passthrough: str | None = None,
    ) -> dict[str, Any]:
        live_id = new_id("ls")
        playback = {"id": new_playback_id(), "policy": playback_policy}
        stream_key = new_stream_key()
        now = time.time()
        data: dict[str, Any] = {
            "name": name,
            "status": LiveStreamStatus.IDLE.value,
            "stream_key": stream_key,
            "latency_mode": latency_mode,
            "reconnect_window_s": reconnect_window_s,
            "record": record,
            "passthrough": passthrough,
            "playback_ids": [playback],
            "active_asset_id": None,
            "recent_asset_ids": [],
            "created_at": now,
            "updated_at": now,
        }
        view = self._view(live_id, now, data, 1)
        ops: list[Op] = [
            LIVE_STREAM_RECORDS.put(live_id, data),
            playback_id_put(playback["id"], "live_stream", live_id, playback_policy),
        ]
        await self.outbox.commit(ops, [EventDraft("live_stream.created", live_id, view)])
        return self.with_key(view, data)

    async def mutate(
        self,
        live_stream_id: str,
        change: Callable[[dict[str, Any]], str | None],
    ) -> dict[str, Any]:
        """Apply `change` (returns the event type or None) to the stream as it is,
        compare-and-set through the outbox."""

        async def attempt() -> Change[dict[str, Any]]:
            rec = await self.store.get(COLLECTION, live_stream_id)
            if rec is None:
                raise NotFoundError("live stream", live_stream_id)
            data = dict(rec.data)
            event_type = change(data)
            if event_type is None and data == rec.data:
                return Change(self.with_key(self.to_json(rec), data))
            data["updated_at"] = time.time()
            view = self._view(rec.id, rec.created_at, data, rec.version + 1)
            events = [EventDraft(event_type, rec.id, view)] if event_type else []
            return Change(self.with_key(view, data), [self._put(rec, data)], events)

        return await self.outbox.compare_and_set(attempt, what=f"live stream {live_stream_id}")

    async def staged(
        self, live_stream_id: str, change: Callable[[dict[str, Any]], object]
    ) -> list[Op]:
        """The compare-and-set put of `change` applied to the stream as it is now,
        for a commit that spans other records (no event); [] when gone or unchanged."""
        rec = await self.store.get(COLLECTION, live_stream_id)
        if rec is None:
            return []
        data = dict(rec.data)
        change(data)
        if data == rec.data:
            return []
        data["updated_at"] = time.time()
        return [self._put(rec, data)]

    @staticmethod
    def _put(rec: Record, data: dict[str, Any]) -> Put:
        """The compare-and-set put of a stream's new data."""
        return LIVE_STREAM_RECORDS.put(rec.id, data, expect_version=rec.version)

    async def apply(self, live_stream_id: str, action: Action) -> dict[str, Any]:
        """Run one lifecycle action (the ingest side calls this for connect/activate/...)."""

        def change(data: dict[str, Any]) -> str | None:
            move = transition(LiveStreamStatus(data["status"]), action)
            data["status"] = move.status.value
            if move.status is not LiveStreamStatus.ACTIVE and data.get("warnings"):
                # warnings are about what a live publisher sends: they end with
                # the broadcast, in the same write (a reader never sees an idle
                # stream still warned)
                data["warnings"] = []
            return move.event_type

        return await self.mutate(live_stream_id, change)

    async def update(self, live_stream_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        def change(data: dict[str, Any]) -> str | None:
            before = dict(data)
            data.update(fields)
            return "live_stream.updated" if data != before else None

        return await self.mutate(live_stream_id, change)

    async def set_warnings(
        self, live_stream_id: str, current: list[tuple[str, str]]
    ) -> dict[str, Any]:
        """The stream's `warnings` become `current` ((type, message) pairs); one
        that was not there yet is stamped `since` now and makes the change a
        ``live_stream.warning`` event. Nothing is written when nothing changed."""

        def change(data: dict[str, Any]) -> str | None:
            old = {w["type"]: w for w in data.get("warnings", [])}
            now = rfc3339(time.time())
            warnings = [
                {"type": t, "message": m, "since": old[t]["since"] if t in old else now}
                for t, m in current
            ]
            if warnings or "warnings" in data:  # (no write for a stream never warned)
                data["warnings"] = warnings
            return "live_stream.warning" if any(t not in old for t, _ in current) else None

        return await self.mutate(live_stream_id, change)

    async def reset_stream_key(self, live_stream_id: str) -> dict[str, Any]:
        def change(data: dict[str, Any]) -> str | None:
            data["stream_key"] = new_stream_key()
            return "live_stream.stream_key_reset"

        return await self.mutate(live_stream_id, change)

    async def disable(self, live_stream_id: str) -> dict[str, Any]:
        return await self.apply(live_stream_id, Action.DISABLE)

    async def enable(self, live_stream_id: str) -> dict[str, Any]:
        return await self.apply(live_stream_id, Action.ENABLE)

    async def complete(self, live_stream_id: str) -> dict[str, Any]:
        return await self.apply(live_stream_id, Action.COMPLETE)

    async def delete(self, live_stream_id: str) -> dict[str, Any]:
        return await delete_playable(
            self.outbox,
            LIVE_STREAM_RECORDS,
            live_stream_id,
            what="live stream",
            event_type="live_stream.deleted",
            view=self.to_json,
        )


class LiveStreamAdmin:
    """The API's changes to a live stream that end or take over a live
    publication: committed through `LiveStreamService`, then the publisher is
    kicked (`LiveControl`) with the reason."""

    def __init__(self, live_streams: LiveStreamService, live_control: LiveControl) -> None:
        self.live_streams = live_streams
        self.live_control = live_control

    def _kick(self, live_stream_id: str, reason: str) -> None:
        try:
            self.live_control.kick(live_stream_id, reason)
        except Exception:
            log.exception("kick failed", extra={"live_stream_id": live_stream_id})

    async def reset_stream_key(self, live_stream_id: str) -> dict[str, Any]:
        view = await self.live_streams.reset_stream_key(live_stream_id)
        self._kick(live_stream_id, "stream_key_reset")
        return view

    async def disable(self, live_stream_id: str) -> dict[str, Any]:
        view = await self.live_streams.disable(live_stream_id)
        self._kick(live_stream_id, "disabled")
        return view

    async def enable(self, live_stream_id: str) -> dict[str, Any]:
        return await self.live_streams.enable(live_stream_id)

    async def complete(self, live_stream_id: str) -> dict[str, Any]:
        view = await self.live_streams.complete(live_stream_id)
        self._kick(live_stream_id, "completed")
        return view

    async def delete(self, live_stream_id: str) -> dict[str, Any]:
        view = await self.live_streams.delete(live_stream_id)
        self._kick(live_stream_id, "deleted")
        return view
