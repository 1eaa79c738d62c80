"""Issue 6, rooms, against the real `onair serve` subprocess:

* a recorded room with two aiortc participants is a live broadcast of its
  composite while it runs — LL-HLS (parts decode as H.264 + AAC, blocking
  reload), a thumbnail, WHEP viewers — and after everyone leaves and
  `empty_timeout_s` passes it finishes into a `ready` asset with `source: room`
  whose VOD playlist ends and whose MP4 downloads; its events and Standard
  Webhooks (verified with the `standardwebhooks` package) come with one
  gap-free, increasing `sequence` per resource, in the order things happened;
* deleting a recorded room disconnects its participants and keeps the recording;
* join tokens for another room, expired or forged tokens, `can_publish: false`
  publishing and malformed signaling messages are each refused with a clear
  error, and the connection survives the malformed ones;
* three headless Chromium participants on the room page each decode the other
  two's video within 5 s and see a leaver go, with the events in order;
* a node stopped gracefully finishes its recorded rooms first (quickly, even
  with participants connected); a node killed mid-broadcast leaves rooms that
  the next node finishes (the recording as a ready asset, ``room.finished``
  with reason ``node_lost``), or that start a new recording when rejoined.

One shared service for most tests; the shutdown/kill tests run their own.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import m3u8
import pytest

from tests.e2e._media import ffmpeg_decode, ffprobe, next_part
from tests.e2e._rooms import RTC, delivered, join, publish_av, room_token, until
from tests.e2e._service import Api, ServiceProcess, http_get
from tests.e2e._webrtc import (
    CLIENT_CONFIG,
    increasing,
    llhls_init_and_parts,
    mean_luma,
    recv_frames,
)
from tests.rooms._chromium import Chromium, Page
from tests.support.room_client import RoomClient
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.webrtc_client import delete_session, whep_play

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HOOKS = "/hooks"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    s = ServiceProcess(
        tmp_path_factory.mktemp("rooms_service") / "data",
        # ONAIR_HOST=127.0.0.1 alone makes the service offer loopback candidates;
        # the hosts setting keeps its ICE sockets off the other interfaces too.
        {"ONAIR_WEBRTC_HOSTS": "127.0.0.1", "ONAIR_WEBHOOK_BACKOFF_BASE_S": "0.3"},
    )
    s.start(60)
    try:
        yield s
    finally:
        if s.proc is not None:
            s.stop(15)


@pytest.fixture
async def api(svc: ServiceProcess) -> Api:
    return Api(svc)


@pytest.fixture
async def hooks(api: Api) -> AsyncIterator[WebhookReceiver]:
    """A real receiver behind a webhook endpoint of the service (secret verified)."""
    async with WebhookReceiver() as rx:
        url = rx.url(HOOKS)
        ep = await api.ok("POST", "/v1/webhook-endpoints", {"url": url})
        assert ep["secret"].startswith("whsec_")
        rx.set(HOOKS, secret=ep["secret"])
        try:
            yield rx
        finally:
            await api.call("DELETE", f"/v1/webhook-endpoints/{ep['id']}")


async def get_room(api: Api, room_id: str) -> dict[str, Any]:
    return dict(await api.ok("GET", f"/v1/rooms/{room_id}"))


async def wait_room(api: Api, room_id: str, what: str, pred: Any, within: float) -> dict[str, Any]:
    end = time.monotonic() + within
    while True:
        room = await get_room(api, room_id)
        if pred(room):
            return room
        if time.monotonic() > end:
            raise TimeoutError(f"room {what} not within {within}s: {room}")
        await asyncio.sleep(0.1)


async def media_playlist_url(base: str, playback_id: str) -> str:
    """The media playlist URL the multivariant playlist of `playback_id` names."""
    url = f"{base}/play/{playback_id}.m3u8"
    status, body, _ = await http_get(url)
    assert status == 200, (url, status, body[:500])
    mv = m3u8.loads(body.decode(), uri=url)
    assert mv.is_variant and mv.playlists, mv.dumps()
    return str(mv.playlists[0].absolute_uri)


async def media_playlist_text(base: str, playback_id: str) -> str:
    status, body, _ = await http_get(await media_playlist_url(base, playback_id))
    assert status == 200, body[:500]
    return body.decode()


# ---------------------------------------------------------------- recorded room


async def test_recorded_room_is_live_then_a_ready_asset_with_events_in_order(
    svc: ServiceProcess, api: Api, hooks: WebhookReceiver, tmp_path: Path
) -> None:
    room = await api.ok("POST", "/v1/rooms", {"record": True, "empty_timeout_s": 2})
    rid = room["id"]
    assert room["status"] == "idle" and room["record"] is True
    assert len(room["playback_ids"]) == 1
    pid = room["playback_ids"][0]["id"]
    # Nothing to play before the room runs.
    status, _, _ = await http_get(f"{svc.url}/play/{pid}.m3u8")
    assert status == 404

    alice = await join(svc, rid, await room_token(api, rid, "alice"))
    bob = await join(svc, rid, await room_token(api, rid, "bob"))
    clients = [alice, bob]
    late_token = await room_token(api, rid, "carol")
    try:
        t_join = time.monotonic()
        await publish_av(alice)
        await publish_av(bob)
        running = await wait_room(
            api,
            rid,
            "active with a recording",
            lambda r: r["status"] == "active" and r["active_asset_id"],
            within=15,
        )
        assert running["num_participants"] == 2
        parts = await api.ok("GET", f"/v1/rooms/{rid}/participants")
        assert sorted(p["identity"] for p in parts["data"]) == ["alice", "bob"]
        assert all(len(p["tracks"]) == 2 for p in parts["data"]), parts
        # Each participant receives the other's media through the SFU.
        await until(
            lambda: all(
                {r.kind for r in c.received.values() if r.frames} == {"audio", "video"}
                for c in clients
            ),
            15,
            "media forwarded both ways",
        )

        # While it runs: a live LL-HLS playlist whose parts decode as H.264 + AAC.
        blob, codecs, text = await llhls_init_and_parts(svc.url, pid, within=30)
        assert "#EXT-X-ENDLIST" not in text and "#EXT-X-PRELOAD-HINT" in text, text
        assert "avc1" in codecs and "mp4a" in codecs, codecs
        (tmp_path / "live.mp4").write_bytes(blob)
        probe = await ffprobe(tmp_path / "live.mp4")
        kinds = {s["codec_type"]: s["codec_name"] for s in probe["streams"]}
        assert kinds == {"video": "h264", "audio": "aac"}, probe["streams"]
        await ffmpeg_decode(str(tmp_path / "live.mp4"))
        # Blocking playlist reload: asking for the next part returns once it exists.
        msn, part = next_part(text)
        media_url = await media_playlist_url(svc.url, pid)
        status, body, _ = await http_get(f"{media_url}?_HLS_msn={msn}&_HLS_part={part}", within=10)
        assert status == 200, body
        assert next_part(body.decode()) > (msn, part), body.decode()
        # ... a thumbnail of the live composite ...
        status, jpeg, _ = await http_get(f"{svc.url}/thumb/{pid}.jpg")
        assert status == 200 and jpeg[:2] == b"\xff\xd8", (status, jpeg[:200])
        # ... and WHEP viewers of the same playback id.
        pc, location = await whep_play(f"{svc.url}/v1/whep/{pid}", CLIENT_CONFIG)
        try:
            tracks = {t.kind: t.receiver.track for t in pc.getTransceivers()}
            frames = await recv_frames(tracks["video"], 3, within=20)
            assert {(f.width, f.height) for f in frames} == {(1280, 720)}
            assert max(mean_luma(f) for f in frames) > 20
        finally:
            await delete_session(location)
            await pc.close()
        await asyncio.sleep(max(0.0, 6 - (time.monotonic() - t_join)))
    finally:
        for c in clients:
            await c.close()
    t_left = time.monotonic()

    # Everyone left: after empty_timeout_s the room finishes into a ready asset.
    done = await wait_room(
        api,
        rid,
        "finished with its asset",
        lambda r: r["status"] == "finished" and r["asset_id"],
        within=20,
    )
    assert done["active_asset_id"] is None
    # A finished room takes no one: no new tokens, and old ones are turned away.
    status, body = await api.call("POST", f"/v1/rooms/{rid}/tokens", {"identity": "dave"})
    assert status == 409 and body["error"]["type"] == "room_finished", body
    s, ws = await _signal(svc, rid, late_token)
    try:
        await ws.send_str(json.dumps({"type": "join"}))
        err = await _next(ws)
        assert err["type"] == "error" and err["code"] == "room_not_found", err
    finally:
        await s.close()
    asset = await api.wait_asset(done["asset_id"], "ready", within=30)
    assert asset["source"] == "room"
    broadcast_s = t_left - t_join
    assert broadcast_s - 3 <= asset["duration_s"] <= broadcast_s + 2 + 6, (
        asset["duration_s"],
        broadcast_s,
    )
    vod = await media_playlist_text(svc.url, asset["playback_ids"][0]["id"])
    assert vod.rstrip().endswith("#EXT-X-ENDLIST"), vod
    # The room's own playback id now plays an ended playlist too.
    ended = await media_playlist_text(svc.url, pid)
    assert "#EXT-X-ENDLIST" in ended, ended
    # Its MP4 download (through the room's playback id) is the whole recording.
    await api.wait_asset(asset["id"], "ready", within=30, field="mp4_status")
    mp4 = await ffprobe(f"{svc.url}/play/{pid}/download.mp4")
    assert {s["codec_name"] for s in mp4["streams"]} == {"h264", "aac"}
    assert abs(float(mp4["format"]["duration"]) - asset["duration_s"]) < 1.5, mp4["format"]

    # Webhooks: room lifecycle in order, one increasing sequence per resource.
    got = await delivered(hooks, HOOKS, until_types={"room.finished", "asset.ready"})
    # One endpoint gets several deliveries at once, so arrival order may differ
    # from event order; `sequence` (per resource, no gaps) is what orders them.
    mine = sorted(
        (
            e
            for e in got
            if e["type"].startswith(("room.", "participant.")) and e["data"].get("room_id") == rid
        ),
        key=lambda e: e["sequence"],
    )
    assert [e["type"] for e in mine] == [
        "room.started",
        "participant.joined",
        "participant.joined",
        "participant.left",
        "participant.left",
        "room.finished",
    ], [(e["type"], e["sequence"]) for e in mine]
    seqs = [e["sequence"] for e in mine]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert sorted(e["data"]["identity"] for e in mine if e["type"] == "participant.joined") == [
        "alice",
        "bob",
    ]
    assert mine[-1]["data"]["room"]["status"] == "finished"
    of_asset = sorted(
        (e for e in got if e["data"].get("id") == asset["id"]), key=lambda e: e["sequence"]
    )
    types = [e["type"] for e in of_asset]
    assert types[0] == "asset.created" and types[-1] == "asset.ready", types
    assert increasing(e["sequence"] for e in of_asset)
    assert of_asset[0]["data"]["source"] == "room"
    # The durable event log agrees with what the webhooks delivered.
    logged = await api.events({rid})
    assert [e["type"] for e in logged] == [e["type"] for e in mine]
    assert [e["sequence"] for e in logged] == seqs


async def test_deleting_a_recorded_room_keeps_its_recording(svc: ServiceProcess, api: Api) -> None:
    room = await api.ok("POST", "/v1/rooms", {"record": True, "empty_timeout_s": 60})
    rid, pid = room["id"], room["playback_ids"][0]["id"]
    alice = await join(svc, rid, await room_token(api, rid, "alice"))
    try:
        await publish_av(alice)
        running = await wait_room(api, rid, "recording", lambda r: r["active_asset_id"], within=15)
        await llhls_init_and_parts(svc.url, pid, within=30)
        status, _ = await api.call("DELETE", f"/v1/rooms/{rid}")
        assert status == 204
        # The participant is told and disconnected.
        err = await alice.wait_for(lambda m: m["type"] == "error")
        assert err["code"] == "room_closed", err
    finally:
        await alice.close()
    status, _ = await api.call("GET", f"/v1/rooms/{rid}")
    assert status == 404
    # The room's playback id goes with it; the recording stays, as a ready asset.
    status, _, _ = await http_get(f"{svc.url}/play/{pid}.m3u8")
    assert status == 404
    asset = await api.wait_asset(running["active_asset_id"], "ready", within=20)
    assert asset["source"] == "room" and asset["duration_s"] > 0
    types = [e["type"] for e in await api.events({rid})]
    assert types == ["room.started", "participant.joined", "participant.left", "room.finished"], (
        types
    )


# ---------------------------------------------------------------- refusals


async def _signal(
    svc: ServiceProcess, room_id: str, token: str
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    s = aiohttp.ClientSession()
    ws = await s.ws_connect(f"{svc.url}/v1/rooms/{room_id}/signal?token={token}")
    return s, ws


async def _next(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=10)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return dict(json.loads(msg.data))


async def test_refusals_are_clear_errors(svc: ServiceProcess, api: Api) -> None:
    a = await api.ok("POST", "/v1/rooms", {"empty_timeout_s": 30})
    b = await api.ok("POST", "/v1/rooms", {"empty_timeout_s": 30})

    # A token for another room: one error message, then the socket closes (4403).
    s, ws = await _signal(svc, b["id"], await room_token(api, a["id"], "mallory"))
    try:
        err = await _next(ws)
        assert err["type"] == "error" and err["code"] == "token_other_room", err
        closed = await ws.receive(timeout=10)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 4403
    finally:
        await s.close()

    # An expired token.
    expiring = await room_token(api, a["id"], "late", ttl_s=1)
    await asyncio.sleep(2.1)
    s, ws = await _signal(svc, a["id"], expiring)
    try:
        err = await _next(ws)
        assert err["code"] == "token_expired", err
        await ws.receive(timeout=10)
        assert ws.close_code == 4403
    finally:
        await s.close()

    # A forged token.
    s, ws = await _signal(svc, a["id"], "eyJhbGciOiJIUzI1NiJ9.e30.forged")
    try:
        assert (await _next(ws))["code"] == "token_invalid"
    finally:
        await s.close()

    # Malformed messages: each answered with an error, the connection stays up.
    s, ws = await _signal(svc, a["id"], await room_token(api, a["id"], "fuzz"))
    try:
        await ws.send_str(json.dumps({"type": "subscribe", "track_ids": ["TR_x"]}))
        assert (await _next(ws))["code"] == "not_joined"
        await ws.send_str(json.dumps({"type": "join"}))
        joined = await _next(ws)
        assert joined["type"] == "joined" and joined["identity"] == "fuzz"
        for bad, code in [
            ("this is not json", "bad_message"),
            ("[1, 2]", "bad_message"),
            (json.dumps({"type": "teleport"}), "unknown_type"),
            (json.dumps({"type": "publish", "tracks": "all"}), "bad_message"),
            (json.dumps({"type": "offer", "pc": "publish", "sdp": 42}), "bad_message"),
            (json.dumps({"type": "mute", "track_id": "TR_nope", "muted": True}), "unknown_track"),
        ]:
            await ws.send_str(bad)
            err = await _next(ws)
            assert err["type"] == "error" and err["code"] == code and err["message"], (bad, err)
        await ws.send_bytes(b"\x00\x01")
        assert (await _next(ws))["code"] == "bad_message"
        await ws.send_str(json.dumps({"type": "offer", "pc": "publish", "sdp": "x" * 50_000}))
        assert (await _next(ws))["code"] == "bad_message"
        # Still in the room.
        listed = await api.ok("GET", f"/v1/rooms/{a['id']}/participants")
        assert [p["identity"] for p in listed["data"]] == ["fuzz"]
        # Over the 64 KiB message limit: the socket is closed with 1009 (too big).
        await ws.send_str(json.dumps({"type": "leave", "pad": "x" * 70_000}))
        closed = await ws.receive(timeout=10)
        assert closed.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1009, closed
    finally:
        await s.close()

    # can_publish: false may join and watch, not publish.
    viewer = RoomClient(
        svc.url, a["id"], await room_token(api, a["id"], "viewer", can_publish=False), rtc=RTC
    )
    try:
        joined = await viewer.connect()
        assert joined["type"] == "joined" and joined["can_publish"] is False, joined
        await viewer.send(
            {"type": "publish", "tracks": [{"mid": "0", "kind": "video", "source": "camera"}]}
        )
        err = await viewer.wait_for(lambda m: m["type"] == "error")
        assert err["code"] == "forbidden" and "can_publish" in err["message"], err
        await viewer.send({"type": "offer", "pc": "publish", "sdp": "v=0\r\nm=video 9 x\r\n"})
        err = await viewer.wait_for(lambda m: m["type"] == "error")
        assert err["code"] == "forbidden", err
        listed = await api.ok("GET", f"/v1/rooms/{a['id']}/participants")
        assert {p["identity"]: p["tracks"] for p in listed["data"]}.get("viewer") == []
    finally:
        await viewer.close()

    # The API refuses tokens it cannot issue.
    status, body = await api.call(
        "POST", f"/v1/rooms/{a['id']}/tokens", {"identity": "no spaces allowed"}
    )
    assert status == 422 and body["error"]["param"] == "identity", body
    status, body = await api.call("POST", "/v1/rooms/rm_missing/tokens", {"identity": "x"})
    assert status == 404, body
    await api.ok("DELETE", f"/v1/rooms/{a['id']}")
    await api.ok("DELETE", f"/v1/rooms/{b['id']}")


# ---------------------------------------------------------------- browsers


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium")
async def test_three_browsers_see_each_other_and_a_leaver_goes(
    svc: ServiceProcess, api: Api, hooks: WebhookReceiver
) -> None:
    room = await api.ok("POST", "/v1/rooms", {"empty_timeout_s": 5})
    rid = room["id"]
    names = ["ann", "ben", "cat"]
    browser = Chromium()
    await browser.start()
    pages: dict[str, Page] = {}
    try:
        for n in names:
            tok = await api.ok("POST", f"/v1/rooms/{rid}/tokens", {"identity": n})
            assert re.search(rf"/rooms/{rid}\?token=", tok["join_url"]), tok
            pages[n] = await browser.new_page(tok["join_url"] + "&video=320x240")

        async def count() -> int:
            return len((await api.ok("GET", f"/v1/rooms/{rid}/participants"))["data"])

        end = time.monotonic() + 20
        while await count() < 3:
            assert time.monotonic() < end, "browsers did not join"
            await asyncio.sleep(0.1)

        # Each decodes the other two's video (non-black, advancing) within 5 s.
        t0 = time.monotonic()
        first: dict[str, dict[str, float]] = {}
        ok: set[str] = set()
        last: dict[str, Any] = {}
        while len(ok) < 3:
            assert time.monotonic() - t0 < 5.0, f"not all decoding after 5 s: {ok} {last}"
            for n, p in pages.items():
                if n in ok:
                    continue
                s = last[n] = await p.evaluate(
                    "window.onairRoom ? window.onairRoom.videoStats() : {}"
                )
                others = [o for o in names if o != n]
                if all(o in s and s[o]["playing"] and s[o]["nonBlack"] for o in others):
                    prev = first.setdefault(n, {o: s[o]["currentTime"] for o in others})
                    if all(s[o]["currentTime"] > prev[o] for o in others):
                        ok.add(n)
            await asyncio.sleep(0.2)

        # cat leaves: the others' pages drop the tile, the API forgets cat.
        await pages["cat"].evaluate("window.onairRoom.leave()")
        t1 = time.monotonic()
        for n in ("ann", "ben"):
            while "cat" in (parts := await pages[n].evaluate("window.onairRoom.participants")):
                assert time.monotonic() - t1 < 5, parts
                await asyncio.sleep(0.1)
            assert sorted(parts) == sorted({"ann", "ben"} - {n})
        listed = await api.ok("GET", f"/v1/rooms/{rid}/participants")
        assert sorted(p["identity"] for p in listed["data"]) == ["ann", "ben"]
    finally:
        for p in pages.values():
            await p.close()
        await browser.close()

    # The events, in the log and as verified webhooks, in order.
    expected = [
        "room.started",
        "participant.joined",
        "participant.joined",
        "participant.joined",
        "participant.left",
    ]
    logged = await api.events({rid})
    assert [e["type"] for e in logged][:5] == expected, [e["type"] for e in logged]
    assert logged[4]["data"]["identity"] == "cat"
    assert sorted(e["data"]["identity"] for e in logged[1:4]) == names
    got = await delivered(hooks, HOOKS, until_types={"participant.left"})
    mine = sorted(
        (
            e
            for e in got
            if e["type"].startswith(("room.", "participant.")) and e["data"].get("room_id") == rid
        ),
        key=lambda e: e["sequence"],
    )
    assert [e["type"] for e in mine][:5] == expected
    assert [e["sequence"] for e in mine][:5] == [e["sequence"] for e in logged][:5]
    await api.ok("DELETE", f"/v1/rooms/{rid}")


# ---------------------------------------------------------------- shutdown


async def test_graceful_shutdown_finishes_a_recorded_room_into_its_asset(
    tmp_path: Path,
) -> None:
    own = ServiceProcess(
        tmp_path / "data",
        {
            "ONAIR_WEBRTC_HOSTS": "127.0.0.1",
            "ONAIR_SHUTDOWN_TIMEOUT_S": "10",
        },
    )
    await asyncio.to_thread(own.start, 60)
    api = Api(own)
    try:
        room = await api.ok("POST", "/v1/rooms", {"record": True, "empty_timeout_s": 60})
        rid = room["id"]
        alice = await join(own, rid, await room_token(api, rid, "alice"))
        try:
            await publish_av(alice)
            await wait_room(api, rid, "recording", lambda r: r["active_asset_id"], within=15)
            await llhls_init_and_parts(own.url, room["playback_ids"][0]["id"], within=30)
            # SIGTERM with a participant connected: the node finishes its rooms
            # first, so the open signaling socket does not hold the shutdown up.
            t0 = time.monotonic()
            code = await asyncio.to_thread(own.stop, 30)
            took = time.monotonic() - t0
        finally:
            await alice.close()
        assert code == 0, own.logs()[-3000:]
        assert took < 8, took
        await asyncio.to_thread(own.start, 60)
        done = await get_room(api, rid)
        assert done["status"] == "finished" and done["asset_id"], done
        assert done["active_asset_id"] is None
        asset = await api.ok("GET", f"/v1/assets/{done['asset_id']}")
        assert asset["status"] == "ready" and asset["source"] == "room", asset
        types = [e["type"] for e in await api.events({rid})]
        assert types == [
            "room.started",
            "participant.joined",
            "participant.left",
            "room.finished",
        ], types
    finally:
        if own.proc is not None:
            await asyncio.to_thread(own.stop, 15)


async def test_a_killed_node_s_recorded_room_is_finished_after_restart(tmp_path: Path) -> None:
    own = ServiceProcess(tmp_path / "data", {"ONAIR_WEBRTC_HOSTS": "127.0.0.1"})
    await asyncio.to_thread(own.start, 60)
    api = Api(own)
    try:
        room = await api.ok("POST", "/v1/rooms", {"record": True, "empty_timeout_s": 60})
        rid = room["id"]
        alice = await join(own, rid, await room_token(api, rid, "alice"))
        try:
            await publish_av(alice)
            running = await wait_room(
                api, rid, "recording", lambda r: r["active_asset_id"], within=15
            )
            # a few segments are stored before the node dies
            await llhls_init_and_parts(own.url, room["playback_ids"][0]["id"], within=30)
            await asyncio.sleep(2)
            await asyncio.to_thread(own.kill)
        finally:
            await alice.close()
        await asyncio.to_thread(own.start, 60)
        # The room's lease lapses; the new node finishes the room and its recording.
        done = await wait_room(
            api,
            rid,
            "finished after the restart",
            lambda r: r["status"] == "finished" and r["asset_id"],
            within=30,
        )
        assert done["asset_id"] == running["active_asset_id"] and done["active_asset_id"] is None
        asset = await api.wait_asset(done["asset_id"], "ready", within=15)
        assert asset["source"] == "room" and asset["duration_s"] > 1, asset
        events = await api.events({rid})
        assert events[-1]["type"] == "room.finished", [e["type"] for e in events]
        assert events[-1]["data"]["reason"] == "node_lost"
        assert increasing(e["sequence"] for e in events)
        vod = await media_playlist_text(own.url, asset["playback_ids"][0]["id"])
        assert vod.rstrip().endswith("#EXT-X-ENDLIST")
    finally:
        if own.proc is not None:
            await asyncio.to_thread(own.stop, 15)


async def test_rejoining_a_killed_node_s_room_starts_a_new_recording(tmp_path: Path) -> None:
    own = ServiceProcess(tmp_path / "data", {"ONAIR_WEBRTC_HOSTS": "127.0.0.1"})
    await asyncio.to_thread(own.start, 60)
    api = Api(own)
    try:
        room = await api.ok("POST", "/v1/rooms", {"record": True, "empty_timeout_s": 1})
        rid = room["id"]
        alice = await join(own, rid, await room_token(api, rid, "alice"))
        try:
            await publish_av(alice)
            first = await wait_room(
                api, rid, "recording", lambda r: r["active_asset_id"], within=15
            )
            await llhls_init_and_parts(own.url, room["playback_ids"][0]["id"], within=30)
            await asyncio.to_thread(own.kill)
        finally:
            await alice.close()
        await asyncio.to_thread(own.start, 60)
        # Someone joins again before anything noticed the old node is gone.
        bob = await join(own, rid, await room_token(api, rid, "bob"))
        try:
            await publish_av(bob)
            second = await wait_room(
                api,
                rid,
                "recording again",
                lambda r: r["active_asset_id"] not in (None, first["active_asset_id"]),
                within=15,
            )
            # The interrupted recording is finished from what was stored.
            old = await api.wait_asset(first["active_asset_id"], "ready", within=15)
            assert old["source"] == "room" and old["duration_s"] > 0
        finally:
            await bob.close()
        done = await wait_room(
            api, rid, "finished", lambda r: r["status"] == "finished" and r["asset_id"], within=20
        )
        assert done["asset_id"] == second["active_asset_id"]
        new = await api.wait_asset(done["asset_id"], "ready", within=15)
        assert new["source"] == "room"
    finally:
        if own.proc is not None:
            await asyncio.to_thread(own.stop, 15)
