"""The container files (issue 14, item 9), built and run as a user would:
`deploy/Dockerfile` on a base image made without a registry (debootstrap +
docker import, given as its BASE argument), and `deploy/docker-compose.yml`'s
cluster — two onair nodes, Redis, an S3 endpoint (moto's server), the nginx
cache — with ffmpeg publishing to node A while node B and the cache play the
stream, and the recording ready in S3 afterwards.

Skipped, with the reason, on a machine without Docker; `make test` installs
Debian's docker.io, docker-compose and debootstrap, and the engine is started
here when none runs."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from control.supervisor import machine_of
from tests.control.api.service_process import free_port
from tests.e2e._media import Publisher
from tests.support.docker import (
    BASE_IMAGE,
    ROOT,
    SERVICES_DOCKERFILE,
    SERVICES_IMAGE,
    Compose,
    build,
    build_base_image,
    engine,
    unavailable,
)

_WHY_NOT = unavailable()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or ""),
]

ONAIR_IMAGE = "onair:test"
PART = re.compile(r'#EXT-X-PART:[^\n]*URI="([^"]+)"')


@pytest.fixture(scope="module")
def images() -> Iterator[None]:
    with engine():
        build_base_image()
        # the two builds download and unpack mostly: side by side
        onair = build(ONAIR_IMAGE, ROOT / "deploy" / "Dockerfile", ROOT, {"BASE": BASE_IMAGE})
        services = build(SERVICES_IMAGE, SERVICES_DOCKERFILE)
        onair.wait()
        services.wait()
        yield


async def _get(url: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=10), **kw) as r:
                return r.status, dict(r.headers), await r.read()
        except (aiohttp.ClientError, TimeoutError):
            return 0, {}, b""


async def _until(what: str, probe: Any, within: float) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = await probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def test_the_compose_cluster_ingests_on_one_node_and_plays_from_the_other(
    images: None,
) -> None:
    ports = {
        name: free_port()
        for name in ("CACHE_PORT", "NODE_A_HTTP_PORT", "NODE_B_HTTP_PORT", "NODE_A_RTMP_PORT")
    }
    ports["NODE_B_RTMP_PORT"] = free_port()
    cache = f"http://127.0.0.1:{ports['CACHE_PORT']}"
    node_a = f"http://127.0.0.1:{ports['NODE_A_HTTP_PORT']}"
    node_b = f"http://127.0.0.1:{ports['NODE_B_HTTP_PORT']}"
    env = {
        **{k: str(v) for k, v in ports.items()},
        "ONAIR_IMAGE": ONAIR_IMAGE,
        "REDIS_IMAGE": SERVICES_IMAGE,
        "NGINX_IMAGE": SERVICES_IMAGE,
        "S3_IMAGE": SERVICES_IMAGE,
        "S3_COMMAND": "moto_server -H 0.0.0.0 -p 9000",
        "ONAIR_PUBLIC_URL": cache,
    }
    with Compose(ROOT / "deploy" / "docker-compose.yml", env) as cluster:
        try:
            for base in (node_a, node_b, cache):

                async def healthy(base: str = base) -> bool:
                    status, _, _ = await _get(base + "/v1/health")
                    return status == 200

                await _until(f"{base}/v1/health", healthy, 120)
            key = cluster.exec("node-a", "onair", "keys", "create", "--scope", "admin")
            key = key.strip().splitlines()[-1]
            auth = {"Authorization": f"Bearer {key}"}
            async with aiohttp.ClientSession(headers=auth) as api:
                async with api.get(cache + "/v1/nodes") as r:
                    assert r.status == 200
                    # each container is an `onair serve` with a worker per core
                    ids = [n["id"] for n in (await r.json())["data"]]
                    assert {machine_of(i) for i in ids} == {"node-a", "node-b"}, ids
                    assert len(ids) == 2 * (os.cpu_count() or 1), ids
                async with api.post(
                    cache + "/v1/live-streams", json={"record": True, "reconnect_window_s": 2}
                ) as r:
                    assert r.status == 201, await r.text()
                    ls = await r.json()
            pid = ls["playback_ids"][0]["id"]
            publisher = await Publisher.start(
                f"rtmp://127.0.0.1:{ports['NODE_A_RTMP_PORT']}/live/{ls['stream_key']}", 12
            )
            try:
                # node B serves node A's stream (relayed), and so does the cache
                async def parts_on_b() -> list[str]:
                    status, _, body = await _get(f"{node_b}/play/{pid}/media.m3u8")
                    return PART.findall(body.decode()) if status == 200 else []

                part = (await _until("parts on node B", parts_on_b, 60))[-1]
                _, _, from_a = await _get(f"{node_a}/play/{pid}/{part}")
                status, _, from_b = await _get(f"{node_b}/play/{pid}/{part}")
                assert status == 200 and from_b == from_a and len(from_a) > 1000
                status, _, _ = await _get(f"{cache}/play/{pid}/{part}")
                status, headers, through = await _get(f"{cache}/play/{pid}/{part}")
                assert status == 200 and through == from_a
                assert headers.get("X-Cache-Status") == "HIT", headers
                status, _, body = await _get(f"{cache}/play/{pid}/media.m3u8")
                assert status == 200 and b"#EXT-X-PART" in body
                assert await publisher.wait(60) == 0
            finally:
                await publisher.stop()

            # the recording is in S3, ready, and plays as VOD from the cache
            async def ready() -> dict[str, Any] | None:
                async with aiohttp.ClientSession(headers=auth) as api:
                    async with api.get(f"{node_b}/v1/live-streams/{ls['id']}") as r:
                        stream = await r.json()
                    asset_ids = stream.get("recent_asset_ids") or []
                    if not asset_ids:
                        return None
                    async with api.get(f"{node_b}/v1/assets/{asset_ids[0]}") as r:
                        asset = dict(await r.json())
                return asset if asset.get("status") == "ready" else None

            asset = await _until("the recording ready", ready, 90)
            assert asset["duration_s"] > 5, asset
            vod = asset["playback_ids"][0]["id"]
            status, _, body = await _get(f"{cache}/play/{vod}/media.m3u8")
            assert status == 200 and body.rstrip().endswith(b"#EXT-X-ENDLIST"), body[-200:]
            segment = next(
                line for line in body.decode().splitlines() if line and not line.startswith("#")
            )
            status, _, data = await _get(f"{cache}/play/{vod}/{segment.split('?')[0]}")
            assert status == 200 and len(data) > 1000
        except BaseException:
            print(cluster.logs())
            raise
