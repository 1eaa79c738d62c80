"""WHIP into LL-HLS: what an aiortc publisher sends is segmented by the CMAF/LL-HLS
packager exactly like an RTMP stream, and the parts decode."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import av
import pytest
from aiohttp import web

from ingest.hub import Hub
from ingest.webrtc.config import WebRtcConfig
from realtime.webrtc.routes import add_webrtc_routes
from tests.support.webrtc_client import delete_session, whip_publish
from tests.webrtc._media import FakeAuthority, PatternVideoTrack, ToneAudioTrack, resolve_playback

hls_http = pytest.importorskip("realtime.hls.http")
hls_manager = pytest.importorskip("realtime.hls.manager")
m3u8 = pytest.importorskip("m3u8")

pytestmark = pytest.mark.e2e


async def test_whip_broadcast_becomes_a_decodable_ll_hls_stream(tmp_path) -> None:
    manager = hls_manager.LiveHlsManager(linger_s=5.0)
    hub = Hub(manager)
    app = web.Application()
    hls_http.add_test_routes(app, lambda pid: manager.get(pid))
    config = WebRtcConfig.loopback()
    add_webrtc_routes(
        app, hub=hub, authority=FakeAuthority(), resolve_playback=resolve_playback, config=config
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    pc, location = await whip_publish(
        f"{base}/v1/whip", "key-live-1", [PatternVideoTrack(320, 240), ToneAudioTrack()], config
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.get(f"{base}/play/ls_1.m3u8") as r:
                    if r.status == 200:
                        mv = m3u8.loads(await r.text())
                        break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("no LL-HLS playlist for the WHIP broadcast")
            info = mv.playlists[0].stream_info
            assert info.codecs.startswith("avc1.") and "mp4a.40.2" in info.codecs
            assert info.resolution == (320, 240)
            text = ""
            for _ in range(100):  # until a segment has closed (a keyframe came)
                async with http.get(f"{base}/play/ls_1/media.m3u8") as r:
                    text = await r.text()
                if "#EXTINF" in text:
                    break
                await asyncio.sleep(0.1)
            assert "#EXTINF" in text, text
            # init + every part listed (the first segment is young: all its parts are)
            init = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text)[0]
            parts = re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', text)
            assert parts
            blob = b""
            for uri in [init, *parts]:
                async with http.get(f"{base}/play/ls_1/{uri}") as r:
                    assert r.status == 200, uri
                    blob += await r.read()
        out = tmp_path / "parts.mp4"
        out.write_bytes(blob)
        with av.open(str(out)) as c:
            kinds = {s.type for s in c.streams}
            frames = sum(1 for _ in c.decode(video=0))
        assert kinds == {"video", "audio"}
        assert frames >= 30
    finally:
        assert await delete_session(location, "key-live-1") == 200
        await pc.close()
        await manager.close()
        await runner.cleanup()
    assert not hub.stream("ls_1").live
