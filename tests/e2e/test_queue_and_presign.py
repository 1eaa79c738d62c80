"""Issue 4, the edges of the asset pipeline against the real `onair serve`:

* a full job queue answers 503 with `Retry-After` instead of taking work it
  cannot do (ONAIR_MAX_QUEUED_JOBS), and the upload URL stays usable;
* with S3 and ONAIR_S3_PRESIGN_S, asset media is answered with a short-lived
  presigned redirect to the bucket, which a real player (ffmpeg) follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import m3u8
import pytest

from tests.e2e._media import ffmpeg_decode, make_file
from tests.e2e._service import Api, ServiceProcess
from tests.support.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def _service(base: Path, env: dict[str, str]) -> Iterator[ServiceProcess]:
    s = ServiceProcess(base / "data", env)
    s.start(60)
    try:
        yield s
    finally:
        if s.proc is not None:
            s.stop(15)


@pytest.fixture(scope="module")
def full_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    yield from _service(tmp_path_factory.mktemp("fullq"), {"ONAIR_MAX_QUEUED_JOBS": "0"})


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def presigning(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[ServiceProcess]:
    env = {
        "ONAIR_S3_ENDPOINT": s3.endpoint_url,
        "ONAIR_S3_BUCKET": "onair-presign",
        "ONAIR_S3_REGION": REGION,
        "ONAIR_S3_ACCESS_KEY": ACCESS_KEY,
        "ONAIR_S3_SECRET_KEY": SECRET_KEY,
        "ONAIR_S3_CREATE_BUCKET": "true",
        "ONAIR_S3_PRESIGN_S": "60",
    }
    yield from _service(tmp_path_factory.mktemp("presign"), env)


async def _small_mp4(tmp_path: Path) -> Path:
    return await make_file(
        tmp_path / "in.mp4",
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100",
        "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
    )  # fmt: skip


async def _put(url: str, path: Path) -> tuple[int, dict[str, str], bytes]:
    data = await asyncio.to_thread(path.read_bytes)
    async with (
        aiohttp.ClientSession() as s,
        s.put(url, data=data, headers={"Content-Type": "video/mp4"}) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def test_a_full_queue_answers_503_with_retry_after(
    full_queue: ServiceProcess, tmp_path: Path
) -> None:
    api = Api(full_queue)
    src = await _small_mp4(tmp_path)
    up = await api.ok("POST", "/v1/uploads", {})
    status, headers, body = await _put(up["url"], src)
    assert status == 503, body
    assert int(headers["Retry-After"]) > 0
    assert b'"queue_full"' in body
    # nothing was accepted: the upload is still waiting, no asset was made
    again = await api.ok("GET", f"/v1/uploads/{up['id']}")
    assert again["status"] == "waiting" and again["asset_id"] is None
    assets = await api.ok("GET", "/v1/assets")
    assert assets["data"] == []


async def test_s3_media_is_served_by_presigned_redirect(
    presigning: ServiceProcess, s3: S3Server, tmp_path: Path
) -> None:
    api = Api(presigning)
    up = await api.ok("POST", "/v1/uploads", {})
    status, _, body = await _put(up["url"], await _small_mp4(tmp_path))
    assert status == 200, body
    asset_id = (await api.ok("GET", f"/v1/uploads/{up['id']}"))["asset_id"]
    asset = await api.wait_asset(asset_id, within=60)
    await api.wait_asset(asset_id, "ready", field="mp4_status", within=60)
    pid = asset["playback_ids"][0]["id"]
    base = f"{presigning.url}/play/{pid}"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/media.m3u8") as r:
            assert r.status == 200  # playlists are answered by the service itself
            playlist = m3u8.loads(await r.text())
        first = playlist.segments[0].uri
        for name, magic in ((first, None), ("download.mp4", b"ftyp")):
            async with s.get(f"{base}/{name}", allow_redirects=False) as r:
                assert r.status == 302, (name, r.status)
                location = r.headers["Location"]
            assert location.startswith(s3.endpoint_url) and "Signature" in location, location
            async with s.get(location) as r:
                assert r.status == 200
                data = await r.read()
            assert data and (magic is None or data[4:8] == magic)
    # a real player follows the redirects from the playlist to the end
    await ffmpeg_decode(f"{base}.m3u8")
