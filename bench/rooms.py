"""Rooms (SFU) benchmarks, side by side with Janus's videoroom.

    .venv/bin/python bench/rooms.py latency [--seconds 8]
        Latency the SFU adds: an aiortc publisher sends pre-encoded 720p H.264
        frames (send time remembered per frame) and an aiortc subscriber
        (pass-through, no decoding) timestamps each frame on arrival. Measured
        publisher -> onair SFU -> subscriber, publisher -> Janus -> subscriber,
        and publisher -> subscriber directly (baseline); "added" = p50 - direct p50.
    .venv/bin/python bench/rooms.py scale [--steps 2,3,4,5,6] [--seconds 8] [--no-janus]
        A room of N aiortc participants (2 per process, in other processes), each
        publishing 720p30 H.264 at ~1.5 Mbit/s and receiving everyone else
        (N*(N-1) forwarded tracks). Server CPU (utime+stime of the server
        process) per forwarded track, and whether every subscription got >= 95 %
        of the frames. The same workload on Janus (videoroom plugin, HTTP API).

Everything binds 127.0.0.1; all processes started here are stopped at the end.
Results are printed as JSON and written to bench/results/rooms.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pickle
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from ingest.webrtc.config import WebRtcConfig
from realtime.rooms.forwarder import EncodedFrame, mark_passthrough
from realtime.rooms.peer import codec_capabilities
from realtime.rooms.room import RoomConfig
from realtime.rooms.routes import add_room_routes
from realtime.rooms.rtc import RtcSettings
from realtime.rooms.service import RoomService, StaticDirectory
from realtime.rooms.tokens import JoinTokens
from tests.support.room_client import EncodedPacket, EncodedSource, RoomClient, encode_h264

SECRET = "bench-secret-" + "x" * 40
FPS = 30
RTC = RtcSettings.loopback()
# Janus (libnice) never gathers on loopback, so its clients also gather on this
# host's own interface address (traffic still never leaves the machine).
JANUS_RTC = RtcSettings(WebRtcConfig(include_loopback=True))
RESULTS = Path(__file__).resolve().parent / "results"
JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")


def nal_key(data: bytes) -> bytes:
    """Frame identity independent of start-code length."""
    return data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01")


def video_packets(path: Path, frames: int = 150) -> list[EncodedPacket]:
    if path.exists():
        return pickle.loads(path.read_bytes())  # type: ignore[no-any-return]
    pkts = encode_h264(frames, width=1280, height=720, fps=FPS, gop=30, bitrate=1_500_000)
    path.write_bytes(pickle.dumps(pkts))
    return pkts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


# ------------------------------------------------------------------------ onair server


async def serve(port_file: Path) -> None:
    tokens = JoinTokens(SECRET)
    rooms = [RoomConfig(f"bench-{i}", max_participants=64, empty_timeout_s=600) for i in range(64)]
    service = RoomService(
        tokens, StaticDirectory(*rooms), rtc=RTC, video_codec="video/H264", media_timeout_s=30
    )
    app = web.Application()
    add_room_routes(app, service)

    async def stats(request: web.Request) -> web.Response:
        dropped = forwarded = 0
        for ar in service.rooms.values():
            for s in ar.sessions.values():
                for t in s.subscribe.tracks.values():
                    dropped += t.dropped
                    forwarded += 1
        detail = {
            f"{rid}/{ident}": {
                "negotiations": s.subscribe.negotiations,
                "pc": s.subscribe.pc.connectionState if s.subscribe.pc else None,
                "pub_pc": s.publish.pc.connectionState if s.publish.pc else None,
                "tracks": {
                    t.name: [t.frames_in, t.frames_out, t.dropped]
                    for t in s.subscribe.tracks.values()
                },
                "sources": {k: v.frames for k, v in s.sources.items()},
            }
            for rid, ar in service.rooms.items()
            for ident, s in ar.sessions.items()
        }
        return web.json_response(
            {"dropped": dropped, "forwarded_tracks": forwarded, "detail": detail}
        )

    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    port_file.write_text(str(port))  # noqa: ASYNC240 - a tiny file, once
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def start_onair(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = tmp / f"port-{random.randrange(1 << 30)}"
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        if port_file.exists() and port_file.read_text():
            return proc, f"http://127.0.0.1:{port_file.read_text()}"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("onair bench server did not start")


# ------------------------------------------------------------------------ Janus


def start_janus(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    conf = tmp / "janus"
    conf.mkdir(exist_ok=True)
    port = free_port()
    plugins = ",".join(
        p.name for p in (JANUS_LIB / "plugins").glob("*.so") if "videoroom" not in p.name
    )
    transports = ",".join(
        p.name for p in (JANUS_LIB / "transports").glob("*.so") if "http" not in p.name
    )
    (conf / "janus.jcfg").write_text(f"""
general: {{
  configs_folder = "{conf}"
  plugins_folder = "{JANUS_LIB}/plugins"
  transports_folder = "{JANUS_LIB}/transports"
  events_folder = "{JANUS_LIB}/events"
  loggers_folder = "{JANUS_LIB}/loggers"
  debug_level = 2
}}
media: {{ rtp_port_range = "40000-60000" }}
nat: {{
  ice_enforce_list = "lo"
  nice_debug = false
  full_trickle = false
}}
plugins: {{ disable = "{plugins}" }}
transports: {{ disable = "{transports}" }}
events: {{ broadcast = false }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
""")
    (conf / "janus.transport.http.jcfg").write_text(f"""
general: {{ base_path = "/janus" http = true port = {port} ip = "127.0.0.1" https = false }}
admin: {{ admin_http = false }}
""")
    (conf / "janus.plugin.videoroom.jcfg").write_text("general: { }\n")
    log = open(tmp / "janus.log", "wb")
    proc = subprocess.Popen(
        ["janus", "-C", str(conf / "janus.jcfg"), "-F", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/janus"
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("janus did not start")


class JanusSession:
    """A minimal Janus HTTP API client (one session, long-poll event loop)."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.session_id = 0
        self._events: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._poll: asyncio.Task[None] | None = None

    async def _post(self, path: str, msg: dict[str, Any]) -> dict[str, Any]:
        msg = {"transaction": f"t{random.randrange(1 << 40)}", **msg}
        async with self.http.post(self.url + path, json=msg) as r:
            return await r.json(content_type=None)  # type: ignore[no-any-return]

    async def create(self) -> None:
        r = await self._post("", {"janus": "create"})
        self.session_id = r["data"]["id"]
        self._poll = asyncio.create_task(self._long_poll())

    async def _long_poll(self) -> None:
        while True:
            try:
                async with self.http.get(f"{self.url}/{self.session_id}?maxev=10") as r:
                    data = await r.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.1)
                continue
            for ev in data if isinstance(data, list) else [data]:
                sender = ev.get("sender")
                if sender in self._events:
                    self._events[sender].put_nowait(ev)

    async def attach(self) -> int:
        r = await self._post(
            f"/{self.session_id}", {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        )
        handle = int(r["data"]["id"])
        self._events[handle] = asyncio.Queue()
        return handle

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        return await self._post(f"/{self.session_id}/{handle}", msg)

    async def trickle_done(self, handle: int) -> None:
        await self._post(
            f"/{self.session_id}/{handle}", {"janus": "trickle", "candidate": {"completed": True}}
        )

    async def event(self, handle: int, pred: Any = None, timeout_s: float = 15) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                ev = await self._events[handle].get()
                if ev.get("janus") == "event" and (pred is None or pred(ev)):
                    return ev

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
        with contextlib.suppress(Exception):
            await self._post(f"/{self.session_id}", {"janus": "destroy"})


async def janus_create_room(url: str, room: int, publishers: int) -> None:
    async with aiohttp.ClientSession() as http:
        js = JanusSession(http, url)
        await js.create()
        h = await js.attach()
        r = await js.message(
            h,
            {
                "request": "create",
                "room": room,
                "publishers": publishers,
                "videocodec": "h264",
                "audiocodec": "opus",
                "bitrate": 0,
                "fir_freq": 0,
                "permanent": False,
                "notify_joining": False,
            },
        )
        assert r.get("plugindata", {}).get("data", {}).get("videoroom") == "created", r
        await js.close()


# ------------------------------------------------------------------------ participants


class Counter:
    def __init__(self, t_start: float, t_end: float, sent: dict[bytes, float] | None = None):
        self.t_start, self.t_end = t_start, t_end
        self.counts: dict[str, int] = {}
        self.sent = sent
        self.latencies: list[float] = []

    def frame(self, key: str, frame: EncodedFrame) -> None:
        now = time.time()
        if self.t_start <= now <= self.t_end:
            self.counts[key] = self.counts.get(key, 0) + 1
            if self.sent is not None:
                t = self.sent.get(nal_key(frame.data))
                if t is not None:
                    self.latencies.append((now - t) * 1000)


async def consume(track: MediaStreamTrack, key: str, counter: Counter) -> None:
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            f = await track.recv()
            if isinstance(f, EncodedFrame):
                counter.frame(key, f)


def publisher_track(
    packets: list[EncodedPacket], sent: dict[bytes, float] | None, loop: bool = True
) -> EncodedSource:
    def on_sent(i: int, t: float) -> None:
        if sent is not None:
            sent[nal_key(packets[i].data)] = t

    return EncodedSource("video", packets, 90000, loop=loop, on_sent=on_sent)


async def onair_participant(
    base: str,
    room: str,
    name: str,
    packets: list[EncodedPacket],
    counter: Counter,
    sent: dict[bytes, float] | None = None,
    publish: bool = True,
) -> RoomClient:
    c = RoomClient(base, room, JoinTokens(SECRET).issue(room, name), rtc=RTC)
    c.on_frame = lambda rec, f: counter.frame(f"{name}<-{rec.identity}", f)
    await c.connect()
    if publish:
        ans = await c.publish([(publisher_track(packets, sent), "camera")])
        assert ans["type"] == "answer", ans
    return c


def _h264_only(pc: RTCPeerConnection) -> None:
    for t in pc.getTransceivers():
        if t.kind == "video":
            t.setCodecPreferences(codec_capabilities("video", "video/H264"))


class JanusParticipant:
    def __init__(self, http: aiohttp.ClientSession, url: str, room: int, name: str) -> None:
        self.js = JanusSession(http, url)
        self.room, self.name = room, name
        self.pcs: list[RTCPeerConnection] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.feed_id = 0

    async def publish(self, packets: list[EncodedPacket], sent: dict[bytes, float] | None) -> None:
        await self.js.create()
        h = await self.js.attach()
        r = await self.js.message(
            h, {"request": "join", "ptype": "publisher", "room": self.room, "display": self.name}
        )
        ev = await self.js.event(h, lambda e: e["plugindata"]["data"].get("videoroom") == "joined")
        self.feed_id = ev["plugindata"]["data"]["id"]
        pc = JANUS_RTC.new_peer_connection()
        self.pcs.append(pc)
        pc.addTransceiver(publisher_track(packets, sent), direction="sendonly")
        _h264_only(pc)
        JANUS_RTC.prepare(pc)
        await pc.setLocalDescription(await pc.createOffer())
        r = await self.js.message(
            h,
            {"request": "configure", "audio": False, "video": True},
            {"type": "offer", "sdp": pc.localDescription.sdp},
        )
        await self.js.trickle_done(h)
        ev = await self.js.event(h, lambda e: "jsep" in e)
        if os.environ.get("ROOMS_BENCH_DEBUG"):
            print(
                [ln for ln in ev["jsep"]["sdp"].splitlines() if "candidate" in ln],
                [ln for ln in pc.localDescription.sdp.splitlines() if "candidate" in ln],
            )
        await pc.setRemoteDescription(RTCSessionDescription(ev["jsep"]["sdp"], "answer"))
        del r
        for _ in range(100):  # Janus lists a publisher once its media flows
            if pc.connectionState == "connected":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)

    async def subscribe_all(self, counter: Counter) -> None:
        h = await self.js.attach()
        r = await self.js.message(h, {"request": "listparticipants", "room": self.room})
        if os.environ.get("ROOMS_BENCH_DEBUG"):
            print("listparticipants", r)
        parts = r["plugindata"]["data"]["participants"]
        feeds = [p for p in parts if p["id"] != self.feed_id and p.get("publisher")]
        for p in feeds:
            hh = h if p is feeds[0] else await self.js.attach()
            await self.js.message(
                hh,
                {
                    "request": "join",
                    "ptype": "subscriber",
                    "room": self.room,
                    "streams": [{"feed": p["id"]}],
                },
            )
            ev = await self.js.event(hh, lambda e: "jsep" in e)
            pc = JANUS_RTC.new_peer_connection()
            self.pcs.append(pc)
            key = f"{self.name}<-{p.get('display')}"

            @pc.on("track")
            def on_track(track: MediaStreamTrack, key: str = key) -> None:
                mark_passthrough(track)
                self.tasks.append(asyncio.create_task(consume(track, key, counter)))

            await pc.setRemoteDescription(RTCSessionDescription(ev["jsep"]["sdp"], "offer"))
            JANUS_RTC.prepare(pc)
            await pc.setLocalDescription(await pc.createAnswer())
            await self.js.message(
                hh, {"request": "start"}, {"type": "answer", "sdp": pc.localDescription.sdp}
            )
            await self.js.trickle_done(hh)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for pc in self.pcs:
            await pc.close()
        await self.js.close()


async def participants_worker(args: argparse.Namespace) -> None:
    packets = video_packets(Path(args.video))
    counter = Counter(args.t_start, args.t_end)
    names = args.names.split(",")
    if args.backend == "onair":
        clients = await asyncio.gather(
            *(onair_participant(args.url, args.room, n, packets, counter) for n in names)
        )
        await asyncio.sleep(max(0.0, args.t_end - time.time()) + 0.2)
        for c in clients:
            await c.close(leave=False)
    else:
        async with aiohttp.ClientSession() as http:
            parts = [JanusParticipant(http, args.url, int(args.room), n) for n in names]
            await asyncio.gather(*(p.publish(packets, None) for p in parts))
            await asyncio.sleep(max(0.0, args.t_subscribe - time.time()))
            await asyncio.gather(*(p.subscribe_all(counter) for p in parts))
            await asyncio.sleep(max(0.0, args.t_end - time.time()) + 0.2)
            for p in parts:
                await p.close()
    Path(args.out).write_text(json.dumps({"counts": counter.counts}))  # noqa: ASYNC240


# ------------------------------------------------------------------------ scenarios


async def latency_direct(packets: list[EncodedPacket], seconds: float) -> list[float]:
    sent: dict[bytes, float] = {}
    counter = Counter(time.time() + 1, time.time() + 1 + seconds, sent)
    a, b = RTC.new_peer_connection(), RTC.new_peer_connection()
    tasks: list[asyncio.Task[None]] = []

    @b.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        mark_passthrough(track)
        tasks.append(asyncio.create_task(consume(track, "direct", counter)))

    a.addTransceiver(publisher_track(packets, sent, loop=False), direction="sendonly")
    _h264_only(a)
    RTC.prepare(a)
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    RTC.prepare(b)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await asyncio.sleep(seconds + 1.5)
    for t in tasks:
        t.cancel()
    await a.close()
    await b.close()
    return counter.latencies


async def latency_onair(base: str, packets: list[EncodedPacket], seconds: float) -> list[float]:
    sent: dict[bytes, float] = {}
    counter = Counter(time.time() + 1.5, time.time() + 1.5 + seconds, sent)
    sub = await onair_participant(base, "bench-0", "sub", packets, counter, publish=False)
    pub = RoomClient(base, "bench-0", JoinTokens(SECRET).issue("bench-0", "pub"), rtc=RTC)
    await pub.connect()
    await pub.publish([(publisher_track(packets, sent, loop=False), "camera")])
    await asyncio.sleep(seconds + 2)
    await pub.close()
    await sub.close()
    return counter.latencies


async def latency_janus(url: str, packets: list[EncodedPacket], seconds: float) -> list[float]:
    sent: dict[bytes, float] = {}
    await janus_create_room(url, 4242, 4)
    counter = Counter(time.time() + 3, time.time() + 3 + seconds, sent)
    async with aiohttp.ClientSession() as http:
        pub = JanusParticipant(http, url, 4242, "pub")
        sub = JanusParticipant(http, url, 4242, "sub")
        await pub.publish(packets, sent)
        await sub.js.create()
        await sub.subscribe_all(counter)
        await asyncio.sleep(seconds + 3.5)
        await pub.close()
        await sub.close()
    return counter.latencies


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_ms": round(pct(values, 50), 2),
        "p95_ms": round(pct(values, 95), 2),
        "mean_ms": round(statistics.fmean(values), 2) if values else None,
    }


async def bench_latency(seconds: float, tmp: Path, janus: bool) -> dict[str, Any]:
    # Non-looping, every frame distinct: 30 fps * (seconds + 4).
    packets = encode_h264(
        int(FPS * (seconds + 4)), width=1280, height=720, fps=FPS, gop=60, bitrate=1_500_000
    )
    out: dict[str, Any] = {}
    out["direct"] = summary(await latency_direct(packets, seconds))
    proc, base = start_onair(tmp)
    try:
        out["onair_sfu"] = summary(await latency_onair(base, packets, seconds))
    finally:
        proc.terminate()
        proc.wait(5)
    if janus:
        jproc, url = start_janus(tmp)
        try:
            out["janus"] = summary(await latency_janus(url, packets, seconds))
        except Exception as exc:  # report, don't hide
            out["janus"] = {"error": repr(exc)}
        finally:
            jproc.terminate()
            jproc.wait(5)
    d = out["direct"]["p50_ms"]
    out["onair_added_p50_ms"] = round(out["onair_sfu"]["p50_ms"] - d, 2)
    if "p50_ms" in out.get("janus", {}):
        out["janus_added_p50_ms"] = round(out["janus"]["p50_ms"] - d, 2)
    return out


async def run_room(
    backend: str,
    url: str,
    room: str,
    n: int,
    seconds: float,
    tmp: Path,
    server_pid: int,
    video: Path,
    stats_url: str | None = None,
) -> dict[str, Any]:
    warmup = 8.0 + 0.6 * n
    now = time.time()
    t_subscribe = now + 3.0 + 0.3 * n
    t_start = now + warmup
    t_end = t_start + seconds
    names = [f"p{i}" for i in range(n)]
    groups = [names[i : i + 2] for i in range(0, n, 2)]
    procs = []
    outs = []
    for gi, g in enumerate(groups):
        out = tmp / f"{backend}-{n}-{gi}.json"
        outs.append(out)
        procs.append(
            subprocess.Popen(  # noqa: ASYNC220 - started here, awaited by polling below
                [
                    sys.executable,
                    __file__,
                    "participants",
                    "--backend",
                    backend,
                    "--url",
                    url,
                    "--room",
                    room,
                    "--names",
                    ",".join(g),
                    "--video",
                    str(video),
                    "--t-start",
                    str(t_start),
                    "--t-end",
                    str(t_end),
                    "--t-subscribe",
                    str(t_subscribe),
                    "--out",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    await asyncio.sleep(max(0.0, t_start - time.time()))
    c0, w0 = cpu_seconds(server_pid), time.monotonic()
    await asyncio.sleep(max(0.0, t_end - time.time()))
    c1, w1 = cpu_seconds(server_pid), time.monotonic()
    stats: dict[str, Any] = {}
    if stats_url:
        with contextlib.suppress(Exception):
            async with aiohttp.ClientSession() as http, http.get(stats_url) as resp:
                stats = await resp.json()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    counts: dict[str, int] = {}
    for out in outs:
        if out.exists():
            counts.update(json.loads(out.read_text())["counts"])
    expected = FPS * seconds
    tracks = n * (n - 1)
    ratios = sorted(counts.get(f"{a}<-{b}", 0) / expected for a in names for b in names if a != b)
    cpu = (c1 - c0) / (w1 - w0)
    result: dict[str, Any] = {
        "backend": backend,
        "participants": n,
        "forwarded_tracks": tracks,
        "server_cpu_pct": round(100 * cpu, 1),
        "cpu_pct_per_forwarded_track": round(100 * cpu / tracks, 2),
        "min_frame_ratio": round(ratios[0], 3) if ratios else 0.0,
        "median_frame_ratio": round(ratios[len(ratios) // 2], 3) if ratios else 0.0,
        "drops": bool(not ratios or ratios[0] < 0.95),
    }
    if stats:
        result["server_dropped_frames"] = stats["dropped"]
        if result["drops"] and os.environ.get("ROOMS_BENCH_DEBUG"):
            print(json.dumps(stats["detail"], indent=1), json.dumps(counts))
    return result


async def bench_scale(steps: list[int], seconds: float, tmp: Path, janus: bool) -> dict[str, Any]:
    video = tmp / "video720p.pickle"
    video_packets(video)
    results: list[dict[str, Any]] = []
    for n in steps:
        proc, base = start_onair(tmp)
        try:
            r = await run_room(
                "onair",
                base,
                f"bench-{n}",
                n,
                seconds,
                tmp,
                proc.pid,
                video,
                stats_url=f"{base}/stats",
            )
            results.append(r)
            print(json.dumps(r), flush=True)
        finally:
            proc.terminate()
            proc.wait(5)
        if janus:
            jproc, url = start_janus(tmp)
            try:
                await janus_create_room(url, 1000 + n, n + 1)
                r = await run_room("janus", url, str(1000 + n), n, seconds, tmp, jproc.pid, video)
                results.append(r)
                print(json.dumps(r), flush=True)
            except Exception as exc:
                results.append({"backend": "janus", "participants": n, "error": repr(exc)})
            finally:
                jproc.terminate()
                try:
                    jproc.wait(5)
                except subprocess.TimeoutExpired:
                    jproc.kill()
                    jproc.wait()
    out: dict[str, Any] = {"steps": results}
    first_drop = {
        b: next(
            (r["participants"] for r in results if r.get("backend") == b and r.get("drops")), None
        )
        for b in ("onair", "janus")
    }
    out["first_n_with_drops"] = first_drop
    ratios = []
    for n in steps:
        o = next(
            (
                r
                for r in results
                if r.get("backend") == "onair"
                and r["participants"] == n
                and "cpu_pct_per_forwarded_track" in r
            ),
            None,
        )
        j = next(
            (
                r
                for r in results
                if r.get("backend") == "janus"
                and r["participants"] == n
                and "cpu_pct_per_forwarded_track" in r
            ),
            None,
        )
        if o and j and j["cpu_pct_per_forwarded_track"] > 0:
            ratios.append(
                {
                    "participants": n,
                    "onair_over_janus": round(
                        o["cpu_pct_per_forwarded_track"] / j["cpu_pct_per_forwarded_track"], 2
                    ),
                }
            )
    out["cpu_ratio"] = ratios
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port-file", required=True)
    w = sub.add_parser("participants")
    for a in ("--backend", "--url", "--room", "--names", "--video", "--out"):
        w.add_argument(a, required=True)
    for a in ("--t-start", "--t-end", "--t-subscribe"):
        w.add_argument(a, type=float, required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--seconds", type=float, default=8)
    lat.add_argument("--no-janus", action="store_true")
    sc = sub.add_parser("scale")
    sc.add_argument("--steps", default="2,3,4,5,6")
    sc.add_argument("--seconds", type=float, default=8)
    sc.add_argument("--no-janus", action="store_true")
    args = ap.parse_args()
    if args.cmd == "serve":
        asyncio.run(serve(Path(args.port_file)))
        return
    if args.cmd == "participants":
        asyncio.run(participants_worker(args))
        return
    tmp = Path(tempfile.mkdtemp(prefix="onair-bench-rooms-"))
    try:
        if args.cmd == "latency":
            result = asyncio.run(bench_latency(args.seconds, tmp, not args.no_janus))
        else:
            steps = [int(x) for x in args.steps.split(",")]
            result = asyncio.run(bench_scale(steps, args.seconds, tmp, not args.no_janus))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"rooms_{args.cmd}.json"
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
