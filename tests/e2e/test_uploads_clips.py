"""Issue 4, uploads and clips against the real `onair serve`: an H.264/AAC MP4
is remuxed to a ready asset, a VP9/Opus WebM is transcoded, a text file ends
`errored` with a reason, an upload over ONAIR_UPLOAD_MAX_BYTES gets 413, a clip
of a live recording lasts end-start within a GOP, and path traversal finds
nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import m3u8
import pytest

from tests.e2e._media import Publisher, ffmpeg_decode, ffprobe, make_file
from tests.e2e._service import Api, ServiceProcess, http_get, rtmp_url

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

MAX_BYTES = 3_000_000


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    s = ServiceProcess(
        tmp_path_factory.mktemp("uploads") / "data", {"ONAIR_UPLOAD_MAX_BYTES": str(MAX_BYTES)}
    )
    s.start(60)
    try:
        yield s
    finally:
        if s.proc is not None:
            s.stop(15)


async def upload(api: Api, path: Path, content_type: str, **fields: Any) -> tuple[int, Any]:
    up = await api.ok("POST", "/v1/uploads", fields)
    assert up["url"].startswith(api.svc.url + "/upload/")
    async with aiohttp.ClientSession() as s:
        with path.open("rb") as f:
            async with s.put(up["url"], data=f, headers={"Content-Type": content_type}) as r:
                body = await r.json()
                return r.status, body


async def check_vod(svc: ServiceProcess, asset: dict[str, Any], duration: float) -> None:
    pid = asset["playback_ids"][0]["id"]
    status, body, _ = await http_get(f"{svc.url}/play/{pid}/media.m3u8")
    assert status == 200, body
    pl = m3u8.loads(body.decode())
    assert pl.is_endlist and pl.segment_map
    assert abs(sum(s.duration for s in pl.segments) - duration) <= 1.1
    await ffmpeg_decode(f"{svc.url}/play/{pid}.m3u8")


async def test_an_h264_aac_mp4_upload_is_remuxed(svc: ServiceProcess, tmp_path: Path) -> None:
    src = await make_file(
        tmp_path / "in.mp4",
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100",
        "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
    )  # fmt: skip
    api = Api(svc)
    status, body = await upload(api, src, "video/mp4")
    assert status == 200, body
    asset = await api.wait_asset(body["asset_id"], within=60)
    assert asset["source"] == "upload"
    assert abs(asset["duration_s"] - 4.0) <= 0.5, asset
    await check_vod(svc, asset, 4.0)


async def test_a_vp9_opus_webm_upload_is_transcoded(svc: ServiceProcess, tmp_path: Path) -> None:
    src = await make_file(
        tmp_path / "in.webm",
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000",
        "-t", "3", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
        "-b:v", "300k", "-c:a", "libopus", "-shortest",
    )  # fmt: skip
    api = Api(svc)
    status, body = await upload(api, src, "video/webm")
    assert status == 200, body
    asset = await api.wait_asset(body["asset_id"], within=90)
    await check_vod(svc, asset, 3.0)
    pid = asset["playback_ids"][0]["id"]
    status, media, _ = await http_get(f"{svc.url}/play/{pid}/media.m3u8")
    pl = m3u8.loads(media.decode(), uri=f"{svc.url}/play/{pid}/media.m3u8")
    st, init, _ = await http_get(pl.segment_map[0].absolute_uri)
    st2, seg, _ = await http_get(pl.segments[0].absolute_uri)
    assert st == st2 == 200
    (tmp_path / "first.mp4").write_bytes(init + seg)
    codecs = {s["codec_name"] for s in (await ffprobe(tmp_path / "first.mp4"))["streams"]}
    assert codecs == {"h264", "aac"}, codecs


async def test_a_text_file_upload_errors_with_a_reason(svc: ServiceProcess, tmp_path: Path) -> None:
    src = tmp_path / "notes.txt"
    src.write_text("this is not a video\n" * 200)
    api = Api(svc)
    status, body = await upload(api, src, "text/plain")
    assert status == 200, body
    asset = await api.wait_asset(body["asset_id"], "errored", within=60)
    assert asset["error"]["message"], asset
    assert "video" in asset["error"]["message"].lower() or "media" in asset["error"]["message"]


async def test_an_upload_over_the_limit_is_413(svc: ServiceProcess, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(MAX_BYTES + 100_000))
    status, body = await upload(Api(svc), src, "video/mp4")
    assert status == 413, body
    assert body["error"]["type"]


async def test_a_clip_of_a_live_recording(svc: ServiceProcess, tmp_path: Path) -> None:
    api = Api(svc)
    ls = await api.live_stream(reconnect_window_s=1)
    pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), 8, log=tmp_path / "ff.log")
    live = await api.wait_stream_status(ls["id"], "active", within=20)
    assert await pub.wait() == 0
    source = await api.wait_asset(live["active_asset_id"], within=30)
    status, clip = await api.call(
        "POST", "/v1/assets", {"input": {"asset_id": source["id"], "start_s": 2, "end_s": 5.5}}
    )
    assert status == 201, clip
    assert clip["source"] == "clip" and clip["status"] == "preparing"
    clip = await api.wait_asset(clip["id"], within=60)
    gop = 1.0  # -g 30 at 30 fps
    assert abs(clip["duration_s"] - 3.5) <= gop, clip
    await check_vod(svc, clip, clip["duration_s"])


async def test_path_traversal_finds_nothing(svc: ServiceProcess, tmp_path: Path) -> None:
    api = Api(svc)
    page = await api.ok("GET", "/v1/assets?limit=100")
    ready = [a for a in page["data"] if a["status"] == "ready"]
    pid = ready[0]["playback_ids"][0]["id"] if ready else "AAAAAAAAAAAAAAAAAAAAAAAA"
    attempts = [
        f"/play/{pid}/..%2F..%2Fmanifest.json",
        f"/play/{pid}/..%2Fmanifest.json",
        f"/play/{pid}/%2e%2e%2f%2e%2e%2fmanifest.json",
        f"/play/{pid}/manifest.json",
        f"/play/{pid}/..%5C..%5Cmanifest.json",
        f"/play/{pid}/%2Fetc%2Fpasswd",
        f"/play/{pid}/....%2F%2Fmanifest.json",
        f"/play/{pid}/0.m4s%00.json",
        f"/play/..%2F{pid}.m3u8",
        "/play/%2e%2e%2fdata%2fstore.m3u8",
        f"/thumb/..%2F..%2F{pid}.jpg",
        "/play/..%2F..%2F..%2Fetc%2Fpasswd/x",
        f"/play/{pid}/..%2F..%2F..%2F..%2Fonair.sqlite3",
        "/upload/..%2F..%2Fetc?token=x",
    ]
    async with aiohttp.ClientSession() as s:
        for path in attempts:
            url = svc.url + path
            async with s.get(aiohttp.client.URL(url, encoded=True), allow_redirects=False) as r:
                body = await r.read()
                assert r.status in (404, 405), (path, r.status, body[:200])
                assert b"root:" not in body and b"segments" not in body, path


class ConnectionCounter:
    """A TCP listener on 127.0.0.1 that counts who connects (nobody should)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: Any = None

    async def __aenter__(self) -> ConnectionCounter:
        import asyncio

        async def on_connect(reader: Any, writer: Any) -> None:
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])


@pytest.mark.parametrize(
    "name, text",
    [
        (
            "list.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nhttp://127.0.0.1:{port}/a.ts\n"
            "#EXTINF:2,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
        ),
        ("list.ffconcat", "ffconcat version 1.0\nfile 'http://127.0.0.1:{port}/a.mp4'\n"),
        (
            "list.sdp",
            "v=0\no=- 0 0 IN IP4 127.0.0.1\nc=IN IP4 127.0.0.1\nm=video {port} RTP/AVP 96\n",
        ),
    ],
)
async def test_a_playlist_upload_is_errored_without_any_request(
    svc: ServiceProcess, tmp_path: Path, name: str, text: str
) -> None:
    async with ConnectionCounter() as listener:
        src = tmp_path / name
        src.write_text(text.format(port=listener.port))
        api = Api(svc)
        status, body = await upload(api, src, "application/octet-stream")
        assert status == 200, body
        asset = await api.wait_asset(body["asset_id"], "errored", within=60)
        assert listener.connections == 0, "FFmpeg followed a URL inside the upload"
    message = asset["error"]["message"]
    assert "not a video file" in message or "not a media file" in message, message


async def test_a_clip_inherits_its_source_playback_policy(
    svc: ServiceProcess, tmp_path: Path
) -> None:
    src = await make_file(
        tmp_path / "in.mp4",
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
        "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
    )  # fmt: skip
    api = Api(svc)
    status, body = await upload(api, src, "video/mp4", playback_policy="signed")
    assert status == 200, body
    source = await api.wait_asset(body["asset_id"], within=60)
    assert [p["policy"] for p in source["playback_ids"]] == ["signed"]
    clip_input = {"asset_id": source["id"], "start_s": 0, "end_s": 2}
    inherited = await api.ok("POST", "/v1/assets", {"input": clip_input})
    assert [p["policy"] for p in inherited["playback_ids"]] == ["signed"]
    chosen = await api.ok("POST", "/v1/assets", {"input": clip_input, "playback_policy": "public"})
    assert [p["policy"] for p in chosen["playback_ids"]] == ["public"]
    pid = inherited["playback_ids"][0]["id"]
    await api.wait_asset(inherited["id"], within=60)
    status, _, _ = await http_get(f"{svc.url}/play/{pid}.m3u8")
    assert status == 403, "a clip of a signed asset is not public"
