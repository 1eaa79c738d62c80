"""`/v1/rooms`: rooms, their participants and join tokens; and the control side
of `realtime.rooms` (store-backed `RoomDirectory` + `RoomEvents`, the token
secret, and `rooms_ctx` which runs the `RoomService` inside the app).

Records: collection ``rooms``, data ``{name, max_participants, record,
empty_timeout_s, status ("idle"|"active"|"finished"), started_at, finished_at,
broadcast_stream_id}``. Status changes are committed together with their
events (``room.started``, ``room.finished``); ``participant.joined|left`` are
committed as events with resource id = the room id, so one room's events carry
one increasing ``sequence``.

Wiring (control/app.py)::

    from control.api import rooms
    from realtime.rooms.rtc import RtcSettings
    app = create_app(settings,
                     subsystems=[..., rooms.rooms_ctx(hub=hub, rtc=RtcSettings(webrtc_config))],
                     api_modules=[*default_modules(), rooms])

`add_routes` mounts the API, the signaling WebSocket and the ``/rooms/{id}``
page, and finishes this node's rooms at the start of a graceful shutdown (so
open signaling sockets do not hold it up); `rooms_ctx` (after the store, and
after media for recorded rooms) runs the `RoomService` and a `RoomKeeper`
(the node's ``room:<id>`` leases; rooms left ``active`` by a dead node are
finished with reason ``node_lost``), and answers 503 until it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from control import appkeys
from control.api import (
    DATETIME,
    IDEMPOTENCY_PARAM,
    NULLABLE_DATETIME,
    NULLABLE_STR,
    PAGE_PARAMS,
    READ_ERRORS,
    WRITE_ERRORS,
    body,
    check_starting_after,
    errors,
    id_param,
    json_ok,
    list_body,
    list_of,
    page_params,
    path_id,
    ref,
    resp,
)
from control.auth import rfc3339
from control.ids import new_id
from control.live_streams import PLAYBACK_IDS, new_playback_id
from control.middleware import requires
from control.store.base import Conflict, Delete, EventDraft, Op, Put, Record, Store
from control.validation import ApiError, F, Obj, not_found, read_json
from realtime.rooms.room import (
    ParticipantJoinedEvent,
    ParticipantLeftEvent,
    RoomConfig,
    RoomEvent,
    RoomFinished,
    RoomStarted,
)
from realtime.rooms.tokens import IDENTITY_RE, MAX_TTL_S, JoinTokens

log = logging.getLogger(__name__)

ROOMS_COLLECTION = "rooms"
TOKEN_SECRET_KV = "rooms:join_token_secret"


@dataclass
class RoomsRuntime:
    tokens: JoinTokens
    service: Any = None
    """realtime.rooms.service.RoomService, when rooms run in this process."""


ROOMS: web.AppKey[RoomsRuntime] = web.AppKey("onair.rooms")
"""(Lead: move to control/appkeys.py if you prefer; nothing else uses it.)"""


# ------------------------------------------------------------------ control side of the SFU


async def load_token_secret(store: Store) -> str:
    """The service's join-token secret: created once, shared by every node."""
    existing = await store.kv_get(TOKEN_SECRET_KV)
    if existing:
        return existing
    await store.kv_set_if_absent(TOKEN_SECRET_KV, secrets.token_urlsafe(48))
    value = await store.kv_get(TOKEN_SECRET_KV)
    assert value is not None
    return value


Commit = Callable[..., Any]


class StoreRooms:
    """`RoomDirectory` and `RoomEvents` over the Store (commits via the outbox)."""

    def __init__(self, store: Store, commit: Commit | None = None) -> None:
        self.store = store
        self._commit = commit or store.commit

    async def room_config(self, room_id: str) -> RoomConfig | None:
        rec = await self.store.get(ROOMS_COLLECTION, room_id)
        if rec is None or rec.data.get("status") == "finished":
            return None
        d = rec.data
        return RoomConfig(
            room_id=rec.id,
            max_participants=int(d.get("max_participants", 16)),
            empty_timeout_s=float(d.get("empty_timeout_s", 300)),
            record=bool(d.get("record", False)),
            broadcast_stream_id=d.get("broadcast_stream_id") or None,
        )

    async def deny(self, room_id: str, identity: str, before: float) -> None:
        # kept while a token issued before the removal can still be valid
        await self.store.kv_set(_denial_key(room_id, identity), repr(before), ttl_s=MAX_TTL_S)

    async def denied_before(self, room_id: str, identity: str) -> float | None:
        value = await self.store.kv_get(_denial_key(room_id, identity))
        return float(value) if value else None

    async def room_event(self, event: RoomEvent) -> None:
        data: dict[str, Any] = {"room_id": event.room_id, "occurred_at": rfc3339(event.at)}
        if isinstance(event, ParticipantJoinedEvent | ParticipantLeftEvent):
            data["identity"] = event.identity
            if isinstance(event, ParticipantLeftEvent):
                data["reason"] = event.reason
            await self._commit([], [EventDraft(event.type, event.room_id, data)])
            return
        if isinstance(event, RoomFinished):
            data["reason"] = event.reason
        status = "active" if isinstance(event, RoomStarted) else "finished"
        stamp = "started_at" if isinstance(event, RoomStarted) else "finished_at"
        for _ in range(5):
            rec = await self.store.get(ROOMS_COLLECTION, event.room_id)
            if rec is None:  # deleted meanwhile: the event still happened
                await self._commit([], [EventDraft(event.type, event.room_id, data)])
                return
            new = dict(rec.data, status=status, **{stamp: event.at})
            if status == "active":
                new["finished_at"] = None
            try:
                await self._commit(
                    [
                        Put(
                            ROOMS_COLLECTION,
                            rec.id,
                            new,
                            expect_version=rec.version,
                            tags={"status": status},
                        )
                    ],
                    [EventDraft(event.type, event.room_id, {**data, "room": render(rec, new)})],
                )
                return
            except Conflict:
                continue


def _denial_key(room_id: str, identity: str) -> str:
    return f"room_denied:{room_id}:{identity}"


ROOM_LEASE_TTL_S = 8.0
ROOM_HEARTBEAT_S = 2.0


def room_lease(room_id: str) -> str:
    return f"room:{room_id}"


class RoomKeeper:
    """Durability of rooms across nodes: the node hosting a room renews the named
    lease ``room:<id>``; rooms still ``active`` in the store that no node hosts
    (their node died: SIGKILL, crash) are finished here — the recording, if any,
    finalised into a ready asset (`RoomBroadcasts.adopt`) and ``room.finished``
    with reason ``node_lost``."""

    def __init__(
        self, store: Store, service: Any, rooms: StoreRooms, node_id: str, broadcasts: Any = None
    ) -> None:
        self.store = store
        self.service = service
        self.rooms = rooms
        self.node_id = node_id
        self.broadcasts = broadcasts
        """control.room_broadcasts.RoomBroadcasts, when recording runs in this process."""

    async def renew(self) -> None:
        for room_id in list(self.service.rooms):
            await self.store.acquire_lease(room_lease(room_id), self.node_id, ROOM_LEASE_TTL_S)

    async def sweep(self) -> None:
        after: str | None = None
        while True:
            page = await self.store.list(
                ROOMS_COLLECTION, limit=100, starting_after=after, where=("status", "active")
            )
            for rec in page.data:
                await self._adopt(rec)
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    async def _adopt(self, rec: Record) -> None:
        if rec.id in self.service.rooms or rec.data.get("status") != "active":
            return
        if not await self.store.acquire_lease(room_lease(rec.id), self.node_id, ROOM_LEASE_TTL_S):
            return  # hosted by a living node (or its lease has not lapsed yet)
        # A room that just closed here has its room.finished still queued: let it land.
        await self.service.drain_events()
        fresh = await self.store.get(ROOMS_COLLECTION, rec.id)
        if fresh is None or fresh.data.get("status") != "active" or rec.id in self.service.rooms:
            return
        rec = fresh
        log.info("finishing room %s after its node stopped", rec.id)
        asset_id = rec.data.get("active_asset_id")
        if asset_id and self.broadcasts is not None:
            try:
                await self.broadcasts.adopt(rec.id, str(asset_id))
            except Exception:
                log.exception("room %s: adopting recording %s failed", rec.id, asset_id)
        await self.rooms.room_event(RoomFinished(rec.id, time.time(), "node_lost"))
        await self.store.release_lease(room_lease(rec.id), self.node_id)

    async def run(self) -> None:
        while True:
            try:
                await self.renew()
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rooms keeper failed")
            await asyncio.sleep(ROOM_HEARTBEAT_S)


def rooms_ctx(
    *, hub: Any = None, rtc: Any = None, video_codec: str = "video/VP8", secret: str | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context (after the store) that runs the RoomService with the app;
    the routes come from this module's `add_routes` (via `api_modules`)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        from control.room_broadcasts import ROOM_BROADCASTS
        from realtime.rooms.service import RoomService

        store = app[appkeys.STORE]
        outbox = app[appkeys.OUTBOX]
        tokens = JoinTokens(secret or await load_token_secret(store))
        adapter = StoreRooms(store, outbox.commit)
        service = RoomService(tokens, adapter, adapter, hub=hub, rtc=rtc, video_codec=video_codec)
        await service.start()
        runtime = app.get(ROOMS)
        if runtime is None:
            app[ROOMS] = RoomsRuntime(tokens, service)
        else:
            runtime.tokens = tokens
            runtime.service = service
        keeper = RoomKeeper(
            store, service, adapter, app[appkeys.SETTINGS].node_id, app.get(ROOM_BROADCASTS)
        )
        keeping = asyncio.get_running_loop().create_task(keeper.run(), name="rooms-keeper")
        try:
            yield
        finally:
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping
            await service.close()

    return ctx


def install_room_routes(app: web.Application) -> None:
    """Mount ``/v1/rooms/{id}/signal`` and ``/rooms/{id}`` (call before startup; the
    service is looked up per request, so `rooms_ctx` may create it later)."""
    from realtime.rooms.routes import STATIC
    from realtime.rooms.ws import signal_handler

    async def signal(request: web.Request) -> web.StreamResponse:
        runtime = request.app.get(ROOMS)
        if runtime is None or runtime.service is None:
            raise ApiError(503, "unavailable", "Rooms are not running")
        handler = signal_handler(runtime.service)
        return await handler(request)

    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "room.html", headers={"Cache-Control": "no-store"})

    async def script(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "room.js", headers={"Cache-Control": "no-cache"})

    app.router.add_get("/v1/rooms/{id}/signal", signal)
    app.router.add_get("/rooms/static/room.js", script)
    app.router.add_get("/rooms/{id}", page)
    app.on_shutdown.append(_close_rooms_on_shutdown)


async def _close_rooms_on_shutdown(app: web.Application) -> None:
    """Graceful shutdown waits for open requests, and every participant holds a
    signaling WebSocket: finish this node's rooms first (room.finished, the
    sockets close, recorded rooms end their broadcast) so it does not wait out
    its whole timeout."""
    runtime = app.get(ROOMS)
    if runtime is None or runtime.service is None:
        return
    service = runtime.service
    for room_id in list(service.rooms):
        try:
            await service.close_room(room_id, reason="shutdown")
        except Exception:
            log.exception("closing room %s on shutdown failed", room_id)
    await service.drain_events()


# ------------------------------------------------------------------ API


CREATE = Obj(
    {
        "name": F(str, nullable=True, max_length=200),
        "max_participants": F(int, default=16, minimum=1, maximum=100),
        "record": F(bool, default=False),
        "empty_timeout_s": F(int, default=300, minimum=1, maximum=86400),
        "passthrough": F(str, nullable=True, max_length=255),
        "playback_policy": F(
            str,
            enum=("public", "signed"),
            default="public",
            description="For the recording's live broadcast and its asset",
        ),
    }
)
TOKEN = Obj(
    {
        "identity": F(
            str, required=True, min_length=1, max_length=128, pattern=IDENTITY_RE.pattern
        ),
        "can_publish": F(bool, default=True),
        "can_subscribe": F(bool, default=True),
        "ttl_s": F(int, default=3600, minimum=1, maximum=MAX_TTL_S),
    }
)


def render(
    rec: Record, data: dict[str, Any] | None = None, participants: int | None = None
) -> dict[str, Any]:
    d = data if data is not None else rec.data
    out: dict[str, Any] = {
        "id": rec.id,
        "object": "room",
        "name": d.get("name"),
        "status": d.get("status", "idle"),
        "max_participants": d.get("max_participants", 16),
        "record": bool(d.get("record", False)),
        "playback_policy": d.get("playback_policy", "public"),
        "empty_timeout_s": d.get("empty_timeout_s", 300),
        "passthrough": d.get("passthrough"),
        "broadcast_stream_id": d.get("broadcast_stream_id"),
        "playback_ids": list(d.get("playback_ids", [])),
        "active_asset_id": d.get("active_asset_id"),
        "asset_id": d.get("asset_id"),
        "created_at": rfc3339(rec.created_at),
        "started_at": rfc3339(d.get("started_at")),
        "finished_at": rfc3339(d.get("finished_at")),
    }
    if participants is not None:
        out["num_participants"] = participants
    return out


def _runtime(request: web.Request) -> RoomsRuntime:
    runtime = request.app.get(ROOMS)
    if runtime is None:
        raise ApiError(503, "unavailable", "Rooms are not configured on this server")
    return runtime


def _live_count(request: web.Request, room_id: str) -> int:
    runtime = request.app.get(ROOMS)
    if runtime is None or runtime.service is None:
        return 0
    return len(runtime.service.participants(room_id))


async def _get_room(request: web.Request) -> Record:
    room_id = path_id(request)
    rec = await request.app[appkeys.STORE].get(ROOMS_COLLECTION, room_id)
    if rec is None:
        raise not_found("room", room_id)
    return rec


@requires("write")
async def create(request: web.Request) -> web.Response:
    fields = await read_json(request, CREATE)
    room_id = new_id("rm")
    policy = fields["playback_policy"]
    playback_ids = [{"id": new_playback_id(), "policy": policy}] if fields["record"] else []
    data: dict[str, Any] = {
        **fields,
        "status": "idle",
        "started_at": None,
        "finished_at": None,
        "broadcast_stream_id": room_id if fields["record"] else None,
        "playback_ids": playback_ids,
    }
    # A recorded room is broadcast: its playback id plays the composite over
    # LL-HLS while the room runs and its asset afterwards (control.room_broadcasts).
    ops: list[Op] = [
        Put(ROOMS_COLLECTION, room_id, data, expect_version=0, tags={"status": "idle"})
    ]
    ops += [
        Put(
            PLAYBACK_IDS,
            p["id"],
            {"object_type": "room", "object_id": room_id, "policy": p["policy"]},
            expect_version=0,
            tags={"object_id": room_id},
        )
        for p in playback_ids
    ]
    await request.app[appkeys.OUTBOX].commit(ops)
    rec = await request.app[appkeys.STORE].get(ROOMS_COLLECTION, room_id)
    assert rec is not None
    return json_ok(render(rec, participants=0), status=201)


@requires("read")
async def list_(request: web.Request) -> web.Response:
    limit, after = page_params(request)
    store = request.app[appkeys.STORE]
    await check_starting_after(store, ROOMS_COLLECTION, after)
    page = await store.list(ROOMS_COLLECTION, limit=limit, starting_after=after)
    return json_ok(list_body(page, lambda r: render(r, participants=_live_count(request, r.id))))


@requires("read")
async def get(request: web.Request) -> web.Response:
    rec = await _get_room(request)
    return json_ok(render(rec, participants=_live_count(request, rec.id)))


@requires("write")
async def delete(request: web.Request) -> web.Response:
    rec = await _get_room(request)
    runtime = request.app.get(ROOMS)
    if runtime is not None and runtime.service is not None:
        if await runtime.service.close_room(rec.id, reason="deleted"):
            await runtime.service.drain_events()
    fresh = await request.app[appkeys.STORE].get(ROOMS_COLLECTION, rec.id)
    if fresh is not None:
        ops: list[Op] = [Delete(ROOMS_COLLECTION, rec.id)]
        ops += [Delete(PLAYBACK_IDS, p["id"]) for p in fresh.data.get("playback_ids", [])]
        await request.app[appkeys.OUTBOX].commit(ops)
    return web.Response(status=204)


@requires("read")
async def participants(request: web.Request) -> web.Response:
    rec = await _get_room(request)
    runtime = request.app.get(ROOMS)
    items = runtime.service.participants(rec.id) if runtime and runtime.service else []
    data = [
        {
            "object": "participant",
            "room_id": rec.id,
            "identity": p["identity"],
            "joined_at": rfc3339(p["joined_at"]),
            "can_publish": p["can_publish"],
            "can_subscribe": p["can_subscribe"],
            "tracks": p["tracks"],
        }
        for p in items
    ]
    return json_ok({"object": "list", "data": data, "has_more": False})


@requires("write")
async def remove_participant(request: web.Request) -> web.Response:
    rec = await _get_room(request)
    identity = request.match_info["identity"]
    runtime = request.app.get(ROOMS)
    if (
        runtime is None
        or runtime.service is None
        or not await runtime.service.remove_participant(rec.id, identity)
    ):
        raise not_found("participant", identity)
    return web.Response(status=204)


@requires("write")
async def create_token(request: web.Request) -> web.Response:
    fields = await read_json(request, TOKEN)
    rec = await _get_room(request)
    if rec.data.get("status") == "finished":
        raise ApiError(409, "room_finished", "The room has finished")
    tokens = _runtime(request).tokens
    token = tokens.issue(
        rec.id,
        fields["identity"],
        can_publish=fields["can_publish"],
        can_subscribe=fields["can_subscribe"],
        ttl_s=fields["ttl_s"],
    )
    settings = request.app[appkeys.SETTINGS]
    base = (settings.public_url or f"{request.scheme}://{request.host}").rstrip("/")
    ws_base = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return json_ok(
        {
            "object": "room_token",
            "room_id": rec.id,
            "identity": fields["identity"],
            "token": token,
            "expires_at": rfc3339(time.time() + fields["ttl_s"]),
            "join_url": f"{base}/rooms/{rec.id}?token={token}",
            "signal_url": f"{ws_base}/v1/rooms/{rec.id}/signal?token={token}",
        },
        status=201,
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/rooms", create)
    r.add_get("/v1/rooms", list_)
    r.add_get("/v1/rooms/{id}", get)
    r.add_delete("/v1/rooms/{id}", delete)
    r.add_get("/v1/rooms/{id}/participants", participants)
    r.add_delete("/v1/rooms/{id}/participants/{identity}", remove_participant)
    r.add_post("/v1/rooms/{id}/tokens", create_token)
    install_room_routes(app)


ROOM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "status", "max_participants", "record", "empty_timeout_s", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["room"]},
        "name": NULLABLE_STR,
        "status": {"type": "string", "enum": ["idle", "active", "finished"]},
        "max_participants": {"type": "integer", "minimum": 1},
        "record": {"type": "boolean"},
        "playback_policy": {"type": "string", "enum": ["public", "signed"]},
        "empty_timeout_s": {"type": "integer", "minimum": 1},
        "passthrough": NULLABLE_STR,
        "broadcast_stream_id": {
            **NULLABLE_STR,
            "description": "Hub stream of the composite when record",
        },
        "playback_ids": {
            "type": "array",
            "items": ref("PlaybackId"),
            "description": "Recorded rooms: plays the composite live, then the asset",
        },
        "active_asset_id": {**NULLABLE_STR, "description": "The recording in progress"},
        "asset_id": {**NULLABLE_STR, "description": "The recording, once the room finished"},
        "num_participants": {"type": "integer", "minimum": 0},
        "created_at": DATETIME,
        "started_at": NULLABLE_DATETIME,
        "finished_at": NULLABLE_DATETIME,
    },
}
PARTICIPANT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["identity", "room_id", "joined_at"],
    "properties": {
        "object": {"type": "string", "enum": ["participant"]},
        "room_id": {"type": "string"},
        "identity": {"type": "string"},
        "joined_at": DATETIME,
        "can_publish": {"type": "boolean"},
        "can_subscribe": {"type": "boolean"},
        "tracks": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "track_id": {"type": "string"},
                    "kind": {"type": "string", "enum": ["audio", "video"]},
                    "source": {"type": "string"},
                    "muted": {"type": "boolean"},
                },
            },
        },
    },
}
ROOM_TOKEN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["token", "room_id", "identity", "expires_at"],
    "properties": {
        "object": {"type": "string", "enum": ["room_token"]},
        "room_id": {"type": "string"},
        "identity": {"type": "string"},
        "token": {"type": "string", "description": "JWT (HS256) for the room client"},
        "expires_at": DATETIME,
        "join_url": {"type": "string"},
        "signal_url": {"type": "string"},
    },
}
_TAG = ["Rooms"]
_ONE = {"200": resp("The room", ref("Room"))}
_IDENTITY_PARAM = {"name": "identity", "in": "path", "required": True, "schema": {"type": "string"}}
OPENAPI: dict[str, Any] = {
    "tags": [{"name": "Rooms", "description": "Two-way WebRTC rooms (SFU) and join tokens"}],
    "paths": {
        "/v1/rooms": {
            "post": {
                "tags": _TAG,
                "operationId": "createRoom",
                "summary": "Create a room",
                "parameters": [IDEMPOTENCY_PARAM],
                "requestBody": body(CREATE.json_schema(), required=False),
                "responses": {
                    "201": resp("Created", ref("Room"), links={"GetRoom": "getRoom"}),
                    **errors(*WRITE_ERRORS),
                },
            },
            "get": {
                "tags": _TAG,
                "operationId": "listRooms",
                "summary": "List rooms",
                "parameters": PAGE_PARAMS,
                "responses": {"200": resp("A page", list_of("Room")), **errors(*READ_ERRORS)},
            },
        },
        "/v1/rooms/{id}": {
            "parameters": [id_param()],
            "get": {
                "tags": _TAG,
                "operationId": "getRoom",
                "summary": "Get a room",
                "responses": {**_ONE, **errors(*READ_ERRORS)},
            },
            "delete": {
                "tags": _TAG,
                "operationId": "deleteRoom",
                "summary": "Disconnect everyone, finish and delete the room",
                "responses": {"204": {"description": "Deleted"}, **errors(*WRITE_ERRORS)},
            },
        },
        "/v1/rooms/{id}/participants": {
            "parameters": [id_param()],
            "get": {
                "tags": _TAG,
                "operationId": "listRoomParticipants",
                "summary": "The participants connected now",
                "responses": {
                    "200": resp("Participants", list_of("RoomParticipant")),
                    **errors(*READ_ERRORS),
                },
            },
        },
        "/v1/rooms/{id}/participants/{identity}": {
            "parameters": [id_param(), _IDENTITY_PARAM],
            "delete": {
                "tags": _TAG,
                "operationId": "removeRoomParticipant",
                "summary": "Disconnect a participant",
                "responses": {"204": {"description": "Removed"}, **errors(*WRITE_ERRORS)},
            },
        },
        "/v1/rooms/{id}/tokens": {
            "parameters": [id_param()],
            "post": {
                "tags": _TAG,
                "operationId": "createRoomToken",
                "summary": "A join token (JWT) for one identity",
                "parameters": [IDEMPOTENCY_PARAM],
                "requestBody": body(TOKEN.json_schema()),
                "responses": {"201": resp("The token", ref("RoomToken")), **errors(*WRITE_ERRORS)},
            },
        },
    },
    "components": {
        "schemas": {
            "Room": ROOM_SCHEMA,
            "RoomParticipant": PARTICIPANT_SCHEMA,
            "RoomToken": ROOM_TOKEN_SCHEMA,
        }
    },
}
