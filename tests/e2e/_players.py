"""Stock web players in headless Chromium: a page per player, served from a
little static server of the test's own (the way a customer embeds onair's
URLs in their site), with what the page saw kept in `window.S`.

Players come from realtime/static/vendor/ (deploy/vendor-js.sh, npm):
hls.js, Shaka Player, video.js (VHS). `window.S` holds: `engine`, `playing`
(true once the video played), `t` (currentTime), `waiting` (waiting events
after the first play), `fatal` (fatal player errors), `errors` (the first
twenty, with codes and URLs), `latency` (seconds behind live by the stream's
program date time, where the player exposes it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from realtime.pages import STATIC_DIR

VENDOR = STATIC_DIR / "vendor"

COMMON = """
window.S = {engine: ENGINE, playing: false, t: 0, waiting: 0, fatal: 0, errors: [],
            latency: null, waitedAt: []};
const video = document.getElementById('v');
video.muted = true;
video.addEventListener('playing', () => {
  if (!S.playing) S.started = performance.now();
  S.playing = true;
});
video.addEventListener('waiting', () => {
  if (S.playing) { S.waiting++; S.waitedAt.push(Math.round(performance.now() - S.started)); }
});
function note(e) { if (S.errors.length < 20) S.errors.push(e); }
setInterval(() => {
  S.t = video.currentTime;
  S.readyState = video.readyState;
  const b = video.buffered;
  S.buffered = b.length ? b.end(b.length - 1) - video.currentTime : 0;
  if (typeof latency === 'function') { try { S.latency = latency(); } catch (e) {} }
}, 100);
"""

PLAYERS: dict[str, tuple[list[str], str]] = {
    "hls.js": (
        ["hls.min.js"],
        """
const hls = new Hls(CONFIG);
hls.on(Hls.Events.ERROR, (_, d) => { note({type: d.type, details: d.details, fatal: d.fatal,
  url: d.frag ? d.frag.url : (d.context ? d.context.url : null),
  status: d.response ? d.response.code : null}); if (d.fatal) S.fatal++; });
hls.loadSource(SRC); hls.attachMedia(video); video.play().catch(() => {});
function latency() { return hls.latency; }
""",
    ),
    "shaka": (
        ["shaka-player.compiled.js"],
        """
shaka.polyfill.installAll();
const player = new shaka.Player();
player.addEventListener('error', (e) => {
  const d = e.detail;
  note({code: d.code, severity: d.severity, data: JSON.stringify(d.data).slice(0, 300)});
  if (d.severity === 2) S.fatal++;
});
(async () => {
  await player.attach(video);
  player.configure(CONFIG);
  try { await player.load(SRC); } catch (e) { note({load: String(e.code || e)}); S.fatal++; }
  video.play().catch(() => {});
})();
function latency() {
  const d = player.getPlayheadTimeAsDate();
  return d ? (Date.now() - d.getTime()) / 1000 : null;
}
""",
    ),
    "video.js": (
        ["video.min.js"],
        """
const p = videojs(video, Object.assign({autoplay: 'muted', muted: true, liveui: true}, CONFIG));
p.on('error', () => {
  const e = p.error();
  note({code: e && e.code, message: e && e.message});
  S.fatal++;
});
p.src({src: SRC, type: 'application/x-mpegURL'});
p.play().catch(() => {});
function latency() {
  const pdt = video.getStartDate && video.getStartDate();
  if (!pdt || isNaN(pdt.getTime())) return null;
  return (Date.now() - (pdt.getTime() + video.currentTime * 1000)) / 1000;
}
""",
    ),
}


def page(player: str, src: str, config: dict[str, Any]) -> str:
    scripts, body = PLAYERS[player]
    tags = "".join(f'<script src="/vendor/{s}"></script>' for s in scripts)
    css = '<link rel="stylesheet" href="/vendor/video-js.min.css">' if player == "video.js" else ""
    code = COMMON.replace("ENGINE", json.dumps(player)) + body.replace(
        "CONFIG", json.dumps(config)
    ).replace("SRC", json.dumps(src))
    cls = ' class="video-js"' if player == "video.js" else ""
    return (
        f"<!doctype html><html><head>{css}{tags}</head><body>"
        f'<video id="v"{cls} width="640" height="360" muted playsinline></video>'
        f"<script>{code}</script></body></html>"
    )


def players_available() -> bool:
    return all((VENDOR / s).is_file() for scripts, _ in PLAYERS.values() for s in scripts)


@asynccontextmanager
async def player_site(player: str, src: str, config: dict[str, Any]) -> AsyncIterator[str]:
    """The URL of a page on 127.0.0.1 that plays `src` with `player` and `config`."""
    html = page(player, src, config)

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/vendor", Path(VENDOR))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()
