"""`/v1/assets` and `/v1/uploads`: VOD assets, clips of them, and direct uploads.

An upload is two steps (Mux semantics): ``POST /v1/uploads`` returns an
unguessable ``url``; the client ``PUT``s the file there (streamed to storage,
size-limited, never buffered whole), which creates the asset
(``upload.asset_created``) and queues its processing job.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from aiohttp import web

from control.assets import (
    COLLECTION,
    UPLOAD_ALIVE_TTL_S,
    UPLOADS,
    AssetStatus,
    upload_alive_key,
    upload_put,
)
from control.faults import fault_point
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
from control.http.middleware import no_body_limit, requires
from control.http.node_key import media_of, node_of
from control.http.validation import ApiError, F, Obj, not_found, read_json
from control.ids import new_id
from control.jobs import QueueFull
from control.live_streams import NotFoundError, rfc3339
from control.store.base import Record
from control.vod_jobs import CLIP, UPLOAD
from vod.uploads import EmptyUpload, UploadTooLarge, receive_upload

_POLICY = F(str, enum=("public", "signed"), default="public")
_PASSTHROUGH = F(str, nullable=True, max_length=1024)
CLIP_INPUT = Obj(
    {
        "asset_id": F(str, required=True, max_length=128),
        "start_s": F(float, required=True, minimum=0),
        "end_s": F(float, required=True, minimum=0),
    }
)
CREATE_ASSET = Obj(
    {
        "input": F(dict, required=True, description="What to make the asset from (a clip)"),
        "playback_policy": F(
            str,
            enum=("public", "signed"),
            description="Default: the source asset's policy (a clip of a signed asset is signed)",
        ),
        "passthrough": _PASSTHROUGH,
    }
)
CREATE_UPLOAD = Obj(
    {
        "playback_policy": _POLICY,
        "passthrough": _PASSTHROUGH,
        "cors_origin": F(str, nullable=True, max_length=1024),
    }
)


def _queue_full(exc: QueueFull) -> ApiError:
    return ApiError(
        503,
        "queue_full",
        "The processing queue is full; try again later",
        headers={"Retry-After": str(int(exc.retry_after_s))},
    )


# -------------------------------------------------------------------------- assets


@requires("read")
async def list_(request: web.Request) -> web.Response:
    limit, after = page_params(request, extra=("live_stream_id",))
    store = node_of(request).store
    await check_starting_after(store, COLLECTION, after)
    ls = request.query.get("live_stream_id")
    page = await store.list(
        COLLECTION,
        limit=limit,
        starting_after=after,
        where=("live_stream_id", ls) if ls else None,
    )
    return json_ok(list_body(page, media_of(request).assets.to_json))


@requires("read")
async def get(request: web.Request) -> web.Response:
    asset_id = path_id(request)
    rec = await media_of(request).assets.get(asset_id)
    if rec is None:
        raise not_found("asset", asset_id)
    return json_ok(media_of(request).assets.to_json(rec))


@requires("write")
async def delete(request: web.Request) -> web.Response:
    asset_id = path_id(request)
    assets = media_of(request).assets
    rec = await assets.get(asset_id)
    if rec is None:
        raise not_found("asset", asset_id)
    if rec.data.get("source") == "live" and rec.data.get("status") == AssetStatus.PREPARING.value:
        raise ApiError(409, "invalid_state", "the broadcast is still recording into this asset")
    try:
        await assets.delete(asset_id)
    except NotFoundError:
        raise not_found("asset", asset_id) from None
    await media_of(request).blobs.delete_prefix(rec.data["prefix"] + "/")
    return web.Response(status=204)


@requires("write")
async def create(request: web.Request) -> web.Response:
    """A clip: ``{"input": {"asset_id", "start_s", "end_s"}}``."""
    fields = await read_json(request, CREATE_ASSET)
    clip = CLIP_INPUT.validate(fields["input"])
    if clip["end_s"] <= clip["start_s"]:
        raise ApiError(
            422, "validation_error", "input.end_s must be after input.start_s", "input.end_s"
        )
    assets = media_of(request).assets
    source = await assets.get(clip["asset_id"])
    if source is None:
        raise ApiError(422, "validation_error", "input.asset_id names no asset", "input.asset_id")
    if source.data["status"] != AssetStatus.READY.value:
        raise ApiError(409, "invalid_state", "the source asset is not ready")
    duration = float(source.data.get("duration_s") or 0)
    if clip["start_s"] >= duration:
        raise ApiError(
            422, "validation_error", "input.start_s is past the end of the asset", "input.start_s"
        )
    jobs = media_of(request).asset_jobs
    settings = node_of(request).settings
    depth = await jobs.store.queue_depth("jobs")
    if depth >= settings.max_queued_jobs:
        raise _queue_full(QueueFull("jobs", depth))
    inherited = (source.data.get("playback_ids") or [{}])[0].get("policy", "public")
    asset_id = new_id("as")
    job = {
        "asset_id": asset_id,
        "source_asset_id": clip["asset_id"],
        "start_s": clip["start_s"],
        "end_s": min(clip["end_s"], duration),
    }
    view = await assets.create(
        asset_id=asset_id,
        source="clip",
        policy=fields.get("playback_policy") or inherited,
        passthrough=fields.get("passthrough"),
        extra={"input": {**clip}},
        with_ops=[jobs.op(CLIP, job)],
    )
    jobs.notify()
    fault_point("clip.committed")
    return web.json_response(view, status=201, headers={"Location": f"/v1/assets/{view['id']}"})


# ------------------------------------------------------------------------- uploads


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _upload_json(request: web.Request, rec: Record, token: str | None = None) -> dict[str, Any]:
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
    if token is not None:
        base = node_of(request).settings.base_url
        out["url"] = f"{base}/upload/{rec.id}?token={token}"
    return out


@requires("write")
async def create_upload(request: web.Request) -> web.Response:
    fields = await read_json(request, CREATE_UPLOAD)
    settings = node_of(request).settings
    upload_id = new_id("up")
    token = secrets.token_urlsafe(32)
    now = time.time()
    data = {
        "status": "waiting",
        "token_hash": _token_hash(token),
        "asset_id": None,
        "max_bytes": settings.upload_max_bytes,
        "playback_policy": fields["playback_policy"],
        "passthrough": fields.get("passthrough"),
        "expires_at": now + 24 * 3600,
    }
    await node_of(request).outbox.commit([upload_put(upload_id, data, 0)])
    rec = await node_of(request).store.get(UPLOADS, upload_id)
    assert rec is not None
    return web.json_response(_upload_json(request, rec, token), status=201)


@requires("read")
async def get_upload(request: web.Request) -> web.Response:
    upload_id = path_id(request)
    rec = await node_of(request).store.get(UPLOADS, upload_id)
    if rec is None:
        raise not_found("upload", upload_id)
    return json_ok(_upload_json(request, rec))


@no_body_limit
async def put_upload(request: web.Request) -> web.Response:
    """The upload URL: the file body, streamed. Authorised by the URL's token."""
    store = node_of(request).store
    upload_id = request.match_info["id"]
    rec = await store.get(UPLOADS, upload_id) if len(upload_id) <= 64 else None
    token = request.query.get("token", "")
    if rec is None or not hmac.compare_digest(_token_hash(token), rec.data["token_hash"]):
        raise ApiError(404, "not_found", "No such upload (or a wrong token)")
    if rec.data["status"] != "waiting":
        raise ApiError(409, "invalid_state", f"this upload is {rec.data['status']}")
    if rec.data["expires_at"] < time.time():
        raise ApiError(409, "invalid_state", "this upload URL has expired")
    settings = node_of(request).settings
    jobs = media_of(request).asset_jobs
    depth = await store.queue_depth("jobs")
    if depth >= settings.max_queued_jobs:
        raise _queue_full(QueueFull("jobs", depth))
    # Claim the upload before reading the body: a second PUT gets 409, not a race.
    claimed = dict(rec.data, status="uploading", claimed_at=time.time())
    try:
        await store.commit([upload_put(rec.id, claimed, rec.version)])
    except Exception:
        raise ApiError(409, "invalid_state", "this upload is already in progress") from None
    version = rec.version + 1
    source_key = f"uploads/{rec.id}/source"
    # while bytes arrive, the upload says it is alive: the reconciler errors only
    # uploads whose receiver stopped (a slow 4 GB upload is not interrupted)
    alive = upload_alive_key(rec.id)
    alive_ttl = min(UPLOAD_ALIVE_TTL_S, settings.reconcile_after_s)
    await store.kv_set(alive, "1", ttl_s=alive_ttl)
    beat = time.monotonic()

    def progress(_received: int) -> None:
        nonlocal beat
        if time.monotonic() - beat >= alive_ttl / 4:
            beat = time.monotonic()
            node_of(request).tasks.spawn(store.kv_set(alive, "1", ttl_s=alive_ttl))

    try:
        size = await receive_upload(
            request.content,
            media_of(request).blobs,
            source_key,
            int(rec.data["max_bytes"]),
            content_type=request.content_type or "application/octet-stream",
            declared_length=request.content_length,
            on_progress=progress,
        )
    except (UploadTooLarge, EmptyUpload) as exc:
        failed = dict(claimed, status="waiting")
        await store.commit([upload_put(rec.id, failed, version)])
        status = 413 if isinstance(exc, UploadTooLarge) else 400
        raise ApiError(status, "upload_rejected", str(exc)) from None
    except BaseException:
        await store.commit([upload_put(rec.id, dict(claimed, status="waiting"), version)])
        raise
    fault_point("upload.received")
    # the asset, the upload pointing at it and the job that processes it: one commit
    asset_id = new_id("as")
    done = dict(claimed, status="asset_created", asset_id=asset_id)
    view = await media_of(request).assets.create(
        asset_id=asset_id,
        source="upload",
        policy=rec.data["playback_policy"],
        passthrough=rec.data.get("passthrough"),
        extra={"upload_id": rec.id, "source_bytes": size},
        extra_events=("upload.asset_created",),
        with_ops=[
            upload_put(rec.id, done, version),
            jobs.op(UPLOAD, {"asset_id": asset_id, "source_key": source_key}),
        ],
    )
    jobs.notify()
    fault_point("upload.committed")
    return web.json_response(
        {"upload_id": rec.id, "asset_id": view["id"], "bytes": size}, status=200
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/assets", list_)
    r.add_post("/v1/assets", create)
    r.add_get("/v1/assets/{id}", get)
    r.add_delete("/v1/assets/{id}", delete)
    r.add_post("/v1/uploads", create_upload)
    r.add_get("/v1/uploads/{id}", get_upload)
    r.add_put("/upload/{id}", put_upload)


# ------------------------------------------------------------------------- OpenAPI

ASSET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "status", "source", "playback_ids", "gaps", "progress", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["asset"]},
        "status": {"type": "string", "enum": ["preparing", "ready", "errored"]},
        "source": {"type": "string", "enum": ["live", "upload", "clip", "room"]},
        "duration_s": {"type": ["number", "null"]},
        "live_stream_id": NULLABLE_STR,
        "room_id": {"type": "string", "description": "The room a `source: room` asset recorded"},
        "playback_ids": {"type": "array", "items": ref("PlaybackId")},
        "gaps": {
            "type": "array",
            "description": "Discontinuities in the recording and why they are there",
            "items": {
                "type": "object",
                "properties": {
                    "at_s": {"type": "number"},
                    "duration_s": {"type": "number"},
                    "reason": {"type": "string", "enum": ["reconnect", "storage", "node_lost"]},
                },
            },
        },
        "warnings": {
            "type": "array",
            "description": "What went wrong while the asset was made (e.g. recording "
            "segments storage could not take); each one was also an asset.warning event",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "message": {"type": "string"},
                    "since": DATETIME,
                    "segments": {"type": "array", "items": {"type": "integer"}},
                },
            },
        },
        "progress": {"type": "integer", "minimum": 0, "maximum": 100},
        "mp4_status": {"type": "string", "enum": ["preparing", "ready", "errored"]},
        "passthrough": NULLABLE_STR,
        "input": {"type": "object"},
        "error": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
        "created_at": DATETIME,
        "updated_at": NULLABLE_DATETIME,
    },
}
UPLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "status", "max_bytes", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["upload"]},
        "status": {
            "type": "string",
            "enum": ["waiting", "uploading", "asset_created", "errored"],
            "description": "errored: the upload was interrupted (see error); make a new one",
        },
        "url": {"type": "string", "description": "PUT the file here (shown once)"},
        "asset_id": NULLABLE_STR,
        "max_bytes": {"type": "integer"},
        "playback_policy": {"type": "string", "enum": ["public", "signed"]},
        "created_at": DATETIME,
        "expires_at": DATETIME,
        "error": {"type": ["object", "null"]},
    },
}
_TAG = ["Assets"]
_CREATE_SCHEMA = CREATE_ASSET.json_schema()
_CREATE_SCHEMA["properties"]["input"] = CLIP_INPUT.json_schema()

OPENAPI: dict[str, Any] = {
    "tags": [{"name": "Assets", "description": "VOD: recordings, uploads and clips"}],
    "paths": {
        "/v1/assets": {
            "get": {
                "tags": _TAG,
                "operationId": "listAssets",
                "summary": "List assets, newest first",
                "parameters": [
                    *PAGE_PARAMS,
                    {
                        "name": "live_stream_id",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 128},
                    },
                ],
                "responses": {"200": resp("A page", list_of("Asset")), **errors(*READ_ERRORS)},
            },
            "post": {
                "tags": _TAG,
                "operationId": "createAsset",
                "summary": "Clip an existing asset into a new one",
                "parameters": [IDEMPOTENCY_PARAM],
                "requestBody": body(_CREATE_SCHEMA),
                "responses": {
                    "201": resp("Created", ref("Asset"), links={"GetAsset": "getAsset"}),
                    **errors(*WRITE_ERRORS, 503),
                },
            },
        },
        "/v1/assets/{id}": {
            "parameters": [id_param()],
            "get": {
                "tags": _TAG,
                "operationId": "getAsset",
                "summary": "Get an asset",
                "responses": {"200": resp("The asset", ref("Asset")), **errors(*READ_ERRORS)},
            },
            "delete": {
                "tags": _TAG,
                "operationId": "deleteAsset",
                "summary": "Delete an asset and its media",
                "responses": {"204": resp("Deleted"), **errors(*WRITE_ERRORS)},
            },
        },
        "/v1/uploads": {
            "post": {
                "tags": _TAG,
                "operationId": "createUpload",
                "summary": "Get a URL to PUT a video file to",
                "parameters": [IDEMPOTENCY_PARAM],
                "requestBody": body(CREATE_UPLOAD.json_schema(), required=False),
                "responses": {
                    "201": resp("Created", ref("Upload"), links={"GetUpload": "getUpload"}),
                    **errors(*WRITE_ERRORS),
                },
            },
        },
        "/v1/uploads/{id}": {
            "parameters": [id_param()],
            "get": {
                "tags": _TAG,
                "operationId": "getUpload",
                "summary": "Get an upload",
                "responses": {"200": resp("The upload", ref("Upload")), **errors(*READ_ERRORS)},
            },
        },
    },
    "components": {"schemas": {"Asset": ASSET_SCHEMA, "Upload": UPLOAD_SCHEMA}},
}
