"""SRT ingest against the real `onair serve`: live streams report
`ingest.srt_url`; Debian's ffmpeg publishes MPEG-TS to it with the stream key
as streamid; the stream goes live, its LL-HLS playlist fills and the broadcast
becomes a ready asset, as with RTMP. A wrong key is refused at the handshake
and changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ingest.srt import libsrt
from tests.e2e._media import Publisher
from tests.e2e._service import Api, ServiceProcess, http_get

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not libsrt.available(), reason="libsrt is not installed"),
]


async def test_ffmpeg_publishes_over_srt_into_ll_hls_and_a_recording(tmp_path: Path) -> None:
    svc = ServiceProcess(tmp_path / "data")
    await asyncio.to_thread(svc.start, 60)
    try:
        url = f"srt://127.0.0.1:{svc.srt_port}"
        assert f"SRT ingest:   {url}?streamid=<stream key>" in svc.stdout_path.read_text()
        api = Api(svc)
        ls = await api.live_stream(reconnect_window_s=1)
        assert ls["ingest"]["srt_url"] == url

        wrong = await Publisher.start(f"{url}?streamid=sk_not_a_key", 3, log=tmp_path / "w.log")
        assert await wrong.wait(within=15) != 0
        assert (await api.ok("GET", f"/v1/live-streams/{ls['id']}"))["status"] == "idle"

        pub = await Publisher.start(
            f"{url}?streamid={ls['stream_key']}", 6, log=tmp_path / "ff.log"
        )
        live = await api.wait_stream_status(ls["id"], "active", within=30)
        asset_id = live["active_asset_id"]
        assert asset_id
        pid = ls["playback_ids"][0]["id"]
        body = ""
        for _ in range(100):
            status, raw, _ = await http_get(f"{svc.url}/play/{pid}/media.m3u8")
            body = raw.decode()
            if status == 200 and "#EXTINF" in body:
                break
            await asyncio.sleep(0.1)
        assert "#EXT-X-PART:" in body and "#EXTINF" in body, body
        assert await pub.wait(within=30) == 0, (tmp_path / "ff.log").read_text()
        asset = await api.wait_asset(asset_id, within=60)
        assert asset["source"] == "live" and 4.0 <= asset["duration_s"] <= 7.5, asset
    finally:
        if svc.proc is not None:
            await asyncio.to_thread(svc.stop, 15)
