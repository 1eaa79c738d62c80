"""Issue 4, signed playback against the real `onair serve`: for a `signed`
stream, every protected path — multivariant and media playlists, init, part,
segment, thumbnail and MP4 download, live and VOD — refuses a missing,
expired, forged, other-id, other-audience or deleted-key token with 403 and
accepts a valid one, whose playlists hand the token on to their children."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import m3u8
import pytest

from tests.e2e._media import Publisher, ffmpeg_decode
from tests.e2e._service import Api, ServiceProcess, rtmp_url
from vod.tokens import generate_signing_key

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]
FORBIDDEN = {"error": {"type": "forbidden", "message": "forbidden"}}
"""Every refusal looks the same: which check failed goes to the log only."""


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    s = ServiceProcess(tmp_path_factory.mktemp("signed") / "data")
    s.start(60)
    try:
        yield s
    finally:
        if s.proc is not None:
            s.stop(15)


def token(private_pem: str, kid: str, sub: str, aud: str, exp_in: float = 600) -> str:
    now = int(time.time())
    claims = {"sub": sub, "aud": aud, "exp": now + int(exp_in), "iat": now - 1}
    return jwt.encode(claims, private_pem, algorithm="RS256", headers={"kid": kid})


class Keys:
    def __init__(self, key: dict[str, Any], deleted: dict[str, Any]) -> None:
        self.key = key
        self.deleted = deleted
        self.forger, _ = generate_signing_key()
        self._valid: dict[tuple[str, str], str] = {}

    def valid(self, pid: str, aud: str) -> str:
        if (pid, aud) not in self._valid:
            self._valid[pid, aud] = token(self.key["private_key"], self.key["id"], pid, aud)
        return self._valid[pid, aud]

    def bad(self, pid: str, aud: str) -> dict[str, str | None]:
        other_aud = "t" if aud != "t" else "v"
        return {
            "none": None,
            "empty": "",
            "garbage": "not.a.jwt",
            "expired": token(self.key["private_key"], self.key["id"], pid, aud, exp_in=-120),
            "forged": token(self.forger, self.key["id"], pid, aud),
            "wrong sub": token(self.key["private_key"], self.key["id"], "A" * 24, aud),
            "wrong aud": token(self.key["private_key"], self.key["id"], pid, other_aud),
            "deleted key": token(self.deleted["private_key"], self.deleted["id"], pid, aud),
            # longer than ONAIR_PLAYBACK_TOKEN_MAX_TTL_S (7 days by default)
            "too long": token(self.key["private_key"], self.key["id"], pid, aud, 400 * 86400),
        }


def with_token(url: str, tok: str | None) -> str:
    if tok is None:
        return url
    return f"{url}?token={urllib.parse.quote(tok, safe='')}"


async def get(s: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with s.get(url, allow_redirects=False) as r:
        return r.status, await r.read()


async def check_matrix(
    base: str, paths: dict[str, str], pid: str, keys: Keys, since: float | None = None
) -> dict[str, bytes]:
    """Every bad token → 403 on every path; the valid one → 200 ."""
    aud_of = {"thumbnail": "t", "download": "d"}
    failures: list[str] = []
    bodies: dict[str, bytes] = {}
    async with aiohttp.ClientSession() as s:

        async def one(name: str, path: str, label: str, tok: str | None, want: int) -> None:
            status, body = await get(s, with_token(base + path, tok))
            if status != want:
                late = f" {time.monotonic() - since:.2f}s after the playlist" if since else ""
                failures.append(f"{name} {path} {label}: {status}, not {want}{late} {body[:99]!r}")
            elif want == 403 and json.loads(body) != FORBIDDEN:
                failures.append(f"{name} {path} {label}: the 403 says more than it should {body!r}")
            elif label == "valid":
                bodies[name] = body

        jobs = []
        for name, path in paths.items():
            aud = aud_of.get(name, "v")
            for label, tok in keys.bad(pid, aud).items():
                jobs.append(one(name, path, label, tok, 403))
            jobs.append(one(name, path, "valid", keys.valid(pid, aud), 200))
        await asyncio.gather(*jobs)
    assert not failures, "\n".join(sorted(failures))
    return bodies


def children(playlist: bytes) -> list[str]:
    pl = m3u8.loads(playlist.decode())
    uris = [p.uri for p in pl.playlists]
    uris += [m.uri for m in pl.segment_map] + [s.uri for s in pl.segments if s.uri]
    uris += [p.uri for s in pl.segments for p in s.parts]
    if pl.preload_hint is not None:
        uris.append(pl.preload_hint.uri)
    return uris


async def test_signed_playback_needs_a_valid_token_everywhere(
    svc: ServiceProcess, tmp_path: Path
) -> None:
    api = Api(svc)
    key = await api.ok("POST", "/v1/signing-keys", {})
    gone = await api.ok("POST", "/v1/signing-keys", {})
    await api.ok("DELETE", f"/v1/signing-keys/{gone['id']}")
    keys = Keys(key, gone)

    ls = await api.live_stream(playback_policy="signed", reconnect_window_s=2)
    assert ls["playback_ids"][0]["policy"] == "signed"
    pid = ls["playback_ids"][0]["id"]
    pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), 6, log=tmp_path / "ff.log")
    live = await api.wait_stream_status(ls["id"], "active", within=20)

    # ---- live: wait for a full segment, then read the names from a valid playlist
    vtok = keys.valid(pid, "v")
    async with aiohttp.ClientSession() as s:
        deadline = time.monotonic() + 20
        while True:
            status, body = await get(s, with_token(f"{svc.url}/play/{pid}/media.m3u8", vtok))
            if status == 200 and any(s_.uri for s_ in m3u8.loads(body.decode()).segments):
                fetched = time.monotonic()
                break
            assert time.monotonic() < deadline, (status, body[:300])
            await asyncio.sleep(0.2)
    pl = m3u8.loads(body.decode())
    names = {
        "init": pl.segment_map[0].uri.split("?")[0],
        "segment": next(x.uri for x in pl.segments if x.uri).split("?")[0],
        "part": pl.segments[-1].parts[0].uri.split("?")[0],
    }
    live_paths = {
        "multivariant": f"/play/{pid}.m3u8",
        "media": f"/play/{pid}/media.m3u8",
        **{k: f"/play/{pid}/{v}" for k, v in names.items()},
        "thumbnail": f"/thumb/{pid}.jpg",
    }
    try:
        bodies = await check_matrix(svc.url, live_paths, pid, keys, since=fetched)
    except AssertionError as exc:
        _, now = await _get_once(with_token(f"{svc.url}/play/{pid}/media.m3u8", vtok))
        raise AssertionError(
            f"{exc}\nplaylist then:\n{body.decode()}\nnow:\n{now.decode()}"
        ) from None
    for name in ("multivariant", "media"):
        uris = children(bodies[name])
        assert uris and all(f"token={urllib.parse.quote(vtok, safe='')}" in u for u in uris), uris
    assert bodies["thumbnail"][:3] == b"\xff\xd8\xff"

    # ---- VOD: the asset of the broadcast is signed too
    assert await pub.wait() == 0
    asset = await api.wait_asset(live["active_asset_id"], within=30)
    apid = asset["playback_ids"][0]["id"]
    assert asset["playback_ids"][0]["policy"] == "signed"
    await api.wait_asset(asset["id"], "ready", field="mp4_status", within=60)
    status, body = await _get_once(
        with_token(f"{svc.url}/play/{apid}/media.m3u8", keys.valid(apid, "v"))
    )
    assert status == 200
    vod = m3u8.loads(body.decode())
    vod_paths = {
        "multivariant": f"/play/{apid}.m3u8",
        "media": f"/play/{apid}/media.m3u8",
        "init": f"/play/{apid}/{vod.segment_map[0].uri.split('?')[0]}",
        "segment": f"/play/{apid}/{vod.segments[-1].uri.split('?')[0]}",
        "thumbnail": f"/thumb/{apid}.jpg?time=1".split("?")[0],
        "download": f"/play/{apid}/download.mp4",
    }
    bodies = await check_matrix(svc.url, vod_paths, apid, keys)
    vtok = keys.valid(apid, "v")
    for name in ("multivariant", "media"):
        uris = children(bodies[name])
        assert uris and all(f"token={urllib.parse.quote(vtok, safe='')}" in u for u in uris), uris
    assert bodies["download"][4:8] == b"ftyp"
    # the live stream's own playback id now serves the VOD, still signed
    await check_matrix(svc.url, {"media": f"/play/{pid}/media.m3u8"}, pid, keys)
    # a real player follows the tokenised children to the end
    await ffmpeg_decode(with_token(f"{svc.url}/play/{apid}.m3u8", vtok))


async def _get_once(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s:
        return await get(s, url)
