"""`/v1/rooms`: rooms, their participants and join tokens, the signaling
WebSocket (``/v1/rooms/{id}/signal``) and the ``/rooms/{id}`` page — over the
node's `control.rooms.Rooms` (the SFU and the rooms' stored state)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web

from control.domain.api_keys import rfc3339
from control.domain.errors import InvalidState
from control.domain.rooms import (
    ROOMS_COLLECTION,
    create_room,
    delete_room_records,
    get_room,
    room_view,
)
from control.http.helpers import (
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
from control.http.middleware import requires
from control.http.node_key import media_of, node_of
from control.http.validation import ApiError, F, Obj, not_found, read_json
from control.rooms import RoomHost, RoomHostContended, Rooms
from control.store.base import Record
from realtime.hls.edge import RELAY_HEADER
from realtime.rooms import signaling as sig
from realtime.rooms.routes import STATIC
from realtime.rooms.tokens import IDENTITY_RE, MAX_TTL_S
from realtime.rooms.ws import HEARTBEAT_S, signal_handler

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


def _rooms(request: web.Request) -> Rooms:
    return media_of(request).rooms


async def _get_room(request: web.Request) -> Record:
    return await get_room(node_of(request).store, path_id(request))


@requires("write")
async def create(request: web.Request) -> web.Response:
    fields = await read_json(request, CREATE)
    rec = await create_room(node_of(request).outbox, fields)
    return json_ok(room_view(rec, participants=0), status=201)


@requires("read")
async def list_(request: web.Request) -> web.Response:
    limit, after = page_params(request)
    store = node_of(request).store
    rooms = _rooms(request)
    await check_starting_after(store, ROOMS_COLLECTION, after)
    page = await store.list(ROOMS_COLLECTION, limit=limit, starting_after=after)
    return json_ok(list_body(page, lambda r: room_view(r, participants=rooms.live_count(r.id))))


@requires("read")
async def get(request: web.Request) -> web.Response:
    rec = await _get_room(request)
    return json_ok(room_view(rec, participants=_rooms(request).live_count(rec.id)))


@requires("write")
async def delete(request: web.Request) -> web.Response:
    rec = await _get_room(request)
    forwarded = await _forwarded(request)  # its host ends its sessions
    if forwarded is not None:
        return forwarded
    service = _rooms(request).service
    if await service.close_room(rec.id, reason="deleted"):
        await service.drain_events()
    await delete_room_records(node_of(request).outbox, rec.id)
    return web.Response(status=204)


@requires("read")
async def participants(request: web.Request) -> web.Response:
    rec = await _get_room(request)
    forwarded = await _forwarded(request)
    if forwarded is not None:
        return forwarded
    items = _rooms(request).service.participants(rec.id)
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
    forwarded = await _forwarded(request)
    if forwarded is not None:
        return forwarded
    identity = request.match_info["identity"]
    if not await _rooms(request).service.remove_participant(rec.id, identity):
        raise not_found("participant", identity)
    return web.Response(status=204)


@requires("write")
async def create_token(request: web.Request) -> web.Response:
    fields = await read_json(request, TOKEN)
    rec = await _get_room(request)
    if rec.data.get("status") == "finished":
        raise InvalidState("The room has finished", error_type="room_finished")
    tokens = _rooms(request).tokens
    token = tokens.issue(
        rec.id,
        fields["identity"],
        can_publish=fields["can_publish"],
        can_subscribe=fields["can_subscribe"],
        ttl_s=fields["ttl_s"],
    )
    settings = node_of(request).settings
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
    r.add_get("/v1/rooms/{id}/signal", signal)
    r.add_get("/rooms/static/room.js", script)
    r.add_get("/rooms/{id}", page)


async def signal(request: web.Request) -> web.StreamResponse:
    rooms = _rooms(request)
    room_id = request.match_info["id"]
    if RELAY_HEADER not in request.headers:
        try:
            host = await rooms.host_elsewhere(room_id)
        except RoomHostContended:
            raise ApiError(503, "service_unavailable", "the room is moving; retry") from None
        if host is not None:
            relayed = await _relay_signal(request, host)
            if relayed is not None:
                return relayed
            # its host refused the connection: its process is gone, though its
            # alive key has not lapsed yet; the room moves here (or to the node
            # that took it first)
            if not await rooms.take_over(room_id, host.node_id):
                host = await rooms.host_elsewhere(room_id)
                if host is not None:
                    relayed = await _relay_signal(request, host)
                    if relayed is not None:
                        return relayed
                    raise ApiError(503, "service_unavailable", "the room's node is unreachable")
    return await signal_handler(rooms.service)(request)


async def _relay_signal(request: web.Request, host: RoomHost) -> web.WebSocketResponse | None:
    """Pipe a participant's signaling socket to the node hosting the room (the
    media flows between the participant and that node directly: its answers
    name its own ICE candidates). None, before anything is answered, when the
    host refuses the connection."""
    headers = {RELAY_HEADER: node_of(request).settings.node_id}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    url = "ws" + host.url.removeprefix("http") + request.path_qs
    session = aiohttp.ClientSession()
    try:
        try:
            upstream = await session.ws_connect(
                url, headers=headers, max_msg_size=sig.MAX_MESSAGE_BYTES, heartbeat=HEARTBEAT_S
            )
        except aiohttp.ClientConnectorError:
            return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # alive but not answering as it should: say so, never host a second copy
            return await _refuse(request, f"the room's node: {exc}")
        try:
            ws = web.WebSocketResponse(max_msg_size=sig.MAX_MESSAGE_BYTES, heartbeat=HEARTBEAT_S)
            await ws.prepare(request)

            async def pipe(src: Any, dst: Any) -> None:
                async for msg in src:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                        break

            tasks = [
                asyncio.ensure_future(pipe(ws, upstream)),
                asyncio.ensure_future(pipe(upstream, ws)),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
            if upstream.closed and not ws.closed:
                await ws.close(code=upstream.close_code or 1000, message=b"host closed")
            if not ws.closed:
                await ws.close()
            return ws
        finally:
            await upstream.close()
    finally:
        await session.close()


async def _refuse(request: web.Request, why: str) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=sig.MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    await ws.send_str(sig.to_json(sig.Error("room_unavailable", why)))
    await ws.close(code=1011, message=b"room_unavailable")
    return ws


async def _forwarded(request: web.Request) -> web.Response | None:
    """The answer of the node hosting the room (participants live there), when
    another node hosts it."""
    if RELAY_HEADER in request.headers:
        return None
    host = await _rooms(request).hosted_at(request.match_info["id"])
    if host is None:
        return None
    headers = {
        RELAY_HEADER: node_of(request).settings.node_id,
        "Authorization": request.headers.get("Authorization", ""),
    }
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            request.method, host + request.path_qs, headers=headers, data=await request.read()
        ) as r,
    ):
        return web.Response(status=r.status, body=await r.read(), content_type=r.content_type)


async def page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "room.html", headers={"Cache-Control": "no-store"})


async def script(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "room.js", headers={"Cache-Control": "no-cache"})


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
