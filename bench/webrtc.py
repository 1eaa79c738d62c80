"""WebRTC benchmarks: glass-to-glass latency and WHEP fan-out.

    .venv/bin/python bench/webrtc.py latency [--seconds 10]
        WHIP -> WHEP: an aiortc publisher sends frames whose pixels carry a frame
        counter (capture time remembered per counter); an aiortc WHEP viewer
        decodes them and reads the counter back: latency = decode time - capture
        time. RTMP -> WHEP: the same frames piped into ffmpeg (x264 zerolatency)
        publishing to onair's RTMP server.
    .venv/bin/python bench/webrtc.py fanout [--steps 10,20,30,40,50,60] [--seconds 8]
        One ~2.5 Mbit/s 720p30 H.264 stream (fed into the hub like RTMP) to N WHEP
        viewers (aiortc clients, pass-through receivers, 10 per process, in other
        processes). Reports server CPU per viewer and whether every viewer got
        >= 90 % of the frames with no hub-reader drops.

Everything binds 127.0.0.1 with OS-assigned ports; all processes are stopped at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
from aiohttp import web
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack

from ingest.hub import Hub, MediaUnit, TrackInfo, TrackKind
from ingest.ports import PublishDenied, PublishGrant
from ingest.webrtc.config import WebRtcConfig
from ingest.webrtc.passthrough import enable_passthrough
from realtime.webrtc.routes import WebRtcRoutes, add_webrtc_routes
from tests.support.webrtc_client import delete_session, whep_play, whip_publish

W, H, FPS = 640, 360, 30
BITS = 16
BLOCK = W // BITS


class Authority:
    async def authorize_publish(
        self, stream_key: str, *, protocol: str, remote: str
    ) -> PublishGrant:
        if stream_key != "bench-key":
            raise PublishDenied("bad_key", "unknown key")
        return PublishGrant("ls_bench")


def resolve(playback_id: str, token: str | None) -> str:
    return "ls_bench"


async def start_server() -> tuple[web.AppRunner, str, Hub, WebRtcRoutes]:
    hub = Hub()
    app = web.Application()
    routes = add_webrtc_routes(
        app,
        hub=hub,
        authority=Authority(),
        resolve_playback=resolve,
        config=WebRtcConfig.loopback(),
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}", hub, routes


# -- clock-stamped frames ------------------------------------------------------------


def stamped_frame(counter: int) -> av.VideoFrame:
    frame = av.VideoFrame(W, H, "yuv420p")
    y = frame.planes[0]
    row_bits = bytearray(y.line_size)
    for bit in range(BITS):
        value = 235 if (counter >> bit) & 1 else 16
        row_bits[bit * BLOCK : (bit + 1) * BLOCK] = bytes([value]) * BLOCK
    texture = bytearray(y.line_size)
    for x in range(W):
        texture[x] = (x * 3 + counter * 5) & 0xFF
    rows = [bytes(row_bits)] * (H // 4) + [bytes(texture)] * (H - H // 4)
    y.update(b"".join(rows))
    for i in (1, 2):
        frame.planes[i].update(bytes([128]) * frame.planes[i].buffer_size)
    return frame


def read_counter(frame: av.VideoFrame) -> int | None:
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    if frame.width != W:
        frame = frame.reformat(width=W, height=H, format="yuv420p")
    y = frame.planes[0]
    data = bytes(y)
    row = (H // 8) * y.line_size
    value = 0
    for bit in range(BITS):
        px = data[row + bit * BLOCK + BLOCK // 2]
        if px > 128:
            value |= 1 << bit
    return value


class StampedTrack(VideoStreamTrack):
    def __init__(self, sent: dict[int, float]) -> None:
        super().__init__()
        self.sent = sent
        self.counter = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        self.counter += 1
        frame = stamped_frame(self.counter & 0xFFFF)
        frame.pts, frame.time_base = pts, time_base
        self.sent[self.counter & 0xFFFF] = time.time()
        return frame


async def measure_viewer(url: str, sent: dict[int, float], seconds: float) -> list[float]:
    pc, location = await whep_play(url, WebRtcConfig.loopback(), audio=False)
    track = next(t.receiver.track for t in pc.getTransceivers() if t.kind == "video")
    latencies: list[float] = []
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            frame = await asyncio.wait_for(track.recv(), 10)
            now = time.time()
            if not isinstance(frame, av.VideoFrame):
                continue
            counter = read_counter(frame)
            if counter is not None and counter in sent:
                latencies.append((now - sent[counter]) * 1000)
    finally:
        await delete_session(location)
        await pc.close()
    return latencies[FPS:]  # skip the start-up second


def summary(name: str, values: list[float]) -> dict[str, Any]:
    if not values:
        return {"name": name, "samples": 0}
    values = sorted(values)
    return {
        "name": name,
        "samples": len(values),
        "p50_ms": round(statistics.median(values), 1),
        "p90_ms": round(values[int(len(values) * 0.9) - 1], 1),
        "max_ms": round(values[-1], 1),
    }


async def bench_whip_whep(seconds: float) -> dict[str, Any]:
    runner, base, hub, routes = await start_server()
    sent: dict[int, float] = {}
    pc, location = await whip_publish(
        f"{base}/v1/whip", "bench-key", [StampedTrack(sent)], WebRtcConfig.loopback()
    )
    try:
        for _ in range(200):
            if hub.stream("ls_bench").live:
                break
            await asyncio.sleep(0.05)
        latencies = await measure_viewer(f"{base}/v1/whep/pb", sent, seconds)
    finally:
        await delete_session(location, "bench-key")
        await pc.close()
        await routes.close()
        await runner.cleanup()
    return summary("whip->whep", latencies)


async def bench_rtmp_whep(seconds: float) -> dict[str, Any]:
    from ingest.rtmp.server import RtmpServer

    runner, base, hub, routes = await start_server()
    rtmp = RtmpServer(hub, Authority(), host="127.0.0.1", port=0)
    await rtmp.start()
    sent: dict[int, float] = {}
    ffmpeg = await asyncio.create_subprocess_exec(
        "ffmpeg",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-s",
        f"{W}x{H}",
        "-r",
        str(FPS),
        "-i",
        "-",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-g",
        str(FPS),
        "-bf",
        "0",
        "-f",
        "flv",
        f"rtmp://127.0.0.1:{rtmp.port}/live/bench-key",
        stdin=asyncio.subprocess.PIPE,
    )
    assert ffmpeg.stdin is not None
    stop = asyncio.Event()

    async def feed() -> None:
        assert ffmpeg.stdin is not None
        t0 = time.monotonic()
        n = 0
        while not stop.is_set():
            n += 1
            frame = stamped_frame(n & 0xFFFF)
            data = b"".join(bytes(p) for p in frame.planes)
            sent[n & 0xFFFF] = time.time()
            ffmpeg.stdin.write(data)
            await ffmpeg.stdin.drain()
            await asyncio.sleep(max(0.0, t0 + n / FPS - time.monotonic()))

    feeder = asyncio.ensure_future(feed())
    try:
        for _ in range(200):
            if hub.stream("ls_bench").live:
                break
            await asyncio.sleep(0.05)
        latencies = await measure_viewer(f"{base}/v1/whep/pb", sent, seconds)
    finally:
        stop.set()
        feeder.cancel()
        with contextlib.suppress(BaseException):
            await feeder
        with contextlib.suppress(Exception):
            ffmpeg.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            ffmpeg.terminate()
        await ffmpeg.wait()
        await routes.close()
        await rtmp.stop()
        await runner.cleanup()
    return summary("rtmp->whep", latencies)


# -- fan-out --------------------------------------------------------------------------


def make_source(path: str, seconds: int = 10) -> None:
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=1280x720:rate={FPS}",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            "2500k",
            "-maxrate",
            "2500k",
            "-bufsize",
            "2500k",
            "-g",
            str(FPS * 2),
            "-bf",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
            "-b:a",
            "96k",
            path,
        ],
        check=True,
    )


async def feed_loop(hub: Hub, path: str, stop: asyncio.Event) -> None:
    with av.open(path) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        tracks = (
            TrackInfo(
                kind=TrackKind.VIDEO,
                codec="h264",
                timescale=90000,
                config=bytes(vs.codec_context.extradata or b""),
                width=vs.width,
                height=vs.height,
            ),
            TrackInfo(
                kind=TrackKind.AUDIO,
                codec="aac",
                timescale=48000,
                config=bytes(aus.codec_context.extradata or b""),
                sample_rate=48000,
                channels=2,
            ),
        )
        packets = []
        for p in c.demux():
            if p.size == 0 or p.dts is None or p.time_base is None:
                continue
            video = p.stream.type == "video"
            scale = 90000 if video else 48000
            at = float(p.dts * p.time_base)
            packets.append((video, int(p.dts * p.time_base * scale), bytes(p), p.is_keyframe, at))
    packets.sort(key=lambda x: x[4])
    duration = packets[-1][4] + 1 / FPS
    pub = hub.publish("ls_bench", tracks, source="rtmp")
    t0 = time.monotonic()
    n = 0
    try:
        while not stop.is_set():
            for video, ts, data, key, at in packets:
                wait = t0 + n * duration + at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                scale = 90000 if video else 48000
                off = int(n * duration * scale)
                pub.write(
                    MediaUnit(
                        kind=TrackKind.VIDEO if video else TrackKind.AUDIO,
                        dts=ts + off,
                        pts=ts + off,
                        data=data,
                        keyframe=key or not video,
                    )
                )
            n += 1
    finally:
        pub.close()


async def viewers_process(url: str, count: int, seconds: float) -> None:
    """Child process: `count` WHEP viewers with pass-through receivers; prints JSON."""
    config = WebRtcConfig.loopback()
    pcs = []
    counts = [0] * count

    async def one(i: int) -> None:
        pc, location = await whep_play(url, config)
        for t in pc.getTransceivers():
            enable_passthrough(t, ("H264", "opus"))
        pcs.append((pc, location))
        track = next(t.receiver.track for t in pc.getTransceivers() if t.kind == "video")
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                await track.recv()
                counts[i] += 1

    tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
    for _ in range(300):  # until every viewer has frames (or 30 s)
        if all(counts):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # past the start-up GOP burst
    print(json.dumps({"ready": sum(1 for c in counts if c)}), flush=True)
    # the parent says "go" once every child is ready: all windows line up
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    start = list(counts)
    await asyncio.sleep(seconds)
    got = [c - s for c, s in zip(counts, start, strict=True)]
    for t in tasks:
        t.cancel()
    for pc, location in pcs:
        with contextlib.suppress(Exception):
            await delete_session(location)
        await pc.close()
    print(json.dumps({"frames": got}), flush=True)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def bench_fanout(steps: list[int], seconds: float, per_process: int) -> list[dict[str, Any]]:
    tmp = tempfile.mkdtemp(prefix="onair-bench-webrtc-")
    source = os.path.join(tmp, "src.mp4")
    make_source(source)
    runner, base, hub, routes = await start_server()
    stop = asyncio.Event()
    feeder = asyncio.ensure_future(feed_loop(hub, source, stop))
    results = []
    try:
        await asyncio.sleep(1.0)
        # baseline CPU of the feed alone
        c0, t0 = _cpu(), time.monotonic()
        await asyncio.sleep(3.0)
        base_cpu = (_cpu() - c0) / (time.monotonic() - t0)
        for n in steps:
            procs = []
            left = n
            while left > 0:
                k = min(per_process, left)
                left -= k
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        __file__,
                        "_viewers",
                        "--url",
                        f"{base}/v1/whep/pb",
                        "--count",
                        str(k),
                        "--seconds",
                        str(seconds),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                    )
                )
            for p in procs:  # wait for each child's "ready" line
                assert p.stdout is not None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(p.stdout.readline(), 60)
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(b"go\n")
                await p.stdin.drain()
            c0, t0 = _cpu(), time.monotonic()
            drops0 = sum(
                s.video.reader.dropped for s in routes.whep.sessions.values() if s.video is not None
            )
            sent0 = sum(s.video.sent for s in routes.whep.sessions.values() if s.video is not None)
            await asyncio.sleep(seconds)
            cpu = (_cpu() - c0) / (time.monotonic() - t0)
            drops = (
                sum(
                    s.video.reader.dropped
                    for s in routes.whep.sessions.values()
                    if s.video is not None
                )
                - drops0
            )
            sessions = list(routes.whep.sessions.values())
            sent = sum(s.video.sent for s in sessions if s.video is not None) - sent0
            connected = sum(1 for s in sessions if s.pc.connectionState == "connected")
            frames: list[int] = []
            for p in procs:
                out, _ = await p.communicate()
                with contextlib.suppress(ValueError, IndexError):
                    frames += json.loads(out.decode().strip().splitlines()[-1])["frames"]
            expected = FPS * seconds
            healthy = sum(1 for f in frames if f >= 0.9 * expected)
            row = {
                "viewers": n,
                "connected": len(frames),
                "healthy": healthy,
                "server_cpu_pct": round(cpu * 100, 1),
                "cpu_per_viewer_pct": round((cpu - base_cpu) * 100 / max(1, n), 2),
                "min_fps": round(min(frames) / seconds, 1) if frames else 0,
                "hub_reader_drops": drops,
                "server_sessions_connected": connected,
                "server_fps_per_viewer": round(sent / max(1, len(sessions)) / seconds, 1),
                "loadavg_1m": round(os.getloadavg()[0], 1),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
            await asyncio.sleep(2.0)
            server_ok = drops == 0 and row["server_fps_per_viewer"] >= 0.9 * FPS
            if not server_ok and healthy < n * 0.5:
                break
    finally:
        stop.set()
        feeder.cancel()
        with contextlib.suppress(BaseException):
            await feeder
        await routes.close()
        await runner.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--seconds", type=float, default=10)
    fan = sub.add_parser("fanout")
    fan.add_argument("--steps", default="10,20,30,40,50,60")
    fan.add_argument("--seconds", type=float, default=8)
    fan.add_argument("--per-process", type=int, default=10)
    child = sub.add_parser("_viewers")
    child.add_argument("--url", required=True)
    child.add_argument("--count", type=int, required=True)
    child.add_argument("--seconds", type=float, required=True)
    args = ap.parse_args()
    if args.cmd == "latency":
        print(json.dumps(asyncio.run(bench_whip_whep(args.seconds))), flush=True)
        print(json.dumps(asyncio.run(bench_rtmp_whep(args.seconds))), flush=True)
    elif args.cmd == "fanout":
        steps = [int(x) for x in args.steps.split(",")]
        asyncio.run(bench_fanout(steps, args.seconds, args.per_process))
    else:
        asyncio.run(viewers_process(args.url, args.count, args.seconds))


if __name__ == "__main__":
    main()
