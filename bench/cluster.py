"""Benchmark: a cluster of onair nodes, in one run (issue 14's three figures).

**Edge.** Three `onair` nodes, each in a process of its own, share a private
redis-server: node A (the origin) ingests one synthetic 720p30 live stream
(low-latency mode, 200 ms parts; bench/hls_blocking.py's feed), nodes B and C
serve it by relaying from A (control/relay.py). The same N LL-HLS clients
(bench/hls_blocking.py's raw keep-alive clients, each following the preload
hint with blocking requests) run first all against A, then spread over B and C.
Reported side by side:

* part completion (on A) → blocking response at the client: p50/p90/p99;
* the p99 the edges add (B/C's p99 minus A's alone);
* upstream requests per URL from each edge to A (one per part and per
  blocking playlist is the target, however many clients).

**Failover.** Three real `onair serve` processes on a private redis-server;
ffmpeg publishes over RTMP to X, a viewer on Z follows the LL-HLS playlist
as a player does (blocking requests for the preload hint, plain reloads when
one fails). X is SIGKILLed, the encoder reconnects to Y one second later:
the time from the kill until the viewer on Z gets a part published after the
failover (the playlist's discontinuity count has grown). The killed node is
restarted and the next run kills Y; p50 over the runs.

**Cross-node SSE.** On the same three nodes: a subscriber to
`/v1/events/stream` on Z, live streams created one by one through X: from an
event's `created_at` to its arrival on Z, p50/p99.

Usage:
    .venv/bin/python bench/cluster.py [--clients 1000] [--seconds 20]
        [--client-procs 2] [--failover-runs 10] [--sse-events 200]

Targets (issue 14): p99 added by the edge <= 50 ms; one upstream request per
part per edge; failover p50 <= 3 s; cross-node SSE p99 <= 100 ms. Writes
bench/results/cluster.json; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import hls_blocking as hb  # noqa: E402


def node_main(
    role: str,
    redis_url: str | None,
    port_q: mp.Queue,  # type: ignore[type-arg]
    stop_ev: Any,
    seconds: float,
    data_dir: str | None = None,
    port: int = 0,
) -> None:
    """One node. `redis_url` None: a worker of one machine, on the SQLite
    database in `data_dir` and sharing `port` with the other workers
    (SO_REUSEPORT), reached by them on a loopback port of its own."""
    hb._raise_nofile()
    asyncio.run(_node(role, redis_url, port_q, stop_ev, seconds, data_dir, port))


async def _node(
    role: str,
    redis_url: str | None,
    port_q: mp.Queue,  # type: ignore[type-arg]
    stop_ev: Any,
    seconds: float,
    data_dir: str | None,
    port: int,
) -> None:
    import logging
    import tempfile
    import uuid

    import aiohttp
    from aiohttp import web

    from control.cli import bootstrap_admin_key
    from control.domain.api_keys import create_api_key
    from control.http.app import make_http_app
    from control.http.edge import edge_site
    from control.node import build_node
    from control.settings import load_settings

    logging.basicConfig(level=logging.WARNING)
    tmp = tempfile.TemporaryDirectory(prefix=f"onair-cluster-{role}-")
    worker = redis_url is None
    settings = load_settings(
        {},
        data_dir=data_dir or tmp.name,
        host="127.0.0.1",
        http_port=port,
        rtmp_port=0,
        srt_port=0,
        redis_url=redis_url,
        node_id=f"bench-{role}",
        workers=2 if worker else 1,
        worker_index=(1 if role != "origin" else 0) if worker else None,
        # every client of the benchmark comes from 127.0.0.1: the per-address
        # cap (256) is for the Internet, not for this
        http_max_connections_per_ip=100_000,
        max_connections=100_000,
    )
    node = build_node(settings)
    assert node.media is not None
    app = make_http_app(node)
    completed: dict[str, float] = {}

    async def report(_: web.Request) -> web.Response:
        assert node.media is not None
        relay = node.media.relay.upstream_requests
        return web.json_response(
            {
                "completed": completed,
                "cpu_s": time.process_time(),
                "upstream_requests": sum(relay.values()),
                "upstream_keys": len(relay),
                "upstream_max_per_key": max(relay.values(), default=0),
            }
        )

    app.router.add_get("/bench/report", report)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = edge_site(runner, "127.0.0.1", port, backlog=4096, reuse_port=worker or None)
    await site.start()
    private = site
    if worker:  # the shared port lands on any worker: the others reach this one here
        private = edge_site(runner, "127.0.0.1", 0, backlog=4096)
        await private.start()
    node.registry.url = f"http://127.0.0.1:{private.port}"  # where the other node reaches it
    await node.registry.beat()
    if role != "origin":
        port_q.put((private.port, None))
        await asyncio.to_thread(stop_ev.wait, seconds * 3 + 180)
        await runner.cleanup()
        tmp.cleanup()
        return

    key = await bootstrap_admin_key(node.store, settings.node_id)
    if key is None:
        _, key = await create_api_key(node.store, "admin", f"bench {uuid.uuid4().hex[:6]}")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{site.port}/v1/live-streams",
            json={"record": False, "latency_mode": "low"},
            headers={"Authorization": f"Bearer {key}"},
        ) as r:
            stream = await r.json()
    stream_id, playback_id = stream["id"], stream["playback_ids"][0]["id"]
    # as ingest does: the lifecycle grants the publish (and keeps this node the
    # stream's origin), then the publication starts
    await node.media.lifecycle.authorize_publish(
        stream["stream_key"], protocol="bench", remote="127.0.0.1"
    )
    pub = node.media.hub.publish(stream_id, hb.synthetic_tracks(), source="bench")
    live = node.media.hls.get(stream_id)
    assert live is not None
    live.listeners.append(lambda p: completed.__setitem__(f"{p.msn}.{p.index}", time.time()))
    port_q.put((private.port if worker else site.port, playback_id))
    await hb.synthetic_feed(pub, 2_500_000, seconds * 2 + 30, stop_ev)
    await asyncio.to_thread(stop_ev.wait, seconds * 3 + 180)
    pub.close()
    await runner.cleanup()
    tmp.cleanup()


def _get(port: int, path: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return dict(json.loads(r.read()))


def phase(
    args: argparse.Namespace, ctx: Any, ports: list[int], pid: str, origin_port: int
) -> dict[str, Any]:
    """The clients, spread over `ports` (a client process each in turn)."""
    out_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = max(args.client_procs, len(ports))
    per = [args.clients // procs + (1 if i < args.clients % procs else 0) for i in range(procs)]
    clients = [
        ctx.Process(
            target=hb.client_main,
            args=(ports[i % len(ports)], pid, k, args.seconds, out_q),
            daemon=True,
        )
        for i, k in enumerate(per)
    ]
    for c in clients:
        c.start()
    results = [out_q.get(timeout=args.seconds + 60) for _ in clients]
    for c in clients:
        c.join(timeout=10)
    completed: dict[str, float] = _get(origin_port, "/bench/report")["completed"]
    delays: list[float] = []
    late = 0
    errors: dict[str, int] = {}
    for res in results:
        for k, n in res["errors"].items():
            errors[k] = errors.get(k, 0) + n
        for key, sent, at in res["answers"]:
            done = completed.get(key)
            if done is None:
                continue
            if sent < done:
                delays.append((at - done) * 1000)
            else:
                late += 1
    return {
        "held_responses": len(delays),
        "late_requests": late,
        "delay_ms_p50": round(hb._pct(delays, 50), 1),
        "delay_ms_p90": round(hb._pct(delays, 90), 1),
        "delay_ms_p99": round(hb._pct(delays, 99), 1),
        "delay_ms_mean": round(statistics.fmean(delays), 1) if delays else None,
        "errors": errors,
    }


def _stop_nodes(stop_ev: Any, procs: dict[str, Any]) -> None:
    stop_ev.set()
    for p in procs.values():
        p.join(timeout=20)
        if p.is_alive():
            p.terminate()


def edge_part(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support.redis_server import redis_server

    roles = ("origin", "edge-b", "edge-c")
    ctx = mp.get_context("spawn")
    with redis_server() as redis_url:
        stop_ev = ctx.Event()
        queues = {role: ctx.Queue() for role in roles}
        procs = {
            role: ctx.Process(
                target=node_main,
                args=(role, redis_url, queues[role], stop_ev, args.seconds),
                daemon=True,
            )
            for role in roles
        }
        procs["origin"].start()
        origin_port, pid = queues["origin"].get(timeout=60)
        edge_ports = []
        for role in roles[1:]:
            procs[role].start()
            edge_ports.append(queues[role].get(timeout=60)[0])
        time.sleep(2.0)  # first parts; the origin's claim and registry record are in
        try:
            on_origin = phase(args, ctx, [origin_port], pid, origin_port)
            before = [_get(port, "/bench/report") for port in edge_ports]
            on_edge = phase(args, ctx, edge_ports, pid, origin_port)
            after = [_get(port, "/bench/report") for port in edge_ports]
        finally:
            _stop_nodes(stop_ev, procs)
    return {
        "origin": on_origin,
        "edge": on_edge,
        "edge_added_p99_ms": round(on_edge["delay_ms_p99"] - on_origin["delay_ms_p99"], 1),
        "edge_upstream_requests": sum(
            a["upstream_requests"] - b["upstream_requests"]
            for a, b in zip(after, before, strict=True)
        ),
        "edge_upstream_keys": [a["upstream_keys"] for a in after],
        "edge_upstream_max_per_key": max(a["upstream_max_per_key"] for a in after),
    }


def workers_part(args: argparse.Namespace) -> dict[str, Any]:
    """The same clients against one worker alone, then against two workers
    sharing its port (SQLite, one machine): the kernel spreads the clients'
    connections, and the worker without the stream relays it over loopback."""
    import socket
    import tempfile

    ctx = mp.get_context("spawn")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        shared = probe.getsockname()[1]
    data_dir = tempfile.mkdtemp(prefix="onair-workers-bench-")
    stop_ev = ctx.Event()
    queues = {role: ctx.Queue() for role in ("origin", "worker-1")}
    procs = {
        role: ctx.Process(
            target=node_main,
            args=(role, None, queues[role], stop_ev, args.seconds, data_dir, shared),
            daemon=True,
        )
        for role in queues
    }
    try:
        procs["origin"].start()
        origin_private, pid = queues["origin"].get(timeout=60)
        time.sleep(2.0)
        alone = phase(args, ctx, [shared], pid, origin_private)
        procs["worker-1"].start()
        other_private = queues["worker-1"].get(timeout=60)[0]
        time.sleep(2.0)
        before = _get(other_private, "/bench/report")
        both = phase(args, ctx, [shared], pid, origin_private)
        after = _get(other_private, "/bench/report")
    finally:
        _stop_nodes(stop_ev, procs)
    return {
        "one_worker": alone,
        "two_workers": both,
        "workers_added_p99_ms": round(both["delay_ms_p99"] - alone["delay_ms_p99"], 1),
        "worker_relay_requests": after["upstream_requests"] - before["upstream_requests"],
        "worker_relay_max_per_key": after["upstream_max_per_key"],
    }


_HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.m4s')
_DSEQ = re.compile(r"#EXT-X-DISCONTINUITY-SEQUENCE:(\d+)")


def discontinuities_at_newest_part(playlist: str) -> int | None:
    """How many discontinuities precede the newest part (the sequence's count
    plus the tags before it), or None when the playlist has no part."""
    m = _DSEQ.search(playlist)
    d, at = (int(m.group(1)) if m else 0), None
    for line in playlist.splitlines():
        if line == "#EXT-X-DISCONTINUITY":
            d += 1
        elif line.startswith("#EXT-X-PART:"):
            at = d
    return at


class Viewer:
    """A player on one node: blocking requests for the preload hint, a plain
    reload 100 ms after one fails; the discontinuity count at its newest part."""

    def __init__(self, base: str, pid: str) -> None:
        self.url = f"{base}/play/{pid}/media.m3u8"
        self.newest: int | None = None
        self.updated = asyncio.Event()

    async def run(self) -> None:
        import aiohttp

        hint: tuple[str, str] | None = None
        async with aiohttp.ClientSession() as http:
            while True:
                query = f"?_HLS_msn={hint[0]}&_HLS_part={hint[1]}" if hint else ""
                try:
                    async with http.get(
                        self.url + query, timeout=aiohttp.ClientTimeout(total=2.0)
                    ) as r:
                        text = await r.text() if r.status == 200 else ""
                except (aiohttp.ClientError, TimeoutError):
                    text = ""
                m = _HINT.search(text)
                d = discontinuities_at_newest_part(text) if text else None
                if m is None or d is None:
                    hint = None
                    await asyncio.sleep(0.1)
                    continue
                hint = (m.group(1), m.group(2))
                self.newest = d
                self.updated.set()
                self.updated = asyncio.Event()


async def failover_part(args: argparse.Namespace) -> dict[str, Any]:
    import contextlib
    import tempfile

    from tests.e2e._media import Publisher
    from tests.e2e._service import Api, ServiceProcess, rtmp_url
    from tests.support.redis_server import redis_server

    out: dict[str, Any] = {}
    with redis_server() as redis_url, tempfile.TemporaryDirectory(prefix="onair-fo-") as tmp:
        nodes = []
        for name in ("node-x", "node-y", "node-z"):
            svc = ServiceProcess(
                Path(tmp) / name / "data", {"ONAIR_REDIS_URL": redis_url, "ONAIR_NODE_ID": name}
            )
            svc.extra_env["ONAIR_NODE_URL"] = svc.url
            nodes.append(svc)
        publisher: Publisher | None = None
        try:
            for svc in nodes:
                await asyncio.to_thread(svc.start, 60.0)
            for svc in nodes[1:]:
                svc.admin_key = nodes[0].admin_key  # one store: the first made the key
            x, y, z = nodes
            if args.sse_events > 0:
                out["sse_ms"] = await sse_latency(Api(x), z, args.sse_events)
            if args.failover_runs > 0:
                api = Api(z)
                ls = await api.live_stream(record=False, reconnect_window_s=60)
                key, pid = ls["stream_key"], ls["playback_ids"][0]["id"]
                publisher = await Publisher.start(rtmp_url(x, key), 3600)
                await api.wait_stream_status(ls["id"], "active", within=30)
                viewer = Viewer(z.url, pid)
                watching = asyncio.create_task(viewer.run())
                origin, spare = x, y
                times: list[float] = []
                try:
                    for _ in range(args.failover_runs):
                        await asyncio.sleep(3.0)  # steady playback through the relay
                        before = viewer.newest
                        assert before is not None, "the viewer never got a part"
                        killed = time.monotonic()
                        await asyncio.to_thread(origin.kill)
                        await publisher.stop()
                        await asyncio.sleep(1.0)  # the encoder reconnects elsewhere
                        publisher = await Publisher.start(rtmp_url(spare, key), 3600)
                        while viewer.newest is None or viewer.newest <= before:
                            await asyncio.wait_for(viewer.updated.wait(), 30)
                        times.append(time.monotonic() - killed)
                        await asyncio.to_thread(origin.start, 60.0)
                        origin, spare = spare, origin
                finally:
                    watching.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watching
                out["failover_s"] = {
                    "runs": len(times),
                    "p50": round(statistics.median(times), 2),
                    "max": round(max(times), 2),
                    "all": [round(t, 2) for t in times],
                }
        finally:
            if publisher is not None:
                await publisher.stop()
            for svc in nodes:
                if svc.proc is not None:
                    await asyncio.to_thread(svc.stop, 15.0)
    return out


async def sse_latency(api: Any, subscriber: Any, events: int) -> dict[str, float]:
    """Live streams created through `api`'s node; their `live_stream.created`
    read from `subscriber`'s SSE: created_at → arrival."""
    import datetime

    import aiohttp

    wanted: set[str] = set()
    seen: dict[str, float] = {}
    """live stream id → ms from the event's created_at to its arrival (the bus
    may deliver it before the creating request's response is read)."""
    done = asyncio.Event()

    async def listen(ready: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {subscriber.admin_key}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(subscriber.url + "/v1/events/stream", headers=headers) as r,
        ):
            ready.set()
            async for line in r.content:
                now = time.time()
                if not line.startswith(b"data: "):
                    continue
                event = json.loads(line[6:])
                if event["type"] != "live_stream.created":
                    continue
                created = datetime.datetime.fromisoformat(event["created_at"]).timestamp()
                seen[event["data"]["id"]] = (now - created) * 1000
                if len(wanted) == events and wanted <= seen.keys():
                    done.set()

    ready = asyncio.Event()
    listening = asyncio.create_task(listen(ready))
    await ready.wait()
    await asyncio.sleep(0.5)
    for _ in range(events):
        ls = await api.live_stream(record=False)
        wanted.add(ls["id"])
        await asyncio.sleep(0.02)
    if wanted <= seen.keys():
        done.set()
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        listening.cancel()
    arrivals = [seen[i] for i in wanted]
    return {
        "events": len(arrivals),
        "p50": round(hb._pct(arrivals, 50), 1),
        "p99": round(hb._pct(arrivals, 99), 1),
        "max": round(max(arrivals), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--failover-runs", type=int, default=10, help="0: skip the failover part")
    ap.add_argument("--sse-events", type=int, default=200, help="0: skip the SSE part")
    ap.add_argument(
        "--workers",
        action="store_true",
        help="also: the clients against one worker, then two workers sharing its port",
    )
    args = ap.parse_args()

    row: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds}
    if args.clients > 0:
        row.update(edge_part(args))
        print(
            f"p99 part->response: origin alone {row['origin']['delay_ms_p99']} ms, edges "
            f"{row['edge']['delay_ms_p99']} ms (added {row['edge_added_p99_ms']} ms); "
            f"edge upstream: {row['edge_upstream_requests']} requests, at most "
            f"{row['edge_upstream_max_per_key']} per URL and edge",
            flush=True,
        )
    if args.workers and args.clients > 0:
        row["workers"] = workers_part(args)
        w = row["workers"]
        print(
            f"p50/p99 part->response: one worker {w['one_worker']['delay_ms_p50']}/"
            f"{w['one_worker']['delay_ms_p99']} ms, two workers on one port "
            f"{w['two_workers']['delay_ms_p50']}/{w['two_workers']['delay_ms_p99']} ms; "
            f"relay between workers: {w['worker_relay_requests']} requests, at most "
            f"{w['worker_relay_max_per_key']} per URL",
            flush=True,
        )
    if args.failover_runs > 0 or args.sse_events > 0:
        row.update(asyncio.run(failover_part(args)))
        if "failover_s" in row:
            print(f"failover: new parts on another node after {row['failover_s']}", flush=True)
        if "sse_ms" in row:
            print(f"cross-node SSE: {row['sse_ms']}", flush=True)
    row["load_average_1m"] = round(os.getloadavg()[0], 2)
    row["targets"] = {
        "edge_added_p99_ms": 50,
        "edge_upstream_max_per_key": 1,
        "failover_p50_s": 3.0,
        "sse_p99_ms": 100,
    }
    out = ROOT / "bench" / "results" / "cluster.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
