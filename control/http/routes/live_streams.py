"""`/v1/live-streams`: create, list, get, update, delete, reset the stream key,
disable, enable and complete live streams (domain in control.domain.live_streams)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from control.analytics.tracker import concurrent_viewers
from control.domain.api_keys import scope_allows
from control.domain.live_streams import (
    COLLECTION,
    LiveStreamService,
    LiveStreamStatus,
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
from control.http.middleware import api_key, requires
from control.http.node_key import node_of
from control.http.validation import F, Obj, not_found, read_json
from control.ingest_health import read_health
from control.store.base import Record

_PASSTHROUGH = F(str, nullable=True, max_length=1024, description="Opaque, echoed in webhooks")
CREATE = Obj(
    {
        "name": F(str, nullable=True, max_length=200),
        "latency_mode": F(str, enum=("low", "standard"), default="low"),
        "reconnect_window_s": F(int, minimum=0, maximum=1800, default=60),
        "playback_policy": F(str, enum=("public", "signed"), default="public"),
        "record": F(bool, default=True),
        "passthrough": _PASSTHROUGH,
    }
)
UPDATE = Obj(
    {
        "name": F(str, nullable=True, max_length=200),
        "latency_mode": F(str, enum=("low", "standard")),
        "reconnect_window_s": F(int, minimum=0, maximum=1800),
        "record": F(bool),
        "passthrough": _PASSTHROUGH,
    }
)


def _svc(request: web.Request) -> LiveStreamService:
    return node_of(request).live_streams


@requires("write")
async def create(request: web.Request) -> web.Response:
    fields = await read_json(request, CREATE)
    view = await _svc(request).create(**fields)
    return web.json_response(
        view, status=201, headers={"Location": f"/v1/live-streams/{view['id']}"}
    )


def _view_for(request: web.Request) -> Callable[[Record], dict[str, Any]]:
    """The view this caller may see: the stream key only for write and admin keys
    (a read key, e.g. a dashboard's, must not be able to take a broadcast over)."""
    with_key = scope_allows(api_key(request).scope, "write")
    svc = _svc(request)
    return lambda rec: svc.to_json(rec, with_key=with_key)


@requires("read")
async def list_(request: web.Request) -> web.Response:
    limit, after = page_params(request)
    svc = _svc(request)
    await check_starting_after(svc.store, COLLECTION, after)
    page = await svc.store.list(COLLECTION, limit=limit, starting_after=after)
    return json_ok(list_body(page, _view_for(request)))


@requires("read")
async def get(request: web.Request) -> web.Response:
    live_id = path_id(request)
    rec = await _svc(request).get(live_id)
    if rec is None:
        raise not_found("live stream", live_id)
    return json_ok(_view_for(request)(rec))


@requires("read")
async def health(request: web.Request) -> web.Response:
    """What the stream's publisher sends now, as the node it publishes to
    measured it at its last heartbeat (`ingest` null while none is live)."""
    live_id = path_id(request)
    svc = _svc(request)
    rec = await svc.get(live_id)
    if rec is None:
        raise not_found("live stream", live_id)
    live = rec.data["status"] == LiveStreamStatus.ACTIVE.value
    ingest = await read_health(svc.store, live_id) if live else None
    viewers = await concurrent_viewers(svc.store, live_id) if live else 0
    return json_ok(
        {
            "object": "live_stream_health",
            "live_stream_id": live_id,
            "status": rec.data["status"],
            "ingest": ingest,
            "viewers": viewers,
            "warnings": list(rec.data.get("warnings", [])),
        }
    )


@requires("write")
async def update(request: web.Request) -> web.Response:
    live_id = path_id(request)
    fields = await read_json(request, UPDATE, partial=True)
    return json_ok(await _svc(request).update(live_id, fields))


@requires("write")
async def delete(request: web.Request) -> web.Response:
    live_id = path_id(request)
    await node_of(request).live_admin.delete(live_id)
    return web.Response(status=204)


def _action(name: str) -> Any:
    @requires("write")
    async def handler(request: web.Request) -> web.Response:
        live_id = path_id(request)
        await read_json(request)
        return json_ok(await getattr(node_of(request).live_admin, name)(live_id))

    handler.__name__ = name
    return handler


ACTIONS = {
    "reset-stream-key": "reset_stream_key",
    "disable": "disable",
    "enable": "enable",
    "complete": "complete",
}


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/live-streams", create)
    r.add_get("/v1/live-streams", list_)
    r.add_get("/v1/live-streams/{id}", get)
    r.add_get("/v1/live-streams/{id}/health", health)
    r.add_patch("/v1/live-streams/{id}", update)
    r.add_delete("/v1/live-streams/{id}", delete)
    for path, method in ACTIONS.items():
        r.add_post(f"/v1/live-streams/{{id}}/{path}", _action(method))


LIVE_STREAM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "status", "ingest", "playback_ids", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["live_stream"]},
        "name": NULLABLE_STR,
        "status": {"type": "string", "enum": ["idle", "active", "disabled"]},
        "stream_key": {
            "type": "string",
            "description": "Secret: whoever holds it can publish. Returned only to write and "
            "admin keys; never in events, the event log, SSE or webhooks.",
        },
        "latency_mode": {"type": "string", "enum": ["low", "standard"]},
        "reconnect_window_s": {"type": "integer", "minimum": 0, "maximum": 1800},
        "record": {"type": "boolean"},
        "passthrough": NULLABLE_STR,
        "playback_ids": {"type": "array", "items": ref("PlaybackId")},
        "ingest": {
            "type": "object",
            "required": ["rtmp_url", "whip_url"],
            "properties": {
                "rtmp_url": {"type": "string", "description": "rtmp://HOST:1935/live"},
                "rtmps_url": {
                    "type": "string",
                    "description": "rtmps://HOST:PORT/live, when ONAIR_RTMPS_PORT and a "
                    "certificate are configured",
                },
                "srt_url": {
                    "type": "string",
                    "description": "srt://HOST:PORT (MPEG-TS; the stream key as "
                    "streamid), when ONAIR_SRT_PORT is set (default 9000)",
                },
                "whip_url": {"type": "string"},
            },
        },
        "active_asset_id": NULLABLE_STR,
        "recent_asset_ids": {"type": "array", "items": {"type": "string"}},
        "warnings": {
            "type": "array",
            "description": "What the publisher sends that hurts viewers, while it does "
            "(each new one is also a live_stream.warning event)",
            "items": ref("LiveStreamWarning"),
        },
        "created_at": DATETIME,
        "updated_at": NULLABLE_DATETIME,
    },
}
WARNING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "message", "since"],
    "properties": {
        "type": {
            "type": "string",
            "description": "keyframe_interval | b_frames | no_audio (more may come)",
        },
        "message": {"type": "string", "description": "What to change, in words"},
        "since": DATETIME,
    },
}
_NULLABLE_NUMBER = {"type": ["number", "null"]}
HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["live_stream_id", "status", "ingest", "viewers", "warnings"],
    "properties": {
        "object": {"type": "string", "enum": ["live_stream_health"]},
        "live_stream_id": {"type": "string"},
        "status": {"type": "string", "enum": ["idle", "active", "disabled"]},
        "ingest": {
            "type": ["object", "null"],
            "description": "Measured by the node the publisher is on, every 3 s; null "
            "while the stream is not active",
            "properties": {
                "protocol": {"type": "string", "description": "rtmp | srt | whip | ..."},
                "node": {"type": "string"},
                "bitrate_kbps": _NULLABLE_NUMBER,
                "frame_rate": _NULLABLE_NUMBER,
                "keyframe_interval_s": _NULLABLE_NUMBER,
                "video_codec": NULLABLE_STR,
                "audio_codec": NULLABLE_STR,
                "width": _NULLABLE_NUMBER,
                "height": _NULLABLE_NUMBER,
                "b_frames": {"type": "boolean"},
            },
        },
        "viewers": {
            "type": "integer",
            "description": "Concurrent viewers (HLS and beacons, every node; 0 when not live)",
        },
        "warnings": {"type": "array", "items": ref("LiveStreamWarning")},
    },
}
PLAYBACK_ID_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "policy"],
    "properties": {
        "id": {"type": "string"},
        "policy": {"type": "string", "enum": ["public", "signed"]},
    },
}

_TAG = ["Live streams"]
_ONE = {"200": resp("The live stream", ref("LiveStream"))}


def _action_op(op_id: str, summary: str) -> dict[str, Any]:
    return {
        "parameters": [id_param()],
        "post": {
            "tags": _TAG,
            "operationId": op_id,
            "summary": summary,
            "parameters": [IDEMPOTENCY_PARAM],
            "responses": {**_ONE, **errors(*WRITE_ERRORS)},
        },
    }


OPENAPI: dict[str, Any] = {
    "tags": [
        {
            "name": "Live streams",
            "description": "Broadcast endpoints (RTMP, WHIP) and their lifecycle",
        }
    ],
    "paths": {
        "/v1/live-streams": {
            "post": {
                "tags": _TAG,
                "operationId": "createLiveStream",
                "summary": "Create a live stream",
                "parameters": [IDEMPOTENCY_PARAM],
                "requestBody": body(CREATE.json_schema(), required=False),
                "responses": {
                    "201": resp(
                        "Created",
                        ref("LiveStream"),
                        links={
                            "GetLiveStream": "getLiveStream",
                            "UpdateLiveStream": "updateLiveStream",
                            "DeleteLiveStream": "deleteLiveStream",
                            "ResetStreamKey": "resetStreamKey",
                            "DisableLiveStream": "disableLiveStream",
                            "EnableLiveStream": "enableLiveStream",
                            "CompleteLiveStream": "completeLiveStream",
                        },
                    ),
                    **errors(*WRITE_ERRORS),
                },
            },
            "get": {
                "tags": _TAG,
                "operationId": "listLiveStreams",
                "summary": "List live streams, newest first",
                "parameters": PAGE_PARAMS,
                "responses": {"200": resp("A page", list_of("LiveStream")), **errors(*READ_ERRORS)},
            },
        },
        "/v1/live-streams/{id}": {
            "parameters": [id_param()],
            "get": {
                "tags": _TAG,
                "operationId": "getLiveStream",
                "summary": "Get a live stream",
                "responses": {**_ONE, **errors(*READ_ERRORS)},
            },
            "patch": {
                "tags": _TAG,
                "operationId": "updateLiveStream",
                "summary": "Update a live stream",
                "requestBody": body(UPDATE.json_schema(), required=False),
                "responses": {**_ONE, **errors(*WRITE_ERRORS)},
            },
            "delete": {
                "tags": _TAG,
                "operationId": "deleteLiveStream",
                "summary": "Delete a live stream (kicks a live publisher)",
                "responses": {"204": {"description": "Deleted"}, **errors(*WRITE_ERRORS)},
            },
        },
        "/v1/live-streams/{id}/health": {
            "parameters": [id_param()],
            "get": {
                "tags": _TAG,
                "operationId": "getLiveStreamHealth",
                "summary": "What the publisher sends now: bitrate, frame rate, keyframe "
                "interval, codecs, B-frames; and the stream's warnings",
                "responses": {
                    "200": resp("The stream's health", ref("LiveStreamHealth")),
                    **errors(*READ_ERRORS),
                },
            },
        },
        "/v1/live-streams/{id}/reset-stream-key": _action_op(
            "resetStreamKey", "Issue a new stream key (kicks a live publisher)"
        ),
        "/v1/live-streams/{id}/disable": _action_op("disableLiveStream", "Refuse publishing"),
        "/v1/live-streams/{id}/enable": _action_op("enableLiveStream", "Allow publishing again"),
        "/v1/live-streams/{id}/complete": _action_op("completeLiveStream", "End the broadcast now"),
    },
    "components": {
        "schemas": {
            "LiveStream": LIVE_STREAM_SCHEMA,
            "PlaybackId": PLAYBACK_ID_SCHEMA,
            "LiveStreamWarning": WARNING_SCHEMA,
            "LiveStreamHealth": HEALTH_SCHEMA,
        }
    },
}
