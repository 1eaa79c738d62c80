"""Issue 15, every core of one machine: `onair serve` with ONAIR_WORKERS=2.

Both workers listen on the HTTP and RTMP ports; publishers spread over them;
every stream plays from the shared port whichever worker a request lands on;
SIGKILL of one worker → the supervisor replaces it, its encoders reconnect
(to whichever worker) and their playlists continue (sequence numbers, one
discontinuity) while viewers on the other worker keep playing; WHEP, the
event stream and the webhook-free API work from either worker; and a graceful
stop of all workers ends in ready assets, as one process does."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from realtime.segments import FIRST_MSN
from tests.e2e._media import Publisher, media_sequence, poll, tags
from tests.e2e._rooms import join, publish_av, room_token, until
from tests.e2e._service import Api, ServiceProcess, http_get, rtmp_url, sse_hears
from tests.e2e._webrtc import CLIENT_CONFIG, recv_frames
from tests.support.webrtc_client import delete_session, whep_play, whip_publish
from tests.webrtc._media import PatternVideoTrack, ToneAudioTrack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

WORKERS = {"ONAIR_WORKERS": "2", "ONAIR_SHUTDOWN_TIMEOUT_S": "5"}


def last_msn(text: str) -> int:
    """The media sequence number of the playlist's last complete segment."""
    return media_sequence(text) + len(tags(text, "#EXTINF")) - 1


@dataclass
class Sample:
    at: float
    pid: str
    status: int
    msn: int = -1
    discontinuities: int = 0


@dataclass
class Viewer:
    """One player on one keep-alive connection: it asks which worker it reached,
    then polls the playlists of the streams it watches until told to stop or its
    connection breaks (it was on a worker that died)."""

    url: str
    pids: list[str]
    node: str = ""
    samples: list[Sample] = field(default_factory=list)
    broken_at: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as s:
            async with s.get(self.url + "/v1/health") as r:
                self.node = (await r.json())["node_id"]
            while not stop.is_set():
                for pid in self.pids:
                    try:
                        async with s.get(f"{self.url}/play/{pid}/media.m3u8") as r:
                            text = (await r.read()).decode()
                            sample = Sample(time.monotonic(), pid, r.status)
                            if r.status == 200:
                                sample.msn = last_msn(text)
                                sample.discontinuities = len(tags(text, "#EXT-X-DISCONTINUITY"))
                            self.samples.append(sample)
                    except (aiohttp.ClientError, OSError):
                        self.broken_at = time.monotonic()
                        return
                await asyncio.sleep(0.25)


async def playlist(svc: ServiceProcess, pid: str) -> tuple[int, str]:
    status, body, _ = await http_get(f"{svc.url}/play/{pid}/media.m3u8")
    return status, body.decode(errors="replace")


def playlist_of(svc: ServiceProcess, pid: str) -> Callable[[], Awaitable[tuple[int, str]]]:
    return lambda: playlist(svc, pid)


def past(msn: int) -> Callable[[tuple[int, str]], bool]:
    return lambda r: r[0] == 200 and last_msn(r[1]) > msn


def counting(streams: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda nodes: sum(x["load"]["streams"] for x in nodes) == streams


async def living_nodes(api: Api) -> list[dict[str, Any]]:
    return list((await api.ok("GET", "/v1/nodes"))["data"])


async def test_two_workers_share_the_ports_and_survive_a_worker_kill(tmp_path: Path) -> None:
    svc = ServiceProcess(tmp_path / "data", WORKERS)
    pubs: dict[str, Publisher] = {}
    try:
        await asyncio.to_thread(svc.start, 90.0)
        api = Api(svc)
        workers = svc.workers()
        assert len(workers) == 2, workers
        nodes = await poll(lambda: living_nodes(api), lambda n: len(n) == 2, what="two nodes")
        assert {n["id"] for n in nodes} == set(workers)
        assert len({n["url"] for n in nodes}) == 2, "each worker has its own node address"

        # publishers land on both workers (the kernel spreads connections)
        streams: dict[str, dict[str, Any]] = {}
        for n in range(8):
            ls = await api.live_stream(reconnect_window_s=60)
            streams[ls["id"]] = ls
            pubs[ls["id"]] = await Publisher.start(
                rtmp_url(svc, ls["stream_key"]), 300, log=tmp_path / f"ff{n}.log", size="320x180"
            )
            await api.wait_stream_status(ls["id"], "active", within=20)
            if n >= 1:
                loads = await poll(
                    lambda: living_nodes(api),
                    counting(n + 1),
                    within=10,
                    what="the heartbeat counting every publisher",
                )
                if all(x["load"]["streams"] >= 1 for x in loads):
                    break
        else:
            pytest.fail(f"8 publishers all landed on one worker: {loads}")

        # every stream plays from the shared port, on whichever worker a request lands
        pids = {ls_id: ls["playback_ids"][0]["id"] for ls_id, ls in streams.items()}
        for pid in pids.values():
            for _ in range(6):  # a new connection each: both workers answer
                status, text = await poll(
                    playlist_of(svc, pid),
                    lambda r: r[0] == 200 and len(tags(r[1], "#EXT-X-PART")) > 0,
                    within=20,
                    what="a playlist with parts",
                )
            part = tags(text, "#EXT-X-PART")[-1].split('URI="')[1].split('"')[0]
            status, body, _ = await http_get(f"{svc.url}/play/{pid}/{part}")
            assert status == 200 and len(body) > 0

        stop_viewers = asyncio.Event()
        viewers = [Viewer(svc.url, list(pids.values())) for _ in range(8)]
        tasks = [asyncio.ensure_future(v.run(stop_viewers)) for v in viewers]
        await asyncio.sleep(2.0)
        before = {pid: last_msn((await playlist(svc, pid))[1]) for pid in pids.values()}

        # SIGKILL one worker
        victim, victim_pid = sorted(workers.items())[1]
        survivor = next(node for node in workers if node != victim)
        os.kill(victim_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        replaced = await poll(
            lambda: asyncio.to_thread(svc.workers),
            lambda w: len(w) == 2 and victim not in w,
            within=20,
            what="the supervisor starting another worker",
        )
        replacement = next(node for node in replaced if node != survivor)
        assert replacement.startswith(victim.split(".")[0]) and replacement != victim

        # the encoders on the dead worker lose their connection and come back
        await asyncio.sleep(3.0)
        orphaned = [ls_id for ls_id, pub in pubs.items() if not pub.running]
        kept = [ls_id for ls_id in pubs if ls_id not in orphaned]
        assert orphaned and kept, (orphaned, kept)
        for ls_id in orphaned:
            pubs[ls_id] = await Publisher.start(
                rtmp_url(svc, streams[ls_id]["stream_key"]),
                300,
                log=tmp_path / f"ff-{ls_id}-again.log",
                size="320x180",
            )
        for ls_id in orphaned:
            pid = pids[ls_id]
            status, text = await poll(
                playlist_of(svc, pid),
                past(before[pid] + 1),
                within=30,
                what=f"stream {ls_id} continuing after its worker died",
            )
            # the same playlist goes on: numbering continues after the dead worker's
            # last segment (no restart from 0, no jump), across one discontinuity
            assert before[pid] < media_sequence(text) <= before[pid] + 10, (before[pid], text)
            assert len(tags(text, "#EXT-X-DISCONTINUITY")) == 1, text

        await asyncio.sleep(2.0)
        stop_viewers.set()
        await asyncio.gather(*tasks)
        on_survivor = [v for v in viewers if v.node == survivor]
        assert on_survivor, [v.node for v in viewers]
        kept_pids = {pids[ls_id] for ls_id in kept}
        for viewer in on_survivor:
            assert viewer.broken_at is None, "a connection to the living worker broke"
            for pid in kept_pids:
                seen = [s for s in viewer.samples if s.pid == pid]
                assert all(s.status == 200 for s in seen), [s.status for s in seen]
                assert all(s.discontinuities == 0 for s in seen)
                msns = [s.msn for s in seen]
                assert msns == sorted(msns) and msns[-1] > before[pid], msns
                after_kill = [s for s in seen if s.at > killed_at]
                gaps = [b.at - a.at for a, b in itertools.pairwise(after_kill)]
                assert after_kill and max(gaps, default=0) < 2.0, gaps

        # a graceful stop of every worker ends in ready assets, as one process does
        active = {
            ls_id: (await api.ok("GET", f"/v1/live-streams/{ls_id}"))["active_asset_id"]
            for ls_id in streams
        }
        for ls_id in streams:
            await api.ok("PATCH", f"/v1/live-streams/{ls_id}", {"reconnect_window_s": 1})
        admin_key = svc.admin_key
        assert await asyncio.to_thread(svc.stop, 60.0) == 0
        for pub in pubs.values():
            await pub.stop()
        await asyncio.to_thread(svc.start, 90.0)
        svc.admin_key = admin_key
        for ls_id, asset_id in active.items():
            asset = await api.wait_asset(asset_id, within=60)
            # at least the segments it had before the kill (1 s each; a starved
            # CI publisher makes less media than wall-clock time)
            had = before[pids[ls_id]] - FIRST_MSN
            assert asset["duration_s"] >= max(2.0, 0.9 * had), (had, asset)
            stream = await api.wait_stream_status(ls_id, "idle", within=30)
            assert stream["active_asset_id"] is None
    finally:
        for pub in pubs.values():
            await pub.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(svc.stop, 30.0)
        svc.kill()


def at_worker(svc: ServiceProcess, node_url: str) -> ServiceProcess:
    """`svc` as seen at one worker's own address (to aim at a worker on purpose)."""
    view = copy.copy(svc)
    port = urlsplit(node_url).port
    assert port is not None
    view.port = port
    return view


async def test_webrtc_rooms_and_events_reach_across_workers(tmp_path: Path) -> None:
    svc = ServiceProcess(
        tmp_path / "data",
        {**WORKERS, "ONAIR_WEBRTC_LOOPBACK": "1", "ONAIR_WEBRTC_HOSTS": "127.0.0.1"},
    )
    pub: Publisher | None = None
    closing: list[Any] = []
    try:
        await asyncio.to_thread(svc.start, 90.0)
        api = Api(svc)
        nodes = await poll(lambda: living_nodes(api), lambda n: len(n) == 2, what="two nodes")
        w0, w1 = (at_worker(svc, n["url"]) for n in sorted(nodes, key=lambda n: n["id"]))

        # events committed on one worker reach an event stream on the other at once
        # (the local bus; the poll alone would take up to half a second)
        heard = [await sse_hears(w0, Api(w1)) for _ in range(5)]
        assert sorted(heard)[2] < 0.25, heard

        # WHEP: an offer to either worker plays the stream, whichever ingests it;
        # the worker that does not is answered by the one that does (no redirect)
        ls = await api.live_stream(record=False)
        pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), 300, size="320x180")
        await api.wait_stream_status(ls["id"], "active", within=20)
        pid = ls["playback_ids"][0]["id"]
        sessions = []
        for worker in (w0, w1):
            pc, location = await whep_play(f"{worker.url}/v1/whep/{pid}", CLIENT_CONFIG)
            closing.append(pc)
            assert urlsplit(location).port == urlsplit(worker.url).port, location
            sessions.append((pc, location))
        for pc, _ in sessions:
            tracks = {t.kind: t.receiver.track for t in pc.getTransceivers()}
            frames = await recv_frames(tracks["video"], 5, within=30)
            assert {(f.width, f.height) for f in frames} == {(320, 180)}
        # each session is ended through the other worker
        for (_, location), other in zip(sessions, (w1, w0), strict=True):
            path = urlsplit(location).path
            assert await delete_session(other.url + path) == 200
            assert await delete_session(other.url + path) == 404

        # the API ends a broadcast through the worker that does not hold its
        # publisher: the holder drops the encoder at once (the bus), not at its
        # next look at the store
        loads = await poll(
            lambda: living_nodes(api), counting(1), within=10, what="the heartbeat counting it"
        )
        holder = next(n["id"] for n in loads if n["load"]["streams"] == 1)
        other = next(n["url"] for n in loads if n["id"] != holder)
        asked = time.monotonic()
        await Api(at_worker(svc, other)).ok("POST", f"/v1/live-streams/{ls['id']}/complete")
        await pub.wait(within=10)
        assert time.monotonic() - asked < 1.5, "the publisher was not dropped at once"
        await api.wait_stream_status(ls["id"], "idle", within=10)

        # WHIP: a session made on w0 is ended through w1
        whip_ls = await api.live_stream(record=False)
        pc, location = await whip_publish(
            f"{w0.url}/v1/whip",
            whip_ls["stream_key"],
            [PatternVideoTrack(320, 240), ToneAudioTrack()],
            CLIENT_CONFIG,
        )
        closing.append(pc)
        await api.wait_stream_status(whip_ls["id"], "active", within=20)
        path = urlsplit(location).path
        assert await delete_session(w1.url + path, whip_ls["stream_key"]) == 200
        await api.wait_stream_status(whip_ls["id"], "idle", within=20)

        # a room hosted by one worker: a participant on the other sees and hears
        room = await api.ok("POST", "/v1/rooms", {"record": False})
        ann = await join(w0, room["id"], await room_token(api, room["id"], "ann"))
        closing.append(ann)
        await publish_av(ann)
        bob = await join(w1, room["id"], await room_token(api, room["id"], "bob"))
        closing.append(bob)
        await until(
            lambda: (
                {r.kind for r in bob.received.values() if len(r.frames) > 10} == {"audio", "video"}
            ),
            30,
            "bob receiving ann's audio and video through the other worker",
        )
    finally:
        for item in reversed(closing):
            with contextlib.suppress(Exception):
                await item.close()
        if pub is not None:
            await pub.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(svc.stop, 30.0)
        svc.kill()
