"""Rooms on any node: a room is hosted by the node its first participant
reached; a participant whose signaling socket reaches another node is relayed
to the host and is in the same room; the participant calls of the API work
from any node; when the host died, the node a participant reaches next hosts
the room (two media nodes on one Redis, each with its own connections)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from control.http.app import NODE
from control.rooms import room_host_key
from tests.control.test_edge import Service
from tests.control.test_relay import nodes, point_registry_at  # noqa: F401
from tests.support.room_client import RoomClient

pytestmark = pytest.mark.redis


async def token(svc: Service, room_id: str, identity: str) -> str:
    return str(
        (await svc.api("POST", f"/v1/rooms/{room_id}/tokens", {"identity": identity}))["token"]
    )


async def test_a_participant_reaching_another_node_joins_the_room_on_its_host(
    nodes: tuple[Service, Service],  # noqa: F811
) -> None:
    a, b = nodes
    await point_registry_at(a)
    await point_registry_at(b)
    room = await a.api("POST", "/v1/rooms", {})
    rid = room["id"]
    alice = RoomClient(a.base, rid, await token(a, rid, "alice"))
    bob = RoomClient(b.base, rid, await token(b, rid, "bob"))
    try:
        assert (await alice.connect())["type"] == "joined"  # A hosts the room now
        assert await a.app[NODE].store.kv_get(room_host_key(rid)) == "node-a"
        joined = await bob.connect()  # through B, relayed to A
        assert joined["type"] == "joined" and "alice" in bob.participants
        await alice.wait_for(
            lambda m: m["type"] == "participant_joined" and m["participant"]["identity"] == "bob"
        )
        media_a, media_b = a.app[NODE].media, b.app[NODE].media
        assert media_a is not None and media_b is not None
        assert rid in media_a.rooms.service.rooms and rid not in media_b.rooms.service.rooms

        # the API's participant calls work from the node that does not host it
        listed = await b.api("GET", f"/v1/rooms/{rid}/participants")
        assert sorted(p["identity"] for p in listed["data"]) == ["alice", "bob"]
        await b.api("DELETE", f"/v1/rooms/{rid}/participants/bob")
        await alice.wait_for(
            lambda m: m["type"] == "participant_left" and m.get("identity") == "bob"
        )
        listed = await b.api("GET", f"/v1/rooms/{rid}/participants")
        assert [p["identity"] for p in listed["data"]] == ["alice"]
    finally:
        await bob.close()
        await alice.close()


async def test_a_room_whose_host_died_is_taken_over_by_the_node_a_participant_reaches(
    nodes: tuple[Service, Service],  # noqa: F811
) -> None:
    """A's process is gone but its alive key has not lapsed (it is reached at an
    address nobody listens on): a participant reconnecting through B gets the
    room again, hosted by B, and whoever comes next joins it there."""
    from tests.control.api.service_process import free_port

    a, b = nodes
    await point_registry_at(b)
    registry_a = a.app[NODE].registry
    registry_a.url = f"http://127.0.0.1:{free_port()}"  # nothing answers there
    await registry_a.beat()
    room = await a.api("POST", "/v1/rooms", {})
    rid = room["id"]
    store = a.app[NODE].store
    await store.kv_set(room_host_key(rid), "node-a", ttl_s=30)  # A hosted it when it died

    bob = RoomClient(b.base, rid, await token(b, rid, "bob"))
    dave = RoomClient(b.base, rid, await token(b, rid, "dave"))
    try:
        assert (await bob.connect())["type"] == "joined"
        assert await store.kv_get(room_host_key(rid)) == "node-b"
        media_b = b.app[NODE].media
        assert media_b is not None and rid in media_b.rooms.service.rooms
        joined = await dave.connect()
        assert joined["type"] == "joined" and "bob" in dave.participants
        listed = await b.api("GET", f"/v1/rooms/{rid}/participants")
        assert sorted(p["identity"] for p in listed["data"]) == ["bob", "dave"]
    finally:
        await dave.close()
        await bob.close()


async def test_another_node_s_sweep_leaves_a_room_that_just_started_alone(
    nodes: tuple[Service, Service],  # noqa: F811
) -> None:
    """A room that started on A a moment ago (before A's keeper renewed anything)
    is not taken for a dead node's room by B's sweep."""
    a, b = nodes
    await point_registry_at(a)
    room = await a.api("POST", "/v1/rooms", {})
    rid = room["id"]
    alice = RoomClient(a.base, rid, await token(a, rid, "alice"))
    try:
        assert (await alice.connect())["type"] == "joined"
        media_b = b.app[NODE].media
        assert media_b is not None
        await media_b.rooms.keeper.sweep()
        assert (await b.api("GET", f"/v1/rooms/{rid}"))["status"] == "active"
    finally:
        await alice.close()


async def test_a_draining_node_hands_its_rooms_on_and_participants_find_them_elsewhere(
    nodes: tuple[Service, Service],  # noqa: F811
) -> None:
    """A drains with a room still in use: its participants are told ``moved``,
    the room stays active (not finished), and reconnecting through B gets them
    the room again, hosted by B; A takes nothing back."""
    a, b = nodes
    await point_registry_at(a)
    await point_registry_at(b)
    room = await a.api("POST", "/v1/rooms", {})
    rid = room["id"]
    alice = RoomClient(a.base, rid, await token(a, rid, "alice"))
    again = RoomClient(b.base, rid, await token(b, rid, "alice"))
    try:
        assert (await alice.connect())["type"] == "joined"
        media_a, media_b = a.app[NODE].media, b.app[NODE].media
        assert media_a is not None and media_b is not None
        media_a.rooms.service.accepting_rooms = False  # what a drain does first

        assert await media_a.rooms.release_all() == 1
        moved = await alice.wait_for(lambda m: m["type"] == "moved")
        assert moved["url"] == b.base  # where to reconnect
        error = await alice.wait_for(lambda m: m["type"] == "error")
        assert error["code"] == "moved"
        assert rid not in media_a.rooms.service.rooms
        assert (await b.api("GET", f"/v1/rooms/{rid}"))["status"] == "active"
        await media_a.rooms.keeper.sweep()  # the drained node adopts nothing
        assert (await b.api("GET", f"/v1/rooms/{rid}"))["status"] == "active"

        assert (await again.connect())["type"] == "joined"
        assert rid in media_b.rooms.service.rooms
        assert await b.app[NODE].store.kv_get(room_host_key(rid)) == "node-b"
        listed = await a.api("GET", f"/v1/rooms/{rid}/participants")
        assert [p["identity"] for p in listed["data"]] == ["alice"]
    finally:
        await again.close()
        await alice.close()


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium")
async def test_the_room_page_follows_its_room_to_another_node(
    nodes: tuple[Service, Service],  # noqa: F811
) -> None:
    """A drains with ann's room page connected to it directly: the page
    reconnects through the node the ``moved`` message names and is in the
    room again there, its camera published."""
    from tests.rooms._chromium import Chromium

    a, b = nodes
    await point_registry_at(a)
    await point_registry_at(b)
    room = await a.api("POST", "/v1/rooms", {})
    rid = room["id"]
    media_a, media_b = a.app[NODE].media, b.app[NODE].media
    assert media_a is not None and media_b is not None

    async def on(svc: Service) -> list[str]:
        got = await svc.api("GET", f"/v1/rooms/{rid}/participants")
        return [p["identity"] for p in got["data"]]

    browser = Chromium()
    await browser.start()
    try:
        page = await browser.new_page(
            f"{a.base}/rooms/{rid}?token={await token(a, rid, 'ann')}&video=320x240"
        )
        deadline = time.monotonic() + 20
        while await on(a) != ["ann"]:
            assert time.monotonic() < deadline, "ann never joined through A"
            await asyncio.sleep(0.1)
        media_a.rooms.service.accepting_rooms = False  # what a drain does first
        assert await media_a.rooms.release_all() == 1
        deadline = time.monotonic() + 20
        while rid not in media_b.rooms.service.rooms or await on(b) != ["ann"]:
            assert time.monotonic() < deadline, await page.evaluate("window.onairRoom.status")
            await asyncio.sleep(0.1)
        assert await page.evaluate("window.onairRoom.moves") == 1
        deadline = time.monotonic() + 20
        while not (listed := await b.api("GET", f"/v1/rooms/{rid}/participants"))["data"][0][
            "tracks"
        ]:
            assert time.monotonic() < deadline, listed
            await asyncio.sleep(0.1)
        await page.close()
    finally:
        await browser.close()
