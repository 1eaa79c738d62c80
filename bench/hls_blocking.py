"""Benchmark: N concurrent LL-HLS clients holding blocking playlist requests on one stream.

One server process runs the whole service as `onair serve` builds it
(`control.node.build_node` + `control.http.app.make_http_app`: middlewares,
playback resolution through the store, metrics), on SQLite in a temp dir, with
one live stream created through `POST /v1/live-streams` and fed by a synthetic
30 fps H.264-sized + AAC feed in real time (low-latency mode: 200 ms parts). A
few client processes (a minimal raw HTTP/1.1 keep-alive client, so the server
gets the CPU) loop like LL-HLS players: each asks for the next part with
`_HLS_msn`/`_HLS_part` (from the previous answer's preload hint) and records
when the answer arrived. The server
records when each part was completed (and when each answer was sent). The
delay from part completion to response is reported as p50/p90/p99/max, client
side and server side, with the server's CPU per answer.

`--path edge` serves as `onair serve` does (the playback edge,
`realtime.hls.edge`, in front of aiohttp); `--path aiohttp` through the aiohttp
handlers alone; `--path both` (default) runs one after the other, side by side.

`--cmcd compare` measures what reading players' CMCD costs (issue 17: at most
5 % more server CPU per answer): edge runs side by side, clients sending no
CMCD, then CMCD as the query argument and as headers (what hls.js sends on a
playlist request, each client its own session id), each once with the server
ignoring it (`ONAIR_CMCD=false`: the cost of the bigger requests alone) and
once reading it; reported as ratios of CPU per answer (reading over ignoring
is what reading costs); `--repeat N` interleaves N such rounds and reports
the median ratio. `--cmcd query|headers|none` runs one such mode.

    .venv/bin/python bench/hls_blocking.py --clients 1000 --seconds 20 --client-procs 2
    .venv/bin/python bench/hls_blocking.py --clients 1000 --seconds 20 --cmcd compare --repeat 3

Target: p99 <= 100 ms. Writes bench/results/hls_blocking.json; bounded in time.
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


def server_main(
    port_q: mp.Queue, stop_ev: Any, seconds: float, bitrate: int, path: str, cmcd: str
) -> None:  # type: ignore[type-arg]
    _raise_nofile()
    profile = os.environ.get("HLS_BENCH_PROFILE")
    if profile:
        import cProfile

        cProfile.runctx(
            "asyncio.run(_server(port_q, stop_ev, seconds, bitrate, path, cmcd))",
            globals(),
            locals(),
            profile,
        )
    else:
        asyncio.run(_server(port_q, stop_ev, seconds, bitrate, path, cmcd))


async def _server(
    port_q: mp.Queue, stop_ev: Any, seconds: float, bitrate: int, path: str, cmcd: str
) -> None:  # type: ignore[type-arg]
    import logging
    import tempfile

    import aiohttp
    from aiohttp import web

    from control.cli import bootstrap_admin_key
    from control.http.app import make_http_app
    from control.http.edge import edge_site
    from control.node import build_node
    from control.settings import load_settings
    from realtime.hls.edge import EdgeRequest

    logging.basicConfig(level=logging.WARNING)
    tmp = tempfile.TemporaryDirectory(prefix="onair-hls-bench-")
    # every client comes from 127.0.0.1: lift the per-address connection cap
    # "<mode>-ignored": the clients send CMCD, the server does not read it
    settings = load_settings(
        cmcd=not cmcd.endswith("-ignored"),
        data_dir=tmp.name,
        host="127.0.0.1",
        http_port=0,
        rtmp_port=0,
        srt_port=0,
        http_max_connections_per_ip=100_000,
    )
    node = build_node(settings)
    assert node.media is not None
    app = make_http_app(node)
    completed: dict[str, float] = {}

    served: list[tuple[str, float, float]] = []

    def note(query: str, arrived: float, answered: float) -> None:
        """Server side: when a blocking request arrived and when its answer was sent."""
        # the clients put _HLS_msn and _HLS_part first: read just those two, so
        # this bookkeeping costs the same with or without a CMCD argument after
        q = dict(p.split("=", 1) for p in query.split("&", 2)[:2] if "=" in p)
        if "_HLS_msn" in q and "_HLS_part" in q:
            served.append((f"{q['_HLS_msn']}.{q['_HLS_part']}", arrived, answered))

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        arrived = time.time()
        response = await handler(request)
        if response.status == 200:
            note(request.query_string, arrived, time.time())
        return response

    app.middlewares.insert(0, record)

    async def parts(_: web.Request) -> web.Response:
        return web.json_response(
            {"completed": completed, "served": served, "cpu_s": time.process_time()}
        )

    app.router.add_get("/bench/parts", parts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site: web.TCPSite
    if path == "edge":
        site = edge_site(runner, "127.0.0.1", 0, backlog=4096)
        observe = site.edge.observe  # type: ignore[attr-defined]

        def observed(req: EdgeRequest) -> None:
            if req.status == 200:
                note(req.query, req.answered_at - req.duration_s, req.answered_at)
            if observe is not None:
                observe(req)

        site.edge.observe = observed  # type: ignore[attr-defined]
    else:
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    key = await bootstrap_admin_key(node.store, settings.node_id)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{port}/v1/live-streams",
            json={"record": False, "latency_mode": "low"},
            headers={"Authorization": f"Bearer {key}"},
        ) as r:
            stream = await r.json()
    stream_id, playback_id = stream["id"], stream["playback_ids"][0]["id"]

    tracks = synthetic_tracks()
    hub = node.media.hub
    pub = hub.publish(stream_id, tracks, source="bench")
    live = node.media.hls.get(stream_id)
    assert live is not None
    live.listeners.append(lambda p: completed.__setitem__(f"{p.msn}.{p.index}", time.time()))
    port_q.put((port, playback_id))

    await synthetic_feed(pub, bitrate, seconds + 5, stop_ev)
    await asyncio.to_thread(stop_ev.wait, seconds + 120)
    pub.close()
    await runner.cleanup()
    tmp.cleanup()


def synthetic_tracks() -> tuple[Any, ...]:
    """A 720p H.264 track and a 48 kHz AAC track (configs only: nothing decodes)."""
    from ingest.hub import TrackInfo, TrackKind

    sps = bytes.fromhex("6764001facd9")
    avcc = (
        bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, len(sps)])
        + sps
        + bytes([1, 0, 4])
        + bytes.fromhex("68ebe3cb")
    )
    return (
        TrackInfo(TrackKind.VIDEO, "h264", 1000, avcc, width=1280, height=720),
        TrackInfo(TrackKind.AUDIO, "aac", 1000, bytes([0x11, 0x90]), sample_rate=48000, channels=2),
    )


async def synthetic_feed(pub: Any, bitrate: int, seconds: float, stop_ev: Any) -> None:
    """30 fps H.264-sized frames (a keyframe a second) and AAC frames, in real time."""
    from ingest.hub import MediaUnit, TrackKind

    frame_bytes = max(100, bitrate // 8 // 30)
    t0 = time.monotonic()
    v = a = 0
    while time.monotonic() - t0 < seconds and not stop_ev.is_set():
        now = time.monotonic() - t0
        while v / 30 <= now:
            ms = round(v * 1000 / 30)
            key_frame = v % 30 == 0
            size = frame_bytes * (6 if key_frame else 1)
            pub.write(MediaUnit(TrackKind.VIDEO, ms, ms, os.urandom(16) * (size // 16), key_frame))
            v += 1
        while a * 1024 / 48000 <= now:
            ms = round(a * 1024 * 1000 / 48000)
            pub.write(MediaUnit(TrackKind.AUDIO, ms, ms, b"\x21" * 300, True))
            a += 1
        await asyncio.sleep(0.005)


# -- clients ----------------------------------------------------------------------


def client_main(port: int, pid: str, n: int, seconds: float, out_q: mp.Queue, cmcd: str) -> None:  # type: ignore[type-arg]
    _raise_nofile()
    out_q.put(asyncio.run(_clients(port, pid, n, seconds, cmcd)))


def cmcd_for(mode: str) -> tuple[str, bytes]:
    """(query argument, header lines) of one client's CMCD, as hls.js 1.6 sends it
    on a live playlist request; its own session id."""
    import urllib.parse
    import uuid

    sid = uuid.uuid4()
    mode = mode.removesuffix("-ignored")
    if mode == "query":
        value = f'bl=1200,br=2500,d=200,mtp=24000,ot=m,sf=h,sid="{sid}",st=l,tb=2500'
        return "CMCD=" + urllib.parse.quote(value, safe=""), b""
    if mode == "headers":
        return "", (
            b"CMCD-Request: bl=1200,mtp=24000\r\n"
            b"CMCD-Object: br=2500,d=200,ot=m,tb=2500\r\n"
            + f'CMCD-Session: sf=h,sid="{sid}",st=l\r\n'.encode()
        )
    return "", b""


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

    async def get(self, path: str, extra: bytes = b"") -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + extra + b"\r\n"
        )
        # no per-request timer (it would cost the shared CPU more than the parsing):
        # a closed connection fails the waiter, and _clients bounds the whole run
        return await self.waiter


async def _clients(port: int, pid: str, n: int, seconds: float, cmcd: str) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    path = f"/play/{pid}/media.m3u8"
    answers: list[tuple[str, float, float]] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def one() -> None:
        _, client = await loop.create_connection(_RawClient, "127.0.0.1", port)
        next_part: tuple[int, int] | None = None
        arg, headers = cmcd_for(cmcd)
        try:
            while time.monotonic() < deadline:
                query = (
                    "" if next_part is None else f"_HLS_msn={next_part[0]}&_HLS_part={next_part[1]}"
                )
                query = "&".join(q for q in (query, arg) if q)
                url = f"{path}?{query}" if query else path
                sent = time.time()
                try:
                    status, body = await client.get(url, headers)
                except (ConnectionError, TimeoutError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    return
                at = time.time()
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1
                    await asyncio.sleep(0.2)
                    continue
                if next_part is not None:
                    answers.append((f"{next_part[0]}.{next_part[1]}", sent, at))
                hint = body.rsplit(b'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="', 1)
                if len(hint) != 2:
                    await asyncio.sleep(0.2)
                    continue
                msn, part = hint[1].split(b'"', 1)[0].split(b".")[:2]
                next_part = (int(msn), int(part))
        finally:
            if client.transport is not None:
                client.transport.close()

    try:
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), seconds + 30)
    except TimeoutError:
        errors["run timed out"] = errors.get("run timed out", 0) + 1
    return {"answers": answers, "errors": errors}


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def run_one(args: argparse.Namespace, path: str, cmcd: str = "none") -> dict[str, object]:
    """One server (serving through `path`) and its clients; the summary."""
    ctx = mp.get_context("spawn")
    port_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    out_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    stop_ev = ctx.Event()
    server = ctx.Process(
        target=server_main,
        args=(port_q, stop_ev, args.seconds, args.bitrate, path, cmcd),
        daemon=True,
    )
    server.start()
    port, pid = port_q.get(timeout=60)
    time.sleep(1.0)  # first parts
    per = [
        args.clients // args.client_procs + (1 if i < args.clients % args.client_procs else 0)
        for i in range(args.client_procs)
    ]
    clients = [
        ctx.Process(target=client_main, args=(port, pid, k, args.seconds, out_q, cmcd), daemon=True)
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
    server.join(timeout=15)
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

    # "Holding blocking requests": a request sent before its part was complete was
    # held by the server; its delay is answer - completion. A request sent after
    # the part existed (its client was late) is answered at once and counted apart.
    delays: list[float] = []
    late: list[float] = []
    for res in results:
        for key, sent, at in res["answers"]:  # type: ignore[union-attr]
            done = satisfied_at(key)
            if done is not None:
                (delays if sent < done else late).append((at - done) * 1000)
    server_delays: list[float] = []
    for key, arrived, at in report["served"]:
        done = satisfied_at(key)
        if done is not None and arrived < done <= at:
            server_delays.append((at - done) * 1000)
    errors: dict[str, int] = {}
    for res in results:
        for k, v in res["errors"].items():  # type: ignore[union-attr]
            errors[k] = errors.get(k, 0) + v
    return {
        "path": path,
        "cmcd": cmcd,
        "clients": args.clients,
        "client_procs": args.client_procs,
        "seconds": args.seconds,
        "parts": len(completed),
        "held_responses": len(delays),
        "late_requests": len(late),
        "late_request_delay_ms_p50": round(_pct(late, 50), 1),
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


def cmcd_summary(rows: list[dict[str, object]]) -> dict[str, object]:
    """Per mode, the median CPU per answer over the rounds; per round, reading
    CMCD over ignoring it (what reading costs) and each mode over no CMCD at all;
    then the medians of those ratios."""
    by_round: list[dict[str, float]] = []
    for row in rows:
        if row["cmcd"] == "none" or not by_round:
            by_round.append({})
        by_round[-1][str(row["cmcd"])] = float(row["server_cpu_us_per_response"])  # type: ignore[arg-type]
    out: dict[str, object] = {"summary": "cmcd", "rounds": len(by_round)}
    for mode in sorted({m for r in by_round for m in r}):
        out[f"cpu_us_per_answer_{mode}"] = statistics.median(r[mode] for r in by_round if mode in r)
    pairs = [(m, "none") for m in ("query-ignored", "query", "headers-ignored", "headers")]
    pairs += [("query", "query-ignored"), ("headers", "headers-ignored")]
    for mode, base in pairs:
        ratios = [r[mode] / r[base] for r in by_round if mode in r and base in r]
        if not ratios:
            continue
        name = f"{mode}/{base}"
        out[f"ratios {name}"] = [round(x, 3) for x in ratios]
        out[f"median {name}"] = round(statistics.median(ratios), 3)
        target = " (target <= 1.05: what reading CMCD costs)" if base != "none" else ""
        print(
            f"CPU per answer, {name}: median {out[f'median {name}']}x"
            f" {out[f'ratios {name}']}{target}"
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--bitrate", type=int, default=2_500_000)
    ap.add_argument(
        "--path",
        choices=("edge", "aiohttp", "both"),
        default="both",
        help="serve through the playback edge (as `onair serve` does), plain aiohttp, or both",
    )
    ap.add_argument(
        "--cmcd",
        choices=("none", "query", "headers", "query-ignored", "headers-ignored", "compare"),
        default=None,
        help="clients send CMCD (edge path); compare: none, query and headers side by side",
    )
    ap.add_argument("--repeat", type=int, default=1, help="rounds of --cmcd runs (median)")
    args = ap.parse_args()
    if args.cmcd is not None:
        modes = (
            ["none", "query-ignored", "query", "headers-ignored", "headers"]
            if args.cmcd == "compare"
            else [args.cmcd]
        )
        # interleaved rounds: a shared machine's drift hits every mode alike
        runs = [("edge", m) for _ in range(args.repeat) for m in modes]
    else:
        runs = [(p, "none") for p in (["edge", "aiohttp"] if args.path == "both" else [args.path])]
    rows = []
    for path, mode in runs:
        row = run_one(args, path, mode)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.cmcd is not None:
        summary = cmcd_summary(rows)
        rows.append(summary)
        print(json.dumps(summary))
    elif len(rows) == 2:
        edge, plain = rows
        print(
            f"p99 delay (client side): edge {edge['delay_ms_p99']} ms,"
            f" aiohttp {plain['delay_ms_p99']} ms;"
            f" server CPU per answer: edge {edge['server_cpu_us_per_response']} us,"
            f" aiohttp {plain['server_cpu_us_per_response']} us"
        )
    name = "hls_blocking_cmcd.json" if args.cmcd is not None else "hls_blocking.json"
    out = Path(__file__).resolve().parent / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
