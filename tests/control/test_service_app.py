"""The whole service as `onair serve` builds it: every piece mounted, every /v1 route documented."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from openapi_spec_validator import validate

from control.http.app import make_http_app
from control.http.openapi import build_document
from control.http.routes import control_modules, media_modules
from control.node import build_node
from control.settings import load_settings


def _app(tmp_path: Path) -> web.Application:
    return make_http_app(build_node(load_settings(env={"ONAIR_DATA_DIR": str(tmp_path)})))


def test_service_mounts_media_webrtc_rooms_and_pages(tmp_path: Path) -> None:
    paths = {r.resource.canonical for r in _app(tmp_path).router.routes() if r.resource}
    for expected in (
        "/play/{playback_id}.m3u8",
        "/play/{playback_id}/{name}",
        "/thumb/{playback_id}.jpg",
        "/v1/whip",
        "/v1/whep/{playback_id}",
        "/v1/rooms/{id}/signal",
        "/v1/assets",
        "/v1/uploads",
        "/upload/{id}",
        "/watch/{playback_id}",
        "/publish/{live_stream_id}",
        "/rooms/{id}",
        "/dashboard",
    ):
        assert expected in paths, expected


def test_every_v1_route_of_the_service_is_in_the_openapi_document(tmp_path: Path) -> None:
    app = _app(tmp_path)
    doc = build_document([*control_modules(), *media_modules()])
    validate(doc)
    documented = {
        (m.upper(), p) for p, item in doc["paths"].items() for m in item if m != "parameters"
    }
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" or not path or not path.startswith("/v1/"):
            continue
        if path in ("/v1/openapi.json", "/v1/docs") or path.endswith("/signal"):
            continue  # the document itself, its page, and the rooms WebSocket
        assert (route.method, path) in documented, (route.method, path)
