"""The signaling WebSocket: tokens checked first, every refusal is an `error`
message, the connection survives malformed input, and room events come in order."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from realtime.rooms.rtc import RtcSettings
from realtime.rooms.tokens import JoinTokens
from tests.support.room_client import EncodedSource, RoomClient, encode_h264, encode_opus

from .conftest import RoomServer

RTC = RtcSettings.loopback()


async def _ws(
    srv: RoomServer, room: str, token: str
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    s = aiohttp.ClientSession()
    ws = await s.ws_connect(f"{srv.base_url}/v1/rooms/{room}/signal?token={token}")
    return s, ws


async def _recv(ws: aiohttp.ClientWebSocketResponse) -> dict:  # type: ignore[type-arg]
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("make", "code", "close"),
    [
        (lambda t: t.issue("RM_b", "alice"), "token_other_room", 4403),
        (lambda t: JoinTokens("f" * 40).issue("RM_a", "alice"), "token_invalid", 4401),
        (lambda t: "", "token_invalid", 4401),
        (
            lambda t: JoinTokens(t._key, clock=lambda: time.time() - 100).issue(
                "RM_a", "a", ttl_s=10
            ),
            "token_expired",
            4403,
        ),
    ],
)
async def test_bad_tokens_are_refused_with_a_reason(
    room_server: RoomServer, make, code: str, close: int
) -> None:  # type: ignore[no-untyped-def]
    s, ws = await _ws(room_server, "RM_a", make(room_server.tokens))
    try:
        msg = await _recv(ws)
        assert msg["type"] == "error" and msg["code"] == code and msg["message"]
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == close
    finally:
        await ws.close()
        await s.close()


async def test_error_message_names_the_token_problem(room_server: RoomServer) -> None:
    s, ws = await _ws(room_server, "RM_a", room_server.tokens.issue("RM_b", "alice"))
    try:
        msg = await _recv(ws)
        assert msg["type"] == "error" and msg["code"] == "token_other_room"
        assert "another room" in msg["message"]
    finally:
        await ws.close()
        await s.close()


async def test_plain_http_without_token_gets_403(room_server: RoomServer) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{room_server.base_url}/v1/rooms/RM_a/signal") as r:
            assert r.status == 403
            assert (await r.json())["code"] == "token_invalid"


async def test_malformed_messages_get_errors_and_the_connection_survives(
    room_server: RoomServer,
) -> None:
    s, ws = await _ws(room_server, "RM_a", room_server.token("RM_a", "alice"))
    try:
        await ws.send_str('{"type":"mute","track_id":"x","muted":true}')
        assert (await _recv(ws))["code"] == "not_joined"
        await ws.send_str('{"type":"join"}')
        assert (await _recv(ws))["type"] == "joined"
        for bad, code in [
            ("nonsense", "bad_message"),
            ('{"type":"x"}', "unknown_type"),
            ('{"type":"join"}', "already_joined"),
            ('{"type":"mute","track_id":"TR_x","muted":true}', "unknown_track"),
            ('{"type":"answer","pc":"subscribe","sdp":"v=0\\r\\n"}', "unexpected_answer"),
            ('{"type":"offer","pc":"publish","sdp":"v=0\\r\\ngarbage"}', "bad_offer"),
        ]:
            await ws.send_str(bad)
            msg = await _recv(ws)
            assert msg["type"] == "error" and msg["code"] == code, (bad, msg)
        await ws.send_bytes(b"\x00")
        assert (await _recv(ws))["code"] == "bad_message"
        # still alive and joined
        assert [p["identity"] for p in room_server.service.participants("RM_a")] == ["alice"]
    finally:
        await ws.close()
        await s.close()


async def test_oversized_message_closes_only_that_connection(room_server: RoomServer) -> None:
    s, ws = await _ws(room_server, "RM_a", room_server.token("RM_a", "alice"))
    try:
        await ws.send_str('{"type":"join"}')
        await _recv(ws)
        await ws.send_str("x" * 200_000)
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        await ws.close()
        await s.close()
    await asyncio.sleep(0.2)
    assert room_server.service.participants("RM_a") == []


@pytest.mark.e2e
async def test_can_publish_false_trying_to_publish_is_refused(room_server: RoomServer) -> None:
    c = RoomClient(
        room_server.base_url,
        "RM_a",
        room_server.token("RM_a", "viewer", can_publish=False),
        rtc=RTC,
    )
    try:
        joined = await c.connect()
        assert joined["can_publish"] is False
        ans = await c.publish([(EncodedSource("audio", encode_opus(5), 48000), "microphone")])
        assert ans["type"] == "error" and ans["code"] == "forbidden"
        assert "can_publish" in ans["message"]
    finally:
        await c.close()


async def test_room_full_and_unknown_room(room_server: RoomServer) -> None:
    sessions = []
    try:
        for who in ("a", "b"):
            s, ws = await _ws(room_server, "RM_b", room_server.token("RM_b", who))
            sessions.append((s, ws))
            await ws.send_str('{"type":"join"}')
            assert (await _recv(ws))["type"] == "joined"
        s, ws = await _ws(room_server, "RM_b", room_server.token("RM_b", "c"))
        sessions.append((s, ws))
        await ws.send_str('{"type":"join"}')
        assert (await _recv(ws))["code"] == "room_full"
        s, ws = await _ws(room_server, "RM_zz", room_server.token("RM_zz", "c"))
        sessions.append((s, ws))
        await ws.send_str('{"type":"join"}')
        assert (await _recv(ws))["code"] == "room_not_found"
    finally:
        for s, ws in sessions:
            await ws.close()
            await s.close()


async def test_events_in_order_and_empty_room_finishes(room_server: RoomServer) -> None:
    srv = room_server
    a = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "alice"), rtc=RTC)
    b = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "bob"), rtc=RTC)
    await a.connect()
    await b.connect()
    await a.wait_for(lambda m: m["type"] == "participant_joined")
    assert a.participants == {"bob"}
    await b.close()
    left = await a.wait_for(lambda m: m["type"] == "participant_left")
    assert left == {"type": "participant_left", "identity": "bob", "reason": "left"}
    await a.close()
    for _ in range(50):  # empty_timeout_s is 1
        if "RM_a" not in srv.service.rooms:
            break
        await asyncio.sleep(0.1)
    await srv.service.drain_events()
    assert srv.events.types() == [
        "room.started:",
        "participant.joined:alice",
        "participant.joined:bob",
        "participant.left:bob",
        "participant.left:alice",
        "room.finished:",
    ]
    assert srv.events.events[-1].reason == "empty_timeout"  # type: ignore[union-attr]


async def test_removing_a_participant_and_closing_the_room(room_server: RoomServer) -> None:
    srv = room_server
    a = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "alice"), rtc=RTC)
    b = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "bob"), rtc=RTC)
    try:
        await a.connect()
        await b.connect()
        assert await srv.service.remove_participant("RM_a", "bob")
        err = await b.wait_for(lambda m: m["type"] == "error")
        assert err["code"] == "removed"
        assert (await a.wait_for(lambda m: m["type"] == "participant_left"))["reason"] == "removed"
        assert await srv.service.close_room("RM_a")
        assert (await a.wait_for(lambda m: m["type"] == "error"))["code"] == "room_closed"
        await srv.service.drain_events()
        assert srv.events.types()[-2:] == ["participant.left:alice", "room.finished:"]
    finally:
        await a.close()
        await b.close()


@pytest.mark.e2e
async def test_a_vanished_publisher_is_announced_within_seconds(room_server: RoomServer) -> None:
    srv = room_server
    pub = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "alice"), rtc=RTC)
    sub = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "bob"), rtc=RTC)
    srv.service.media_timeout_s = 2.0
    try:
        await pub.connect()
        await sub.connect()
        await pub.publish([(EncodedSource("video", encode_h264(30), 90000), "camera")])
        await sub.wait_for(lambda m: m["type"] == "track_published")
        # The publisher's media stops without a goodbye (its WebSocket stays open).
        assert pub.pub_pc is not None
        t0 = time.monotonic()
        for tr in pub.pub_pc.getTransceivers():
            assert tr.sender.track is not None
            tr.sender.track.stop()
        left = await sub.wait_for(lambda m: m["type"] == "participant_left", timeout_s=8)
        assert left["identity"] == "alice" and left["reason"] == "disconnected"
        assert time.monotonic() - t0 < 5
    finally:
        await pub.close()
        await sub.close()


async def test_can_subscribe_false_cannot_subscribe(room_server: RoomServer) -> None:
    s, ws = await _ws(
        room_server, "RM_a", room_server.tokens.issue("RM_a", "bot", can_subscribe=False)
    )
    try:
        await ws.send_str('{"type":"join"}')
        joined = await _recv(ws)
        assert joined["can_subscribe"] is False
        await ws.send_str('{"type":"subscribe","track_ids":["TR_x"]}')
        err = await _recv(ws)
        assert err["type"] == "error" and err["code"] == "forbidden"
    finally:
        await ws.close()
        await s.close()
