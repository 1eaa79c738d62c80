"""The browser pages: the player at /watch/{playback_id}, the dashboard, static files.

Owns `add_page_routes(app)`. The player (watch.html + watch.js) uses hls.js,
vendored by deploy/vendor-js.sh into realtime/static/vendor/ (gitignored), in
low-latency mode against /play/{playback_id}.m3u8 (passing `?token=` through).
The dashboard talks to the API (/v1/live-streams) with the admin key the user
pastes (kept in the browser's localStorage).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
HLSJS_PATH = STATIC_DIR / "vendor" / "hls.min.js"

_PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _page(name: str) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / name, headers=_PAGE_HEADERS)


async def watch_page(request: web.Request) -> web.StreamResponse:
    return _page("watch.html")


async def dashboard_page(request: web.Request) -> web.StreamResponse:
    return _page("dashboard.html")


def hlsjs_available() -> bool:
    """True once deploy/vendor-js.sh has vendored hls.js."""
    return HLSJS_PATH.is_file()


_PAGE_PREFIXES = ("/watch/", "/static/", "/publish/", "/rooms/", "/dashboard")


async def close_after_pages(request: web.Request, response: web.StreamResponse) -> None:
    """Close the connection after a page or static file. A browser reuses idle
    connections for the player's /play requests, and the playback edge
    (realtime.hls.edge) serves those only on connections that carried nothing
    else; a page is fetched once, so the extra connection costs nothing."""
    if request.path.startswith(_PAGE_PREFIXES):
        response.force_close()
        # headers are computed before this hook runs, so say it as well
        response.headers["Connection"] = "close"


def add_page_routes(app: web.Application) -> None:
    """GET /watch/{playback_id}, GET /dashboard, GET /static/... (pages, js, css, vendor/)."""
    app.on_response_prepare.append(close_after_pages)
    app.router.add_get("/watch/{playback_id}", watch_page)
    app.router.add_get("/dashboard", dashboard_page)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
