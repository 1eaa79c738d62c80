"""`/v1/rooms` over the real app: rooms as store records, join tokens that the
signaling WebSocket accepts, participants, removal, deletion, and the room
events committed in order with their state changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from control.domain.api_keys import create_api_key
from control.http.app import NODE, make_http_app
from control.http.routes import rooms
from control.node import build_node
from control.rooms import Rooms
from control.settings import load_settings
from tests.support.room_client import RoomClient
from tests.support.stores import make_store


class Api:
    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.key = key

    @property
    def base_url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def call(
        self, method: str, path: str, json: Any = None, key: str | None = None
    ) -> tuple[int, Any]:
        async with self.client.request(
            method, path, json=json, headers={"Authorization": f"Bearer {key or self.key}"}
        ) as r:
            body = await r.json() if r.content_type == "application/json" else None
            return r.status, body


def _rooms(api: Api) -> Rooms:
    media = api.client.app[NODE].media
    assert media is not None
    return media.rooms


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = make_store("sqlite", tmp_path)
    await store.open()
    settings = load_settings(
        {},
        data_dir=str(tmp_path / "data"),
        access_log=False,
        public_url="http://127.0.0.1:1",
        host="127.0.0.1",
        rtmp_port=0,
        srt_port=0,
    )
    node = build_node(settings, store=store)
    client = TestClient(TestServer(make_http_app(node), host="127.0.0.1"))
    await client.start_server()
    _, key = await create_api_key(node.store, "write", "rooms test")
    yield Api(client, key)
    await client.close()
    await store.close()


async def events(api: Api, room_id: str) -> list[tuple[str, str, int]]:
    store = api.client.app[NODE].store
    out = []
    for e in await store.events_after(0, 1000):
        if e.resource_id == room_id:
            out.append((e.type, e.data.get("identity", ""), e.sequence))
    return out


async def test_create_get_list_and_token(api: Api) -> None:
    status, room = await api.call("POST", "/v1/rooms", {"name": "standup", "max_participants": 4})
    assert status == 201
    assert room["status"] == "idle" and room["max_participants"] == 4
    assert room["record"] is False and room["id"].startswith("rm_")
    assert (await api.call("GET", f"/v1/rooms/{room['id']}"))[1]["name"] == "standup"
    status, page = await api.call("GET", "/v1/rooms")
    assert status == 200 and [r["id"] for r in page["data"]] == [room["id"]]
    status, tok = await api.call(
        "POST",
        f"/v1/rooms/{room['id']}/tokens",
        {"identity": "alice", "can_publish": False, "ttl_s": 60},
    )
    assert status == 201 and tok["token"].count(".") == 2
    grant = _rooms(api).tokens.verify(tok["token"], room["id"])
    assert grant.identity == "alice" and grant.can_publish is False


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_participants": 0}, "max_participants"),
        ({"record": "yes"}, "record"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_room_bodies_are_422(api: Api, body: dict[str, Any], param: str) -> None:
    status, err = await api.call("POST", "/v1/rooms", body)
    assert status == 422 and err["error"]["param"] == param


async def test_bad_token_requests(api: Api) -> None:
    _, room = await api.call("POST", "/v1/rooms", {})
    status, err = await api.call("POST", f"/v1/rooms/{room['id']}/tokens", {"identity": "a b"})
    assert status == 422 and err["error"]["param"] == "identity"
    status, _ = await api.call("POST", "/v1/rooms/rm_nope/tokens", {"identity": "a"})
    assert status == 404


async def test_scopes_apply(api: Api) -> None:
    store = api.client.app[NODE].store
    _, read_key = await create_api_key(store, "read", "ro")
    assert (await api.call("POST", "/v1/rooms", {}, key=read_key))[0] == 403
    assert (await api.call("GET", "/v1/rooms", key=read_key))[0] == 200


async def test_participants_lifecycle_and_ordered_events(api: Api) -> None:
    _, room = await api.call("POST", "/v1/rooms", {"empty_timeout_s": 1})
    rid = room["id"]
    clients = []
    for who in ("alice", "bob"):
        _, tok = await api.call("POST", f"/v1/rooms/{rid}/tokens", {"identity": who})
        c = RoomClient(api.base_url, rid, tok["token"])
        assert (await c.connect())["type"] == "joined"
        clients.append(c)
    status, parts = await api.call("GET", f"/v1/rooms/{rid}/participants")
    assert status == 200 and sorted(p["identity"] for p in parts["data"]) == ["alice", "bob"]
    assert (await api.call("GET", f"/v1/rooms/{rid}"))[1]["num_participants"] == 2

    assert (await api.call("DELETE", f"/v1/rooms/{rid}/participants/bob"))[0] == 204
    assert (await api.call("DELETE", f"/v1/rooms/{rid}/participants/bob"))[0] == 404
    await clients[0].wait_for(lambda m: m["type"] == "participant_left")
    await clients[0].close()
    await clients[1].close()

    deadline = time.monotonic() + 6
    while (await api.call("GET", f"/v1/rooms/{rid}"))[1]["status"] != "finished":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    got = await events(api, rid)
    assert [(t, i) for t, i, _ in got] == [
        ("room.started", ""),
        ("participant.joined", "alice"),
        ("participant.joined", "bob"),
        ("participant.left", "bob"),
        ("participant.left", "alice"),
        ("room.finished", ""),
    ]
    assert [s for _, _, s in got] == list(range(1, 7))
    # A finished room takes no new tokens and no joins.
    assert (await api.call("POST", f"/v1/rooms/{rid}/tokens", {"identity": "c"}))[0] == 409


async def test_delete_disconnects_everyone(api: Api) -> None:
    _, room = await api.call("POST", "/v1/rooms", {})
    rid = room["id"]
    _, tok = await api.call("POST", f"/v1/rooms/{rid}/tokens", {"identity": "alice"})
    c = RoomClient(api.base_url, rid, tok["token"])
    try:
        await c.connect()
        assert (await api.call("DELETE", f"/v1/rooms/{rid}"))[0] == 204
        assert (await c.wait_for(lambda m: m["type"] == "error"))["code"] == "room_closed"
        assert (await api.call("GET", f"/v1/rooms/{rid}"))[0] == 404
        assert [t for t, _, _ in await events(api, rid)] == [
            "room.started",
            "participant.joined",
            "participant.left",
            "room.finished",
        ]
    finally:
        await c.close()


def test_openapi_fragment_names_every_route() -> None:
    paths = rooms.OPENAPI["paths"]
    assert set(paths) == {
        "/v1/rooms",
        "/v1/rooms/{id}",
        "/v1/rooms/{id}/participants",
        "/v1/rooms/{id}/participants/{identity}",
        "/v1/rooms/{id}/tokens",
    }
    assert set(rooms.OPENAPI["components"]["schemas"]) == {"Room", "RoomParticipant", "RoomToken"}


async def test_served_openapi_includes_rooms(api: Api) -> None:
    async with api.client.get("/v1/openapi.json") as r:
        assert r.status == 200
        doc = await r.json()
    assert "/v1/rooms/{id}/tokens" in doc["paths"]
    assert "Room" in doc["components"]["schemas"]


async def test_a_removed_participant_stays_out_with_the_same_token(api: Api) -> None:
    _, room = await api.call("POST", "/v1/rooms", {})
    rid = room["id"]
    _, tok = await api.call("POST", f"/v1/rooms/{rid}/tokens", {"identity": "mallory"})
    first = RoomClient(api.base_url, rid, tok["token"])
    assert (await first.connect())["type"] == "joined"
    assert (await api.call("DELETE", f"/v1/rooms/{rid}/participants/mallory"))[0] == 204
    await first.close()
    again = RoomClient(api.base_url, rid, tok["token"])
    try:
        answer = await again.connect()
        assert answer["type"] == "error" and answer["code"] == "participant_removed"
    finally:
        await again.close()
    _, parts = await api.call("GET", f"/v1/rooms/{rid}/participants")
    assert parts["data"] == []
    # a token issued after the removal lets them back in (the operator's call)
    await asyncio.sleep(1.05)
    _, fresh = await api.call("POST", f"/v1/rooms/{rid}/tokens", {"identity": "mallory"})
    back = RoomClient(api.base_url, rid, fresh["token"])
    try:
        assert (await back.connect())["type"] == "joined"
    finally:
        await back.close()


async def test_a_socket_that_never_joins_is_closed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiohttp

    from realtime.rooms import ws as signaling_ws

    monkeypatch.setattr(signaling_ws, "JOIN_TIMEOUT_S", 0.5)
    _, room = await api.call("POST", "/v1/rooms", {})
    _, tok = await api.call("POST", f"/v1/rooms/{room['id']}/tokens", {"identity": "idle"})
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(
            f"{api.base_url}/v1/rooms/{room['id']}/signal?token={tok['token']}", heartbeat=1
        )
        t0 = time.monotonic()
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.TEXT and '"join_timeout"' in msg.data
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 4408 and time.monotonic() - t0 < 3


async def test_rooms_take_a_playback_policy(api: Api) -> None:
    status, room = await api.call(
        "POST", "/v1/rooms", {"record": True, "playback_policy": "signed"}
    )
    assert status == 201 and room["playback_policy"] == "signed"
    assert [p["policy"] for p in room["playback_ids"]] == ["signed"]
    store = api.client.app[NODE].store
    rec = await store.get("playback_ids", room["playback_ids"][0]["id"])
    assert rec is not None and rec.data["policy"] == "signed"
    _, public = await api.call("POST", "/v1/rooms", {"record": True})
    assert public["playback_policy"] == "public"
    status, body = await api.call("POST", "/v1/rooms", {"playback_policy": "secret"})
    assert body["error"]["param"] == "playback_policy"
    assert status == 422
