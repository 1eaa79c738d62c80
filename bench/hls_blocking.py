"""Benchmark: N concurrent LL-HLS clients holding blocking playlist requests on one stream.

One server process (hub + LiveHlsManager + aiohttp, fed by a synthetic 30 fps
H.264-sized + AAC feed in real time, low-latency mode: 200 ms parts) and a few
client processes (aiohttp), all on 127.0.0.1 with an OS-assigned port. Every
client loops like an LL-HLS player: it asks for the next part with
`_HLS_msn`/`_HLS_part` (from the previous answer's preload hint) and records
when the answer arrived. The server records when each part was completed. The
delay from part completion to response is reported as p50/p90/p99/max.

    .venv/bin/python bench/hls_blocking.py --clients 1000 --seconds 20 --client-procs 2

Target: p99 <= 100 ms. Prints a JSON summary on its last line; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- server ---------------------------------------------------------------------


def server_main(port_q: mp.Queue, stop_ev: Any, seconds: float, bitrate: int) -> None:  # type: ignore[type-arg]
    _raise_nofile()
    profile = os.environ.get("HLS_BENCH_PROFILE")
    if profile:
        import cProfile

        cProfile.runctx(
            "asyncio.run(_server(port_q, stop_ev, seconds, bitrate))", globals(), locals(), profile
        )
    else:
        asyncio.run(_server(port_q, stop_ev, seconds, bitrate))


async def _server(port_q: mp.Queue, stop_ev: Any, seconds: float, bitrate: int) -> None:  # type: ignore[type-arg]
    from aiohttp import web

    from ingest.hub import Hub, MediaUnit, TrackInfo, TrackKind
    from realtime.hls.http import add_test_routes
    from realtime.hls.manager import LiveHlsManager

    hub = Hub()
    manager = LiveHlsManager(hub)
    hub.observer = manager
    completed: dict[str, float] = {}
    served: list[tuple[str, float]] = []

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        response = await handler(request)
        msn, part = request.query.get("_HLS_msn"), request.query.get("_HLS_part")
        if msn is not None and part is not None and response.status == 200:
            served.append((f"{msn}.{part}", time.time()))
        return response

    app = web.Application(middlewares=[record])
    add_test_routes(app, manager.get)

    async def parts(_: web.Request) -> web.Response:
        return web.json_response(
            {"completed": completed, "served": served, "cpu_s": time.process_time()}
        )

    app.router.add_get("/bench/parts", parts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    sps = bytes.fromhex("6764001facd9")
    avcc = (
        bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, len(sps)])
        + sps
        + bytes([1, 0, 4])
        + bytes.fromhex("68ebe3cb")
    )
    tracks = (
        TrackInfo(TrackKind.VIDEO, "h264", 1000, avcc, width=1280, height=720),
        TrackInfo(TrackKind.AUDIO, "aac", 1000, bytes([0x11, 0x90]), sample_rate=48000, channels=2),
    )
    pub = hub.publish("bench", tracks, source="bench")
    live = manager.get("bench")
    assert live is not None
    live.listeners.append(lambda p: completed.__setitem__(f"{p.msn}.{p.index}", time.time()))
    port_q.put(port)

    frame_bytes = max(100, bitrate // 8 // 30)
    t0 = time.monotonic()
    v = a = 0
    while time.monotonic() - t0 < seconds + 5 and not stop_ev.is_set():
        now = time.monotonic() - t0
        while v / 30 <= now:
            ms = round(v * 1000 / 30)
            key = v % 30 == 0
            size = frame_bytes * (6 if key else 1)
            pub.write(MediaUnit(TrackKind.VIDEO, ms, ms, os.urandom(16) * (size // 16), key))
            v += 1
        while a * 1024 / 48000 <= now:
            ms = round(a * 1024 * 1000 / 48000)
            pub.write(MediaUnit(TrackKind.AUDIO, ms, ms, b"\x21" * 300, True))
            a += 1
        await asyncio.sleep(0.005)
    await asyncio.to_thread(stop_ev.wait, seconds + 120)
    await manager.close()
    await runner.cleanup()


# -- clients ----------------------------------------------------------------------


def client_main(port: int, n: int, seconds: float, out_q: mp.Queue) -> None:  # type: ignore[type-arg]
    _raise_nofile()
    out_q.put(asyncio.run(_clients(port, n, seconds)))


class _RawClient(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 client (cheap, so the server gets the CPU)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self.buf[:head_end]).lower()
        i = head.find(b"content-length:")
        length = int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None])
        if len(self.buf) < head_end + 4 + length:
            return
        status = int(head[9:12])
        body = bytes(self.buf[head_end + 4 : head_end + 4 + length])
        del self.buf[: head_end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    async def get(self, path: str) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return await asyncio.wait_for(self.waiter, 15)


async def _clients(port: int, n: int, seconds: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    path = "/play/bench/media.m3u8"
    answers: list[tuple[str, float]] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def one() -> None:
        _, client = await loop.create_connection(_RawClient, "127.0.0.1", port)
        next_part: tuple[int, int] | None = None
        try:
            while time.monotonic() < deadline:
                url = (
                    path
                    if next_part is None
                    else f"{path}?_HLS_msn={next_part[0]}&_HLS_part={next_part[1]}"
                )
                try:
                    status, body = await client.get(url)
                except (ConnectionError, TimeoutError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    return
                at = time.time()
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1
                    await asyncio.sleep(0.2)
                    continue
                if next_part is not None:
                    answers.append((f"{next_part[0]}.{next_part[1]}", at))
                hint = body.rsplit(b'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="', 1)
                if len(hint) != 2:
                    await asyncio.sleep(0.2)
                    continue
                msn, part = hint[1].split(b'"', 1)[0].split(b".")[:2]
                next_part = (int(msn), int(part))
        finally:
            if client.transport is not None:
                client.transport.close()

    await asyncio.gather(*(one() for _ in range(n)))
    return {"answers": answers, "errors": errors}


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--bitrate", type=int, default=2_500_000)
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    port_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    out_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    stop_ev = ctx.Event()
    server = ctx.Process(
        target=server_main, args=(port_q, stop_ev, args.seconds, args.bitrate), daemon=True
    )
    server.start()
    port = port_q.get(timeout=30)
    time.sleep(1.0)  # first parts
    per = [
        args.clients // args.client_procs + (1 if i < args.clients % args.client_procs else 0)
        for i in range(args.client_procs)
    ]
    clients = [
        ctx.Process(target=client_main, args=(port, k, args.seconds, out_q), daemon=True)
        for k in per
    ]
    for c in clients:
        c.start()
    results = [out_q.get(timeout=args.seconds + 60) for _ in clients]
    for c in clients:
        c.join(timeout=10)

    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/parts", timeout=10) as r:
        report = json.loads(r.read())
    completed: dict[str, float] = report["completed"]
    stop_ev.set()
    server.join(timeout=10)
    if server.is_alive():
        server.terminate()

    order = sorted(completed, key=lambda k: tuple(int(x) for x in k.split(".")))

    def satisfied_at(key: str) -> float | None:
        done = completed.get(key)
        if done is None:  # the hinted part never came: the next part satisfied it
            m, p = (int(x) for x in key.split("."))
            later = [k for k in order if tuple(int(x) for x in k.split(".")) > (m, p)]
            done = completed[later[0]] if later else None
        return done

    delays: list[float] = []
    for res in results:
        for key, at in res["answers"]:  # type: ignore[union-attr]
            done = satisfied_at(key)
            if done is not None:
                delays.append((at - done) * 1000)
    server_delays: list[float] = []
    for key, at in report["served"]:
        done = satisfied_at(key)
        if done is not None and at >= done:
            server_delays.append((at - done) * 1000)
    errors: dict[str, int] = {}
    for res in results:
        for k, v in res["errors"].items():  # type: ignore[union-attr]
            errors[k] = errors.get(k, 0) + v
    summary = {
        "clients": args.clients,
        "client_procs": args.client_procs,
        "seconds": args.seconds,
        "parts": len(completed),
        "responses": len(delays),
        "delay_ms_p50": round(_pct(delays, 50), 1),
        "delay_ms_p90": round(_pct(delays, 90), 1),
        "delay_ms_p99": round(_pct(delays, 99), 1),
        "delay_ms_max": round(max(delays), 1) if delays else None,
        "delay_ms_mean": round(statistics.fmean(delays), 1) if delays else None,
        "server_side_ms_p50": round(_pct(server_delays, 50), 1),
        "server_side_ms_p99": round(_pct(server_delays, 99), 1),
        "server_cpu_s": round(report["cpu_s"], 2),
        "server_cpu_us_per_response": round(
            report["cpu_s"] * 1e6 / max(1, len(report["served"])), 1
        ),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "errors": errors,
        "target_p99_ms": 100,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
