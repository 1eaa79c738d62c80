"""The playback edge inside the service (`control.edge`, as `onair serve` listens):
live playback is served by the edge after the same policy and token checks as
the aiohttp handlers, a grant is reused only briefly, refusals and everything
else are answered by aiohttp, and metrics count edge answers like any other."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp import web

from control.cli import bootstrap_admin_key
from control.domain.api_keys import create_api_key
from control.http.app import NODE, make_http_app
from control.http.edge import edge_site
from control.node import Media, build_node
from control.playback import EDGE_CACHE_S
from control.settings import Settings, load_settings
from control.store.base import Store
from tests.realtime.media import feed_realtime, synthetic_tracks, synthetic_units


def _media(app: web.Application) -> Media:
    media = app[NODE].media
    assert media is not None
    return media


@dataclass
class Service:
    app: web.Application
    base: str
    http: aiohttp.ClientSession
    key: str
    tasks: list[asyncio.Task[None]]

    async def api(self, method: str, path: str, body: object = None) -> dict:  # type: ignore[type-arg]
        headers = {"Authorization": f"Bearer {self.key}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            assert r.status < 300, await r.text()
            return {} if r.status == 204 else await r.json()  # type: ignore[no-any-return]

    async def live(self, **fields: object) -> tuple[str, str]:
        """A live stream with a synthetic feed in the hub; (stream id, playback id)."""
        ls = await self.api("POST", "/v1/live-streams", {"record": False, **fields})
        pub = _media(self.app).hub.publish(ls["id"], synthetic_tracks(), source="test")
        units = synthetic_units(6.0, wallclock0=time.time())
        self.tasks.append(asyncio.create_task(feed_realtime(pub, units)))
        live = _media(self.app).hls.get(ls["id"])
        assert live is not None and await live.wait_media(timeout_s=5)
        return ls["id"], ls["playback_ids"][0]["id"]

    async def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """On a connection of its own, as a player's are: a connection that carried
        anything but live playback stays with aiohttp."""
        async with (
            aiohttp.ClientSession() as player,
            player.get(self.base + path, headers=headers) as r,
        ):
            return r.status, dict(r.headers), await r.read()


@contextlib.asynccontextmanager
async def service(settings: Settings, store: Store | None = None) -> AsyncIterator[Service]:
    app = make_http_app(build_node(settings, store=store))
    runner = web.AppRunner(app)
    await runner.setup()
    site = edge_site(runner, "127.0.0.1", 0)
    await site.start()
    key = await bootstrap_admin_key(app[NODE].store, settings.node_id)
    if key is None:  # another node made the first admin key: make one of our own
        _, key = await create_api_key(app[NODE].store, "admin", settings.node_id)
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession() as http:
        try:
            yield Service(app, f"http://127.0.0.1:{site.port}", http, key, tasks)
        finally:
            for t in tasks:
                t.cancel()
            await runner.cleanup()


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Service]:
    settings = load_settings(
        env={"ONAIR_DATA_DIR": str(tmp_path), "ONAIR_RTMP_PORT": "0", "ONAIR_SRT_PORT": "0"}
    )
    async with service(settings) as s:
        yield s


def served_by_edge(headers: dict[str, str]) -> bool:
    return "Server" not in headers  # aiohttp names itself; the edge does not


async def test_public_live_playback_is_served_by_the_edge_and_counted(svc: Service) -> None:
    _, pid = await svc.live()
    status, headers, body = await svc.get(f"/play/{pid}/media.m3u8")
    assert status == 200 and b"#EXT-X-PART" in body and served_by_edge(headers)
    status, headers, body = await svc.get(f"/play/{pid}.m3u8")
    assert status == 200 and f"{pid}/media.m3u8".encode() in body and served_by_edge(headers)
    status, headers, body = await svc.get("/metrics")
    assert 'route="/play/{playback_id}/{name}",status="200"' in body.decode()


async def test_signed_playback_through_the_edge_checks_the_token(svc: Service) -> None:
    signing = await svc.api("POST", "/v1/signing-keys", {})
    _, pid = await svc.live(playback_policy="signed")

    def token(sub: str, exp_in: float, private: str = signing["private_key"]) -> str:
        claims = {"sub": sub, "aud": "v", "exp": int(time.time() + exp_in)}
        return jwt.encode(claims, private, algorithm="RS256", headers={"kid": signing["id"]})

    good = token(pid, 600)
    status, headers, body = await svc.get(
        f"/play/{pid}/media.m3u8?token={urllib.parse.quote(good, safe='')}"
    )
    assert status == 200 and served_by_edge(headers)
    assert f"token={urllib.parse.quote(good, safe='')}".encode() in body  # children carry it
    other = await svc.api("POST", "/v1/signing-keys", {})
    for bad in (
        None,
        "garbage",
        token(pid, -120),
        token("x" * 24, 600),
        token(pid, 600, other["private_key"]),
    ):
        query = "" if bad is None else f"?token={urllib.parse.quote(bad, safe='')}"
        status, headers, body = await svc.get(f"/play/{pid}/media.m3u8{query}")
        assert status == 403, bad
        assert b'"forbidden"' in body and not served_by_edge(headers)


async def test_a_grant_is_reused_briefly_then_checked_again(svc: Service) -> None:
    stream_id, pid = await svc.live()
    playback = _media(svc.app).playback
    found = playback.edge_route(pid, None)
    route = await found if asyncio.isfuture(found) or asyncio.iscoroutine(found) else found
    assert route is not None and route.live is _media(svc.app).hls.get(stream_id)
    cached = playback.edge_route(pid, None)
    assert cached is not None and not asyncio.isfuture(cached)  # at once, from the cache
    # a grant is checked again after EDGE_CACHE_S
    await asyncio.sleep(EDGE_CACHE_S + 0.1)
    again = playback.edge_route(pid, None)
    assert asyncio.isfuture(again)
    assert await again is not None
    # deleting the live stream on this node revokes it at once
    await svc.api("DELETE", f"/v1/live-streams/{stream_id}")
    gone = playback.edge_route(pid, None)
    assert asyncio.isfuture(gone)
    assert await gone is None
    assert (await svc.get(f"/play/{pid}/media.m3u8"))[0] == 404


async def test_deleting_a_signing_key_revokes_its_tokens_at_once(svc: Service) -> None:
    signing = await svc.api("POST", "/v1/signing-keys", {})
    _, pid = await svc.live(playback_policy="signed")
    claims = {"sub": pid, "aud": "v", "exp": int(time.time() + 600)}
    tok = jwt.encode(
        claims, signing["private_key"], algorithm="RS256", headers={"kid": signing["id"]}
    )
    path = f"/play/{pid}/media.m3u8?token={urllib.parse.quote(tok, safe='')}"
    status, headers, _ = await svc.get(path)
    assert status == 200 and served_by_edge(headers)
    await svc.api("DELETE", f"/v1/signing-keys/{signing['id']}")
    status, headers, _ = await svc.get(path)
    assert status == 403 and not served_by_edge(headers)


async def test_concurrent_first_requests_share_one_lookup(svc: Service) -> None:
    _, pid = await svc.live()
    playback = _media(svc.app).playback
    first = playback.edge_route(pid, None)
    second = playback.edge_route(pid, None)
    assert asyncio.isfuture(first) and first is second
    assert await first is not None


async def test_vod_and_unknown_ids_are_answered_by_aiohttp(svc: Service) -> None:
    status, headers, body = await svc.get("/play/NoSuchPlaybackId123/media.m3u8")
    assert status == 404 and not served_by_edge(headers) and b'"not_found"' in body
    status, headers, _ = await svc.get("/v1/health")
    assert status == 200 and not served_by_edge(headers)


async def test_a_page_s_connection_closes_so_the_player_s_requests_reach_the_edge(
    svc: Service,
) -> None:
    _, pid = await svc.live()
    async with aiohttp.ClientSession() as browser:  # one pool, as a browser tab has
        async with browser.get(f"{svc.base}/watch/{pid}") as r:
            assert r.status == 200 and r.headers["Connection"] == "close"
            await r.read()
        async with browser.get(f"{svc.base}/play/{pid}/media.m3u8") as r:
            assert r.status == 200 and served_by_edge(dict(r.headers))
