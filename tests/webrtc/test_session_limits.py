"""WebRTC floods: sessions are capped globally, per stream and per client
address; one that never connects is gone within the pre-connect timeout; remote
candidates on private addresses are not probed unless allowed; DELETE/PATCH need
the credential that created a session; TURN credentials are minted per answer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from ingest.hub import Hub
from ingest.webrtc.config import WebRtcConfig
from ingest.webrtc.sdp import strip_mdns_candidates
from realtime.webrtc.routes import add_webrtc_routes
from tests.webrtc._media import FakeAuthority, feed_file, make_h264_aac_file, resolve_playback
from tests.webrtc.conftest import Server

pytestmark = pytest.mark.e2e
SDP = {"Content-Type": "application/sdp"}


@pytest.fixture(scope="module")
def h264_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_h264_aac_file(str(tmp_path_factory.mktemp("media") / "src.mp4"))


@contextlib.asynccontextmanager
async def serving(config: WebRtcConfig) -> AsyncIterator[Server]:
    hub = Hub()
    app = web.Application()
    routes = add_webrtc_routes(
        app, hub=hub, authority=FakeAuthority(), resolve_playback=resolve_playback, config=config
    )
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Server(f"http://127.0.0.1:{runner.addresses[0][1]}", hub, routes, config)
    finally:
        await runner.cleanup()


async def recv_offer(config: WebRtcConfig) -> str:
    from aiortc import RTCPeerConnection

    from ingest.webrtc.config import prepare_ice

    pc = RTCPeerConnection(config.rtc_configuration())
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    prepare_ice(pc, config)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def post(
    http: aiohttp.ClientSession, url: str, offer: str, token: str | None = None
) -> aiohttp.ClientResponse:
    headers = {**SDP, **({"Authorization": f"Bearer {token}"} if token else {})}
    async with http.post(url, data=offer, headers=headers) as r:
        await r.read()
        return r


async def test_viewer_sessions_are_capped_per_address_and_in_all(h264_file: str) -> None:
    config = WebRtcConfig.loopback(max_sessions=3, max_sessions_per_ip=2, connect_timeout_s=5)
    async with serving(config) as server:
        feeder = asyncio.ensure_future(feed_file(server.hub, "ls_1", h264_file))
        try:
            await asyncio.sleep(0.5)
            offer = await recv_offer(config)
            async with aiohttp.ClientSession() as http:
                url = f"{server.base}/v1/whep/pb_1"
                statuses = [(await post(http, url, offer)).status for _ in range(3)]
                assert statuses == [201, 201, 429]
                third = await post(http, url, offer)
                assert third.status == 429 and third.headers["Retry-After"]
            assert len(server.routes.whep.sessions) == 2
            # the same cap in all: a third address-less slot is the last one
            config2 = WebRtcConfig.loopback(max_sessions=2, max_sessions_per_ip=5)
            async with serving(config2) as small:
                feeder2 = asyncio.ensure_future(feed_file(small.hub, "ls_1", h264_file))
                try:
                    await asyncio.sleep(0.5)
                    async with aiohttp.ClientSession() as http:
                        url = f"{small.base}/v1/whep/pb_1"
                        got = [(await post(http, url, offer)).status for _ in range(3)]
                    assert got == [201, 201, 503]
                finally:
                    feeder2.cancel()
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder


async def test_a_session_that_never_connects_is_dropped(h264_file: str) -> None:
    config = WebRtcConfig.loopback(connect_timeout_s=0.5)
    async with serving(config) as server:
        feeder = asyncio.ensure_future(feed_file(server.hub, "ls_1", h264_file))
        try:
            await asyncio.sleep(0.5)
            offer = await recv_offer(config)  # its peer connection is already closed
            async with aiohttp.ClientSession() as http:
                assert (await post(http, f"{server.base}/v1/whep/pb_1", offer)).status == 201
                assert (await post(http, f"{server.base}/v1/whip", offer, "key-live-2")).status in (
                    201,
                    422,
                )
            assert server.routes.whep.sessions
            deadline = time.monotonic() + 5
            while server.routes.whep.sessions or server.routes.whip.sessions:
                assert time.monotonic() < deadline, "a silent session outlived its timeout"
                await asyncio.sleep(0.1)
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder


def test_remote_candidates_on_private_addresses_are_dropped() -> None:
    offer = (
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "a=candidate:1 1 udp 2130706431 10.0.0.7 5000 typ host\r\n"
        "a=candidate:2 1 udp 2130706431 127.0.0.1 5001 typ host\r\n"
        "a=candidate:3 1 udp 2130706431 169.254.169.254 5002 typ host\r\n"
        "a=candidate:4 1 udp 2130706431 fd00::1 5003 typ host\r\n"
        "a=candidate:5 1 udp 1694498815 93.184.216.34 6000 typ srflx raddr 0.0.0.0 rport 0\r\n"
        "a=candidate:6 1 udp 2130706431 abc.local 5004 typ host\r\n"
        "a=end-of-candidates\r\n"
    )
    strict = strip_mdns_candidates(offer, allow_private=False)
    assert [line.split()[4] for line in strict.splitlines() if "candidate:" in line] == [
        "93.184.216.34"
    ]
    assert "end-of-candidates" not in strict, "peer-reflexive pairing stays possible"
    loose = strip_mdns_candidates(offer, allow_private=True)
    assert "10.0.0.7" in loose and "abc.local" not in loose
    # the service default: private candidates only when it serves this machine
    assert not WebRtcConfig.from_env({}).allow_private_candidates
    assert WebRtcConfig.from_env({"ONAIR_WEBRTC_LOOPBACK": "1"}).allow_private_candidates
    assert not WebRtcConfig.from_env(
        {"ONAIR_WEBRTC_LOOPBACK": "1", "ONAIR_WEBRTC_ALLOW_PRIVATE_CANDIDATES": "false"}
    ).allow_private_candidates
    assert WebRtcConfig.from_env({}).connect_timeout_s <= 10


async def test_only_the_creating_credential_ends_a_viewer_session(h264_file: str) -> None:
    config = WebRtcConfig.loopback()
    async with serving(config) as server:
        feeder = asyncio.ensure_future(feed_file(server.hub, "ls_1", h264_file))
        try:
            await asyncio.sleep(0.5)
            offer = await recv_offer(config)
            async with aiohttp.ClientSession() as http:
                r = await post(http, f"{server.base}/v1/whep/sig_1", offer, "good")
                assert r.status == 201
                location = server.base + r.headers["Location"]
                async with http.delete(location) as d:
                    assert d.status == 401
                async with http.delete(location, headers={"Authorization": "Bearer bad"}) as d:
                    assert d.status == 401
                async with http.patch(location, headers={"Authorization": "Bearer bad"}) as d:
                    assert d.status == 401
                assert len(server.routes.whep.sessions) == 1
                async with http.delete(location, headers={"Authorization": "Bearer good"}) as d:
                    assert d.status == 200
                assert not server.routes.whep.sessions
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder


async def test_turn_credentials_are_minted_per_answer_and_expire() -> None:
    secret = "turn-shared-secret"
    config = WebRtcConfig.loopback(
        turn_secret=secret, turn_urls=("turn:turn.example.test:3478",), turn_ttl_s=600
    )
    async with serving(config) as server, aiohttp.ClientSession() as http:
        async with http.options(f"{server.base}/v1/whip") as r:
            links = r.headers.getall("Link")
    (link,) = [x for x in links if "turn:" in x]
    fields = dict(part.strip().split("=", 1) for part in link.split(";")[1:] if "=" in part)
    username = fields["username"].strip('"')
    credential = fields["credential"].strip('"')
    expiry, _, _user = username.partition(":")
    assert 590 <= int(expiry) - time.time() <= 601
    expected = base64.b64encode(
        hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    ).decode()
    assert credential == expected
    assert secret not in link
    # the server's own peer connections use fresh credentials too
    (server_turn,) = config.rtc_configuration().iceServers
    assert server_turn.username and server_turn.username.split(":")[0].isdigit()
