"""Three headless Chromium participants (fake camera and mic) meet in one room
through the room page: each decodes the other two's video, a leaver's tile goes
away, and the room events arrive in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from realtime.rooms.room import RoomConfig

from ._chromium import Chromium, Page
from .conftest import RoomServer, start_room_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium"),
]


@pytest.fixture
async def server() -> AsyncIterator[RoomServer]:
    srv = await start_room_server(RoomConfig("RM_meet", empty_timeout_s=60))
    yield srv
    await srv.runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Chromium]:
    b = Chromium()
    await b.start()
    yield b
    await b.close()


def server_view(server: RoomServer) -> dict[str, Any]:
    """What the SFU sees, for failure messages."""
    ar = server.service.rooms.get("RM_meet")
    if ar is None:
        return {}
    out: dict[str, Any] = {}
    for ident, s in ar.sessions.items():
        out[ident] = {
            "tracks": {
                t.name: (
                    t.frames_in,
                    t.frames_out,
                    t.dropped,
                    t.keyframe_requests,
                    t.source.plis_sent if t.source else None,
                )
                for t in s.subscribe.tracks.values()
            },
            "slots": [
                (
                    sl.track_id,
                    sl.transceiver.currentDirection,
                    getattr(sl.transceiver.sender, "_RTCRtpSender__started", None),
                    sl.transceiver.sender.transport.state,
                )
                for sl in s.subscribe._slots
            ],
            "negotiations": s.subscribe.negotiations,
            "phase": s.subscribe.phase,
        }
    return out


async def stats(page: Page) -> dict[str, Any]:
    return await page.evaluate("window.onairRoom ? window.onairRoom.videoStats() : {}")  # type: ignore[no-any-return]


async def test_three_browsers_see_each_other_and_a_leaver_goes(
    server: RoomServer, browser: Chromium
) -> None:
    names = ["ann", "ben", "cat"]
    pages: dict[str, Page] = {}
    for n in names:
        url = f"{server.base_url}/rooms/RM_meet?token={server.token('RM_meet', n)}&video=320x240"
        pages[n] = await browser.new_page(url)

    # Each decodes the other two's video (non-black, advancing) within 5 s of all joining.
    async def all_joined() -> bool:
        return len(server.service.participants("RM_meet")) == 3

    deadline = time.monotonic() + 20
    while not await all_joined():
        assert time.monotonic() < deadline, "browsers did not join"
        await asyncio.sleep(0.1)
    t0 = time.monotonic()
    first: dict[str, dict[str, float]] = {}
    ok: set[str] = set()
    while len(ok) < 3:
        assert time.monotonic() - t0 < 5.0, (
            f"not all decoding after 5 s: {ok} "
            + str({n: await stats(p) for n, p in pages.items()})
            + " server: "
            + str(server_view(server))
        )
        for n, p in pages.items():
            if n in ok:
                continue
            s = await stats(p)
            others = [o for o in names if o != n]
            if all(o in s and s[o]["playing"] and s[o]["nonBlack"] for o in others):
                prev = first.setdefault(n, {o: s[o]["currentTime"] for o in others})
                if all(s[o]["currentTime"] > prev[o] for o in others):
                    ok.add(n)
        await asyncio.sleep(0.2)

    # cat leaves; the others see the tile go.
    await pages["cat"].evaluate("window.onairRoom.leave()")
    t1 = time.monotonic()
    for n in ("ann", "ben"):
        while True:
            parts = await pages[n].evaluate("window.onairRoom.participants")
            if "cat" not in parts:
                break
            assert time.monotonic() - t1 < 5, parts
            await asyncio.sleep(0.1)
        assert sorted(parts) == sorted(o for o in ("ann", "ben") if o != n)

    await server.service.drain_events()
    types = server.events.types()
    assert types[0] == "room.started:"
    joined = [t for t in types if t.startswith("participant.joined")]
    assert sorted(joined) == [
        "participant.joined:ann",
        "participant.joined:ben",
        "participant.joined:cat",
    ]
    assert types[-1] == "participant.left:cat"
    assert types.index("participant.left:cat") > max(types.index(j) for j in joined)
    for p in pages.values():
        await p.close()


async def test_page_reconnects_after_a_network_blip(server: RoomServer, browser: Chromium) -> None:
    a = await browser.new_page(
        f"{server.base_url}/rooms/RM_meet?token={server.token('RM_meet', 'ann')}&video=320x240"
    )
    b = await browser.new_page(
        f"{server.base_url}/rooms/RM_meet?token={server.token('RM_meet', 'ben')}&video=320x240"
    )

    async def sees(page: Page, who: str, within_s: float = 15) -> None:
        end = time.monotonic() + within_s
        while True:
            s = await stats(page)
            if who in s and s[who]["playing"] and s[who]["nonBlack"]:
                return
            assert time.monotonic() < end, (
                s,
                await page.evaluate(
                    "JSON.stringify({log: window.onairRoom.log, errors: window.onairRoom.errors,"
                    " mids: window.onairRoom.mids, st: window.onairRoom.status,"
                    " sub: window.onairRoom.subscribeState})"
                ),
            )
            await asyncio.sleep(0.2)

    await sees(a, "ben")
    await b.evaluate("window.onairRoom.blip()")
    await asyncio.sleep(0.3)
    await sees(a, "ben")
    try:
        await sees(b, "ann")
    except AssertionError:
        ar = server.service.rooms["RM_meet"]
        info = {
            tid: (t.frames_in, t.frames_out, t.dropped, t.keyframe_requests, t.kind)
            for tid, t in ar.sessions["ben"].subscribe.tracks.items()
        }
        srcs = {
            tid: (s.frames, s.kind, s.mime_type) for tid, s in ar.sessions["ann"].sources.items()
        }
        raise AssertionError(f"{info} {srcs}") from None
    assert await b.evaluate("window.onairRoom.reconnects") == 1
    # Mute from the page: the other side learns it.
    await a.evaluate("document.getElementById('mute-audio').click()")
    end = time.monotonic() + 5
    while not await b.evaluate(
        "Object.values(window.onairRoom.tracks).some("
        "t => t.identity === 'ann' && t.kind === 'audio' && t.muted)"
    ):
        assert time.monotonic() < end, "mute did not reach the other participant"
        await asyncio.sleep(0.1)
    await a.close()
    await b.close()
