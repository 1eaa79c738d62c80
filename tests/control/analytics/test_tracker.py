"""The views a node sees, stored so every node contributes to one view
(SQLite and Redis stores)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from control.analytics.beacons import Beacon, BeaconEvent
from control.analytics.cmcd import Cmcd
from control.analytics.tracker import (
    CMCD_READ_FIRST,
    CMCD_SAMPLE_S,
    ViewTracker,
    concurrent_viewers,
    view_id_for,
)
from control.analytics.view import COLLECTION
from control.domain.live_streams import PLAYBACK_IDS
from control.registry import alive_key
from control.store.base import Put, Store, list_all
from tests.support.stores import make_store

T0 = 1_800_000_000.0


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    s = make_store(request.param, tmp_path, url)
    await s.open()
    await s.commit(
        [
            Put(PLAYBACK_IDS, "pidLive", {"object_type": "live_stream", "object_id": "ls_1"}),
            Put(PLAYBACK_IDS, "pidAsset", {"object_type": "asset", "object_id": "as_1"}),
        ]
    )
    yield s
    await s.close()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def tracker(store: Store, node: str, clock: Clock, **kw: int) -> ViewTracker:
    return ViewTracker(store, node_id=node, clock=clock, idle_s=30, **kw)


def beacon(clock: Clock, *events: tuple[str, float]) -> Beacon:
    return Beacon("sess", [BeaconEvent(k, at * 1000) for k, at in events], clock.now * 1000)


async def views(store: Store) -> list[dict[str, object]]:
    return [r.data for r in await list_all(store, COLLECTION)]


async def test_a_player_sending_nothing_is_one_unmeasured_view_until_idle(store: Store) -> None:
    clock = Clock()
    t = tracker(store, "n1", clock)
    for _ in range(10):
        t.on_playback(
            "/play/pidLive/media.m3u8", "_HLS_msn=3", "10.0.0.1", {"user-agent": "UA"}, 200
        )
        clock.now += 2
    t.on_playback("/play/pidLive/media.m3u8", "", "10.0.0.2", {"user-agent": "UA"}, 200)
    t.on_playback("/play/nope/media.m3u8", "", "10.0.0.3", {}, 404)  # refused: no view
    await t.flush()
    got = await views(store)
    assert len(got) == 2 and all(v["measured"] is False for v in got)
    assert {v["live_stream_id"] for v in got} == {"ls_1"}
    clock.now += 31
    await t.flush()
    got = await views(store)
    assert all(v["ended_at"] is not None for v in got)
    assert max(v["watch_time_ms"] for v in got) == 18000  # 10 requests, 2 s apart
    # the same player coming back after the idle cut is a new view
    t.on_playback("/play/pidLive/media.m3u8", "", "10.0.0.1", {"user-agent": "UA"}, 200)
    await t.flush()
    assert len(await views(store)) == 3


async def test_cmcd_and_beacons_of_one_session_are_one_measured_view(store: Store) -> None:
    clock = Clock()
    t = tracker(store, "n1", clock)
    headers = {"user-agent": "Chrome"}
    t.on_playback("/play/pidLive.m3u8", "CMCD=sid%3D%22sess%22%2Csu", "10.0.0.1", headers, 200)
    t.on_beacon("pidLive", "10.0.0.1", "Chrome", beacon(clock, ("start", T0)))
    clock.now += 1.5
    t.on_beacon("pidLive", "10.0.0.1", "Chrome", beacon(clock, ("first_frame", T0 + 1.5)))
    clock.now += 5
    t.on_playback(
        "/play/pidLive/p12.m4s", "CMCD=br%3D900%2Cot%3Dv%2Csid%3D%22sess%22%2Cltc%3D1200",
        "10.0.0.1", headers, 200,
    )  # fmt: skip
    await t.flush()
    (view,) = await views(store)
    assert view["measured"] is True and view["startup_time_ms"] == 1500
    assert view["latency_s"] == 1.2 and view["average_bitrate_kbps"] == 900
    rec = await store.get(COLLECTION, view_id_for("pidLive", "sess"))
    assert rec is not None


async def test_a_beacon_takes_over_the_unmeasured_view_of_the_same_player(store: Store) -> None:
    clock = Clock()
    t = tracker(store, "n1", clock)
    t.on_playback("/play/pidAsset.m3u8", "", "10.0.0.1", {"user-agent": "Safari"}, 200)
    await t.flush()
    assert len(await views(store)) == 1
    clock.now += 1
    t.on_beacon("pidAsset", "10.0.0.1", "Safari", beacon(clock, ("start", T0)))
    t.on_playback("/play/pidAsset/media.m3u8", "", "10.0.0.1", {"user-agent": "Safari"}, 200)
    await t.flush()
    (view,) = await views(store)
    assert view["measured"] is True and view["asset_id"] == "as_1"


async def test_two_nodes_write_one_view(store: Store) -> None:
    clock = Clock()
    a, b = tracker(store, "n1", clock), tracker(store, "n2", clock)
    a.on_beacon("pidLive", "10.0.0.1", "UA", beacon(clock, ("start", T0)))
    clock.now += 0.7
    b.on_beacon("pidLive", "10.0.0.1", "UA", beacon(clock, ("first_frame", T0 + 0.7)))
    await a.flush()
    await b.flush()
    clock.now += 10
    a.on_beacon("pidLive", "10.0.0.1", "UA", beacon(clock, ("end", T0 + 10.7)))
    await a.flush()
    (view,) = await views(store)
    assert view["startup_time_ms"] == 700
    assert view["ended_at"] is None  # n2 still has it open
    clock.now += 31
    await b.flush()
    (view,) = await views(store)
    assert view["ended_at"] is not None and view["watch_time_ms"] >= 10700


async def test_concurrent_viewers_add_up_over_the_nodes_alive(store: Store) -> None:
    clock = Clock()
    a, b = tracker(store, "n1", clock), tracker(store, "n2", clock)
    for i in range(3):
        a.on_playback("/play/pidLive.m3u8", "", f"10.0.0.{i}", {}, 200)
    b.on_playback("/play/pidLive.m3u8", "", "10.0.1.1", {}, 200)
    b.on_playback("/play/pidAsset.m3u8", "", "10.0.1.1", {}, 200)
    await a.flush()
    await b.flush()
    for node in ("n1", "n2"):
        await store.commit([Put("nodes", node, {"url": "http://x"})])
        await store.kv_set(alive_key(node), "1", ttl_s=60)
    assert await concurrent_viewers(store, "ls_1") == 4
    clock.now += 31
    await a.flush()
    await b.flush()
    assert await concurrent_viewers(store, "ls_1") == 0


async def test_memory_is_bounded(store: Store) -> None:
    clock = Clock()
    t = tracker(store, "n1", clock, max_views=5)
    for i in range(20):
        t.on_beacon("pidLive", "10.0.0.1", "UA", Beacon(f"s{i}", []))
        t.on_request("pidLive", f"10.0.1.{i}", "UA", Cmcd(sid=f"c{i}"))
    assert len(t.parts) == 5
    await t.flush()
    assert len(await views(store)) == 5


async def test_cmcd_is_read_in_full_then_sampled_but_a_stall_flag_at_once(store: Store) -> None:
    clock = Clock()
    t = tracker(store, "n1", clock)

    def get(cmcd: str) -> None:
        query = "CMCD=" + cmcd.replace(",", "%2C").replace("=", "%3D").replace('"', "%22")
        t.on_playback("/play/pidLive/media.m3u8", query, "10.0.0.1", {}, 200)

    for _ in range(CMCD_READ_FIRST):  # a view's first requests are read in full
        get('br=1000,ot=v,sid="s"')
    for _ in range(5):
        clock.now += CMCD_SAMPLE_S / 10
        get('br=9000,ot=v,sid="s"')  # then, until the next sample: not read
    get('bs,br=9000,ot=v,sid="s"')  # a stall flag is read at once
    clock.now += CMCD_SAMPLE_S
    get('ot=m,sid="s"')  # due, but a playlist request: no bitrate to sample
    get('br=3000,ot=v,sid="s"')  # so the next one is read
    get('br=7000,ot=v,sid="s"')  # and then not, until the next sample
    (part,) = t.parts.values()
    assert part.requests == CMCD_READ_FIRST + 9 and part.cmcd_starvations == 1
    assert part.cmcd_br_sum == CMCD_READ_FIRST * 1000 + 9000 + 3000
    assert part.cmcd_br_count == CMCD_READ_FIRST + 2


async def test_two_nodes_flushing_at_once_both_land_in_the_view(store: Store) -> None:
    clock = Clock()
    a, b = tracker(store, "n1", clock), tracker(store, "n2", clock)
    for t in (a, b):  # the view exists: both nodes read the same version, one loses
        t.on_beacon("pidLive", "10.0.0.1", "UA", beacon(clock, ("start", T0)))
    await a.flush()
    clock.now += 1
    for t in (a, b):
        t.on_beacon("pidLive", "10.0.0.1", "UA", beacon(clock, ("first_frame", T0 + 1)))
    await asyncio.gather(a.flush(), b.flush())
    rec = await store.get(COLLECTION, view_id_for("pidLive", "sess"))
    assert rec is not None and set(rec.data["parts"]) == {"n1", "n2"}
    assert rec.data["startup_time_ms"] == 1000
