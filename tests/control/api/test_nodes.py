"""`GET /v1/nodes`: every node sharing the store registers with a heartbeat and
says where it is, since when and how loaded; a node that leaves is gone from
the list, one that stops beating is gone once its alive key expires."""

from __future__ import annotations

import asyncio
from pathlib import Path

from control.registry import ALIVE_TTL_S, NODES, Load, NodeRegistry, alive, request_drain
from tests.control.api.conftest import Api, MakeApi
from tests.support.stores import TestClock, make_store


async def test_nodes_lists_every_node_of_the_store_with_its_load(make_api: MakeApi) -> None:
    a = await make_api()
    b = await make_api(store=a.store, node_url="http://10.1.2.3:8080/")
    status, body, _ = await a.call("GET", "/v1/nodes")
    assert status == 200 and body["has_more"] is False
    nodes = {n["id"]: n for n in body["data"]}
    assert set(nodes) == {a.settings.node_id, b.settings.node_id}
    mine = nodes[b.settings.node_id]
    assert mine["url"] == "http://10.1.2.3:8080" and mine["draining"] is False
    assert mine["url"] != nodes[a.settings.node_id]["url"]
    assert set(mine["load"]) == {"cpu", "streams", "viewers", "rooms"}
    assert mine["started_at"] and mine["last_seen"] and mine["object"] == "node"


async def test_only_admin_keys_see_the_nodes(api: Api) -> None:
    read = await api.new_key("read")
    status, body, _ = await api.call("GET", "/v1/nodes", key=read)
    assert status == 403 and body["error"]["type"] == "permission_denied"


async def test_a_node_that_leaves_is_gone(make_api: MakeApi) -> None:
    a = await make_api()
    b = await make_api(store=a.store)
    await b.client.close()  # its node stops: it leaves the registry
    _, body, _ = await a.call("GET", "/v1/nodes")
    assert [n["id"] for n in body["data"]] == [a.settings.node_id]


async def test_a_node_that_stops_beating_is_gone_when_its_key_expires(tmp_path: Path) -> None:
    clock = TestClock()
    store = make_store("sqlite", tmp_path, clock=clock)
    await store.open()
    try:
        idle = Load(cpu=0.0, streams=0, viewers=0, rooms=0)
        registry = NodeRegistry(store, node_id="n1", url="http://n1", load=lambda _cpu: idle)
        await registry.beat()  # one heartbeat, then silence (a SIGKILL)
        assert [r.id for r in await alive(store)] == ["n1"]
        clock.advance(ALIVE_TTL_S + 0.1)
        assert await alive(store) == []
        assert await store.get(NODES, "n1") is not None  # forgotten only much later
    finally:
        await store.close()


async def test_a_drain_request_is_seen_at_the_next_heartbeat(tmp_path: Path) -> None:
    store = make_store("sqlite", tmp_path)
    await store.open()
    try:
        idle = Load(cpu=0.0, streams=0, viewers=0, rooms=0)
        registry = NodeRegistry(store, node_id="n1", url="http://n1", load=lambda _cpu: idle)
        await registry.beat()
        assert not registry.drain_asked.is_set()
        await request_drain(store, "n1", 30)
        await registry.beat()
        await asyncio.wait_for(registry.drain_asked.wait(), 1)
        (rec,) = await alive(store)
        assert rec.data["draining"] is True and registry.drain_deadline > 0
    finally:
        await store.close()
