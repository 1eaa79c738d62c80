"""Issue 5, WebRTC in and out, against the real `onair serve` subprocess:

* an aiortc WHIP publisher is a first-class live stream — LL-HLS parts that
  decode, and after `DELETE` + the reconnect window a ready VOD asset, with the
  lifecycle events in order;
* an RTMP broadcast (Debian ffmpeg) plays to an aiortc WHEP viewer;
* WHIP/WHEP refusals (400/401/403/422/404/403) while a broadcast is live leave
  it untouched;
* headless Chromium publishes from /publish/… and a second Chromium plays it on
  /watch/…/webrtc (non-black frames, advancing currentTime).

One service (and one RTMP broadcast) per module.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import jwt
import m3u8
import pytest

from tests.e2e._media import ffprobe, poll, stop_popen
from tests.e2e._service import Api, ServiceProcess, http_get, rtmp_url
from tests.e2e._webrtc import (
    CLIENT_CONFIG,
    answer_candidates,
    first_video_codec,
    increasing,
    llhls_init_and_parts,
    mean_luma,
    media_playlist,
    part_count,
    post_sdp,
    recv_frames,
    recvonly_offer,
    rtmp_broadcast,
    sdp_offer,
)
from tests.support.chromium import chromium_available, chromium_page
from tests.support.webrtc_client import delete_session, whep_play, whip_publish
from tests.webrtc._media import PatternVideoTrack, ToneAudioTrack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

FAKE_MEDIA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    # ONAIR_HOST is 127.0.0.1 (which alone implies the loopback candidate); the
    # hosts setting keeps the service's ICE sockets off the other interfaces too.
    s = ServiceProcess(
        tmp_path_factory.mktemp("webrtc_service") / "data",
        {"ONAIR_WEBRTC_LOOPBACK": "1", "ONAIR_WEBRTC_HOSTS": "127.0.0.1"},
    )
    s.start(60)
    try:
        yield s
    finally:
        if s.proc is not None:
            s.stop(15)


def _api_sync(svc: ServiceProcess, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        svc.url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {svc.admin_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=15) as r:
        return json.loads(r.read())


@dataclass
class RtmpLive:
    stream: dict[str, Any]
    playback_id: str


@pytest.fixture(scope="module")
def rtmp_live(svc: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtmpLive]:
    """One RTMP broadcast (ffmpeg testsrc2 + sine, no B-frames) live for the module."""
    ls = _api_sync(svc, "POST", "/v1/live-streams", {"reconnect_window_s": 1})
    log = tmp_path_factory.mktemp("rtmp") / "ffmpeg.log"
    proc = rtmp_broadcast(rtmp_url(svc, ls["stream_key"]), 100, log=log)
    try:
        deadline = time.monotonic() + 30
        while _api_sync(svc, "GET", f"/v1/live-streams/{ls['id']}")["status"] != "active":
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the RTMP broadcast never became active"
            time.sleep(0.2)
        yield RtmpLive(ls, ls["playback_ids"][0]["id"])
    finally:
        stop_popen(proc)


async def test_whip_broadcast_plays_as_ll_hls_and_becomes_a_ready_asset(
    svc: ServiceProcess, tmp_path: Path
) -> None:
    api = Api(svc)
    ls = await api.live_stream(reconnect_window_s=1)
    pid = ls["playback_ids"][0]["id"]
    assert ls["ingest"]["whip_url"] == f"{svc.url}/v1/whip"
    pc, location = await whip_publish(
        ls["ingest"]["whip_url"],
        ls["stream_key"],
        [PatternVideoTrack(320, 240), ToneAudioTrack()],
        CLIENT_CONFIG,
    )
    try:
        answer = pc.remoteDescription.sdp
        assert first_video_codec(answer) == "H264"
        assert "127.0.0.1" in answer_candidates(answer)
        assert location.startswith(f"{svc.url}/v1/whip/")
        live = await api.wait_stream_status(ls["id"], "active", within=30)
        asset_id = live["active_asset_id"]
        assert asset_id

        blob, codecs, _ = await llhls_init_and_parts(svc.url, pid, within=40)
        assert codecs.startswith("avc1.") and "mp4a.40.2" in codecs, codecs
        (tmp_path / "parts.mp4").write_bytes(blob)
        probe = await ffprobe(tmp_path / "parts.mp4", "-count_frames")
        streams = {s["codec_type"]: s for s in probe["streams"]}
        assert streams["video"]["codec_name"] == "h264"
        assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
        assert streams["audio"]["codec_name"] == "aac"
        assert int(streams["video"]["nb_read_frames"]) >= 15
    finally:
        status = await delete_session(location, ls["stream_key"])
        await pc.close()
    assert status == 200

    asset = await api.wait_asset(asset_id, within=40)
    assert asset["source"] == "live" and asset["live_stream_id"] == ls["id"]
    assert asset["duration_s"] > 0.5
    apid = asset["playback_ids"][0]["id"]
    status, body, _ = await http_get(f"{svc.url}/play/{apid}.m3u8")
    assert status == 200
    mv = m3u8.loads(body.decode(), uri=f"{svc.url}/play/{apid}.m3u8")
    status, body, _ = await http_get(mv.playlists[0].absolute_uri)
    assert status == 200
    vod = body.decode()
    assert vod.rstrip().endswith("#EXT-X-ENDLIST"), vod
    assert m3u8.loads(vod).segments

    stream = await api.wait_stream_status(ls["id"], "idle", within=10)
    assert stream["active_asset_id"] is None and asset_id in stream["recent_asset_ids"]

    events = await poll(
        lambda: api.events({ls["id"], asset_id}),
        lambda evs: any(e["type"] == "asset.ready" for e in evs),
        within=10,
        what="asset.ready in the event log",
    )
    types = [e["type"] for e in events if e["type"] != "asset.progress"]
    # exactly the lifecycle of an RTMP broadcast (the grant creates the asset)
    assert types == [
        "live_stream.created",
        "asset.created",
        "live_stream.connected",
        "live_stream.active",
        "live_stream.disconnected",
        "live_stream.idle",
        "asset.live_stream_completed",
        "asset.ready",
    ], types
    for rid in (ls["id"], asset_id):
        assert increasing(e["sequence"] for e in events if e["resource_id"] == rid), events
    assert increasing(e["cursor"] for e in events)


async def test_rtmp_broadcast_plays_to_an_aiortc_whep_viewer(
    svc: ServiceProcess, rtmp_live: RtmpLive
) -> None:
    pc, location = await whep_play(f"{svc.url}/v1/whep/{rtmp_live.playback_id}", CLIENT_CONFIG)
    try:
        answer = pc.remoteDescription.sdp
        assert first_video_codec(answer) == "H264"
        tracks = {t.kind: t.receiver.track for t in pc.getTransceivers()}
        frames = await _frames_after_warmup(tracks["video"])
        assert all(isinstance(f, av.VideoFrame) for f in frames)
        assert {(f.width, f.height) for f in frames} == {(640, 360)}
        assert all(mean_luma(f) > 30 for f in frames), [mean_luma(f) for f in frames]
        assert increasing(f.pts for f in frames), [f.pts for f in frames]
        audio = await recv_frames(tracks["audio"], 10, within=20)
        assert all(isinstance(f, av.AudioFrame) for f in audio)
    finally:
        status = await delete_session(location)
        await pc.close()
    assert status == 200


async def _frames_after_warmup(track: Any) -> list[av.VideoFrame]:
    await recv_frames(track, 5, within=30)  # the connection is up and the first GOP arrived
    return await recv_frames(track, 10, within=20)


async def test_refusals_do_not_disturb_a_live_broadcast(
    svc: ServiceProcess, rtmp_live: RtmpLive
) -> None:
    api = Api(svc)
    whip = f"{svc.url}/v1/whip"
    live_id = rtmp_live.stream["id"]
    before_stream = await api.ok("GET", f"/v1/live-streams/{live_id}")
    assert before_stream["status"] == "active"
    edge = part_count(await media_playlist(svc.url, rtmp_live.playback_id))

    good = await sdp_offer("video/H264")
    other = await api.live_stream(reconnect_window_s=1)
    disabled = await api.live_stream(reconnect_window_s=1)
    await api.ok("POST", f"/v1/live-streams/{disabled['id']}/disable")
    signed = await api.live_stream(reconnect_window_s=1, playback_policy="signed")
    signed_pid = signed["playback_ids"][0]["id"]
    assert signed["playback_ids"][0]["policy"] == "signed"

    live_key = rtmp_live.stream["stream_key"]
    for key in (other["stream_key"], live_key):
        status, _, body = await post_sdp(whip, "this is not sdp", token=key)
        assert status == 400, body
        assert json.loads(body)["error"]["type"] == "invalid_sdp"
    # well-formed SDP that aiortc cannot apply (no a=mid): refused before the key
    # is granted, so the live stream sees no `connected` event for it
    no_mid = re.sub(r"a=mid:\S+\r\n", "", good)
    status, _, body = await post_sdp(whip, no_mid, token=live_key)
    assert status == 400, body
    status, headers, body = await post_sdp(whip, good, token="not-a-stream-key")
    assert status == 401, body
    assert headers.get("Access-Control-Allow-Origin") == "*"  # browsers can read refusals
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    status, _, body = await post_sdp(whip, good, token=live_key + "x")
    assert status == 401, body
    status, _, body = await post_sdp(whip, good, token=disabled["stream_key"])
    assert status == 403, body
    av1_only = (await sdp_offer("video/VP8", audio=False)).replace("VP8/90000", "AV1/90000")
    for key in (other["stream_key"], live_key):
        status, _, body = await post_sdp(whip, av1_only, token=key)
        assert status == 422, body
        assert "codec" in json.loads(body)["error"]["message"]

    async with aiohttp.ClientSession() as http:  # CORS preflight for pages on other origins
        for url in (whip, f"{svc.url}/v1/whep/{rtmp_live.playback_id}"):
            preflight = {
                "Origin": "https://studio.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            }
            async with http.options(url, headers=preflight) as r:
                assert r.status in (200, 204), (url, r.status)
                assert r.headers.get("Access-Control-Allow-Origin") == "*"
                assert "POST" in r.headers.get("Access-Control-Allow-Methods", "")
                allowed = r.headers.get("Access-Control-Allow-Headers", "").lower()
                assert "authorization" in allowed and "content-type" in allowed, allowed

    offer = await recvonly_offer()
    whep_live = f"{svc.url}/v1/whep/{rtmp_live.playback_id}"
    status, _, body = await post_sdp(whep_live, "v=0\r\n")
    assert status == 400, body
    no_h264 = offer.replace("H264/90000", "H265/90000")  # VP8 (+ H.265) only
    status, _, body = await post_sdp(whep_live, no_h264)
    assert status == 422, body
    assert "H264" in json.loads(body)["error"]["message"]
    status, _, body = await post_sdp(f"{svc.url}/v1/whep/nosuchplaybackid", offer)
    assert status == 404, body
    status, _, body = await post_sdp(f"{svc.url}/v1/whep/{signed_pid}", offer)
    assert status == 403, body
    status, _, body = await post_sdp(f"{svc.url}/v1/whep/{signed_pid}", offer, token="forged")
    assert status == 403, body
    key = await api.ok("POST", "/v1/signing-keys")
    good_token = jwt.encode(
        {"sub": signed_pid, "aud": "v", "exp": int(time.time()) + 600},
        key["private_key"],
        algorithm="RS256",
        headers={"kid": key["id"]},
    )
    status, _, body = await post_sdp(f"{svc.url}/v1/whep/{signed_pid}", offer, token=good_token)
    assert status == 404, body  # the token is accepted; the stream is simply not live

    # the refused publishers left no trace on their streams
    for ls in (other, disabled):
        rec = await api.ok("GET", f"/v1/live-streams/{ls['id']}")
        assert rec["active_asset_id"] is None and rec["status"] in ("idle", "disabled")
    # the live broadcast is untouched and keeps producing parts
    after_edge = await poll(
        lambda: media_playlist(svc.url, rtmp_live.playback_id),
        lambda text: part_count(text) > edge + 3,
        within=15,
        what="new LL-HLS parts",
    )
    assert part_count(after_edge) > edge
    after_stream = await api.ok("GET", f"/v1/live-streams/{live_id}")
    assert after_stream["status"] == "active"
    assert after_stream["active_asset_id"] == before_stream["active_asset_id"]
    types = [e["type"] for e in await api.events({live_id})]
    assert types.count("live_stream.connected") == 1, types  # refused offers grant nothing
    assert "live_stream.disconnected" not in types, types


async def _session_exists(location: str, key: str) -> bool:
    """PATCH (with the key that made the session) answers 501 (no trickle ICE) for a
    live WHIP session, 404 once it is gone."""
    async with (
        aiohttp.ClientSession() as http,
        http.patch(
            location,
            data="a=end-of-candidates\r\n",
            headers={
                "Content-Type": "application/trickle-ice-sdpfrag",
                "Authorization": f"Bearer {key}",
            },
        ) as r,
    ):
        assert r.status in (404, 501), r.status
        return r.status == 501


async def test_whip_takeover_keeps_the_broadcast_and_a_key_reset_kicks_the_publisher(
    svc: ServiceProcess,
) -> None:
    api = Api(svc)
    ls = await api.live_stream(reconnect_window_s=1)
    whip = f"{svc.url}/v1/whip"
    first_pc, first = await whip_publish(
        whip, ls["stream_key"], [PatternVideoTrack()], CLIENT_CONFIG
    )
    second_pc = None
    try:
        live = await api.wait_stream_status(ls["id"], "active", within=30)
        second_pc, second = await whip_publish(
            whip, ls["stream_key"], [PatternVideoTrack()], CLIENT_CONFIG
        )
        await poll(
            lambda: _session_exists(first, ls["stream_key"]), lambda alive: not alive, within=10
        )
        assert await _session_exists(second, ls["stream_key"])
        during = await api.ok("GET", f"/v1/live-streams/{ls['id']}")
        assert during["status"] == "active"
        assert during["active_asset_id"] == live["active_asset_id"]

        reset = await api.ok("POST", f"/v1/live-streams/{ls['id']}/reset-stream-key")
        assert reset["stream_key"] != ls["stream_key"]
        await poll(
            lambda: _session_exists(second, ls["stream_key"]), lambda alive: not alive, within=10
        )
        status, _, body = await post_sdp(whip, await sdp_offer(), token=ls["stream_key"])
        assert status == 401, body
    finally:
        await first_pc.close()
        if second_pc is not None:
            await second_pc.close()
    await api.wait_stream_status(ls["id"], "idle", within=20)
    asset = await api.wait_asset(live["active_asset_id"], within=40)
    assert asset["live_stream_id"] == ls["id"]


@pytest.mark.skipif(not chromium_available(), reason="chromium not installed")
async def test_chromium_publishes_over_whip_and_another_chromium_plays_over_whep(
    svc: ServiceProcess,
) -> None:
    api = Api(svc)
    ls = await api.live_stream(reconnect_window_s=1)
    pid = ls["playback_ids"][0]["id"]
    publish_url = f"{svc.url}/publish/{ls['id']}?key={ls['stream_key']}&autostart=1"
    async with chromium_page(publish_url, extra_args=FAKE_MEDIA) as publisher:
        await publisher.wait_for(
            "window.onairPublish && window.onairPublish.state === 'live'", timeout_s=40
        )
        assert await publisher.evaluate("window.onairPublish.codec") == "H264"
        live = await api.wait_stream_status(ls["id"], "active", within=30)
        assert live["active_asset_id"]

        async with chromium_page(f"{svc.url}/watch/{pid}/webrtc") as viewer:
            await viewer.wait_for(
                # framesDecoded comes from getStats, polled apart from the picture
                "window.onairStats && window.onairStats.playing && window.onairStats.nonBlack"
                " && window.onairStats.framesDecoded > 0",
                timeout_s=40,
            )
            first = await viewer.evaluate("JSON.parse(JSON.stringify(window.onairStats))")
            await asyncio.sleep(2.0)
            stats = await viewer.evaluate("JSON.parse(JSON.stringify(window.onairStats))")
            assert stats["mode"] == "webrtc"
            assert stats["currentTime"] > first["currentTime"] + 0.5, (first, stats)
            assert stats["nonBlack"] and stats["luma"] > 16, stats
            assert stats["width"] > 0 and stats["height"] > 0, stats
            assert stats["framesDecoded"] > first["framesDecoded"] > 0, (first, stats)
            hls_link = await viewer.evaluate(
                "(document.querySelector('a[data-mode=hls]') || {}).href || ''"
            )
            assert hls_link == f"{svc.url}/watch/{pid}", hls_link
            await viewer.evaluate("window.onairStats.stop()")

            # the LL-HLS player links to the WebRTC mode and back, keeping ?token=
            await viewer.navigate(f"{svc.url}/watch/{pid}?token=t%2Bk")
            webrtc_link = await viewer.wait_for(
                "(document.querySelector('a[data-mode=webrtc]') || {}).href", timeout_s=10
            )
            assert webrtc_link == f"{svc.url}/watch/{pid}/webrtc?token=t%2Bk", webrtc_link
            await viewer.navigate(webrtc_link)
            back = await viewer.wait_for(
                "location.pathname.endsWith('/webrtc') &&"
                " (document.querySelector('a[data-mode=hls]') || {}).href",
                timeout_s=10,
            )
            assert back == f"{svc.url}/watch/{pid}?token=t%2Bk", back

        await publisher.evaluate("window.onairPublish.stop()")
        await api.wait_stream_status(ls["id"], "idle", within=20)
    asset = await api.wait_asset(live["active_asset_id"], within=40)
    assert asset["duration_s"] > 1.0
