"""WHIP and WHEP in the OpenAPI document.

The handlers live with the media (`ingest.whip`, `realtime.whep`, mounted by
`realtime.webrtc.routes.mount_webrtc_routes` in `make_http_app`); this module only
describes them, so the served document covers every ``/v1`` route.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

SDP = "application/sdp"
_TAG = ["WebRTC"]
_SDP_BODY = {"required": True, "content": {SDP: {"schema": {"type": "string"}}}}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _session(kind: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "parameters": params,
        "delete": {
            "tags": _TAG,
            "operationId": f"delete{kind}Session",
            "summary": f"End a {kind} session",
            "responses": {"200": {"description": "Ended"}, "404": _err("No such session")},
        },
        "patch": {
            "tags": _TAG,
            "operationId": f"patch{kind}Session",
            "summary": "Trickle ICE / ICE restart: not supported (RFC 9725 §4.3)",
            "responses": {"501": _err("Not implemented"), "404": _err("No such session")},
        },
        "options": {
            "tags": _TAG,
            "operationId": f"options{kind}Session",
            "summary": "CORS preflight",
            "responses": {"204": {"description": "Allowed methods and headers"}},
        },
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_CREATED = {
    "description": "The SDP answer; `Location` names the session",
    "headers": {
        "Location": {"schema": {"type": "string"}},
        "ETag": {"schema": {"type": "string"}},
    },
    "content": {SDP: {"schema": {"type": "string"}}},
}

OPENAPI: dict[str, Any] = {
    "tags": [{"name": "WebRTC", "description": "WHIP ingest (RFC 9725) and WHEP playback"}],
    "paths": {
        "/v1/whip": {
            "post": {
                "tags": _TAG,
                "operationId": "whipPublish",
                "summary": "Publish over WebRTC (Bearer = the stream key; body: an SDP offer)",
                "requestBody": _SDP_BODY,
                "responses": {
                    "201": _CREATED,
                    "400": _err("Not an SDP offer"),
                    "401": _err("Unknown stream key"),
                    "403": _err("The live stream is disabled"),
                    "413": _err("Offer too large"),
                    "415": _err("Not application/sdp"),
                    "422": _err("No codec onair can take"),
                    "503": _err("Not ready"),
                },
            },
            "options": {
                "tags": _TAG,
                "operationId": "whipOptions",
                "summary": "CORS preflight",
                "responses": {"204": {"description": "Allowed methods and headers"}},
            },
        },
        "/v1/whip/{session_id}": _session("Whip", [_path("session_id")]),
        "/v1/whep/{playback_id}": {
            "parameters": [_path("playback_id")],
            "post": {
                "tags": _TAG,
                "operationId": "whepPlay",
                "summary": "Watch a live stream over WebRTC (token as Bearer when signed)",
                "requestBody": _SDP_BODY,
                "responses": {
                    "201": _CREATED,
                    "400": _err("Not an SDP offer"),
                    "401": _err("Token required"),
                    "403": _err("Token refused"),
                    "404": _err("No such playback id, or the stream is not live"),
                    "413": _err("Offer too large"),
                    "415": _err("Not application/sdp"),
                    "422": _err("No codec in common"),
                    "503": _err("Not ready"),
                },
            },
            "options": {
                "tags": _TAG,
                "operationId": "whepOptions",
                "summary": "CORS preflight",
                "responses": {"204": {"description": "Allowed methods and headers"}},
            },
        },
        "/v1/whep/{playback_id}/{session_id}": _session(
            "Whep", [_path("playback_id"), _path("session_id")]
        ),
    },
}


def add_routes(app: web.Application) -> None:
    """Nothing to mount: `make_http_app` mounts the WHIP/WHEP handlers."""
