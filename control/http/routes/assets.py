"""`/v1/assets` and `/v1/uploads`: VOD assets, clips of them, and direct uploads.

An upload is two steps (Mux semantics): ``POST /v1/uploads`` returns an
unguessable ``url``; the client ``PUT``s the file there (streamed to storage,
size-limited, never buffered whole), which creates the asset
(``upload.asset_created``) and queues its processing job.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from control.domain.assets import (
    COLLECTION,
    AssetStatus,
)
from control.domain.uploads import upload_view
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
from control.store.base import Record

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
    await assets.delete(asset_id)
    await media_of(request).blobs.delete_prefix(rec.data["prefix"] + "/")
    return web.Response(status=204)


@requires("write")
async def create(request: web.Request) -> web.Response:
    fields = await read_json(request, CREATE_ASSET)
    clip = CLIP_INPUT.validate(fields["input"])
    view = await media_of(request).clips.create(
        asset_id=clip["asset_id"],
        start_s=clip["start_s"],
        end_s=clip["end_s"],
        playback_policy=fields.get("playback_policy"),
        passthrough=fields.get("passthrough"),
    )
    return web.json_response(view, status=201, headers={"Location": f"/v1/assets/{view['id']}"})


# ------------------------------------------------------------------------- uploads


def _upload_url(request: web.Request, rec: Record, token: str) -> str:
    return f"{node_of(request).settings.base_url}/upload/{rec.id}?token={token}"


@requires("write")
async def create_upload(request: web.Request) -> web.Response:
    fields = await read_json(request, CREATE_UPLOAD)
    rec, token = await media_of(request).uploads.create(
        playback_policy=fields["playback_policy"], passthrough=fields.get("passthrough")
    )
    return web.json_response(upload_view(rec, _upload_url(request, rec, token)), status=201)


@requires("read")
async def get_upload(request: web.Request) -> web.Response:
    return json_ok(upload_view(await media_of(request).uploads.get(path_id(request))))


@no_body_limit
async def put_upload(request: web.Request) -> web.Response:
    """The upload URL: the file body, streamed. Authorised by the URL's token."""
    rec, asset_id, size = await media_of(request).uploads.receive(
        request.match_info["id"],
        request.query.get("token", ""),
        request.content,
        content_type=request.content_type or "application/octet-stream",
        declared_length=request.content_length,
        spawn=node_of(request).tasks.spawn,
    )
    return web.json_response({"upload_id": rec.id, "asset_id": asset_id, "bytes": size})


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
