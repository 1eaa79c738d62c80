"""Benchmark: live LL-HLS from the origin and from an edge node, in one run.

Two `onair` nodes, each in a process of its own, share a private redis-server:
node A (the origin) ingests one synthetic 720p30 live stream (low-latency mode,
200 ms parts; bench/hls_blocking.py's feed), node B serves it by relaying from
A (control/relay.py). The same N LL-HLS clients (bench/hls_blocking.py's raw
keep-alive clients, each following the preload hint with blocking requests)
run first against A, then against B. Reported side by side:

* part completion (on A) → blocking response at the client: p50/p90/p99;
* the p99 the edge adds (B's p99 minus A's);
* upstream requests per part from B to A (one per part and per blocking
  playlist is the target, however many clients).

Usage:
    .venv/bin/python bench/cluster.py [--clients 1000] [--seconds 20] [--client-procs 2]

Target (issue 14): p99 added by the edge <= 50 ms; one upstream request per
part per edge. Writes bench/results/cluster.json; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import hls_blocking as hb  # noqa: E402


def node_main(role: str, redis_url: str, port_q: mp.Queue, stop_ev: Any, seconds: float) -> None:  # type: ignore[type-arg]
    hb._raise_nofile()
    asyncio.run(_node(role, redis_url, port_q, stop_ev, seconds))


async def _node(role: str, redis_url: str, port_q: mp.Queue, stop_ev: Any, seconds: float) -> None:  # type: ignore[type-arg]
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
    settings = load_settings(
        {},
        data_dir=tmp.name,
        host="127.0.0.1",
        http_port=0,
        rtmp_port=0,
        redis_url=redis_url,
        node_id=f"bench-{role}",
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
    site = edge_site(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    node.registry.url = f"http://127.0.0.1:{site.port}"  # where the other node reaches it
    await node.registry.beat()
    if role != "origin":
        port_q.put((site.port, None))
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
    port_q.put((site.port, playback_id))
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
    args: argparse.Namespace, ctx: Any, port: int, pid: str, origin_port: int
) -> dict[str, Any]:
    out_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    per = [
        args.clients // args.client_procs + (1 if i < args.clients % args.client_procs else 0)
        for i in range(args.client_procs)
    ]
    clients = [
        ctx.Process(target=hb.client_main, args=(port, pid, k, args.seconds, out_q), daemon=True)
        for k in per
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


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()

    from tests.support.redis_server import redis_server

    ctx = mp.get_context("spawn")
    with redis_server() as redis_url:
        stop_ev = ctx.Event()
        queues = {role: ctx.Queue() for role in ("origin", "edge")}
        procs = {
            role: ctx.Process(
                target=node_main,
                args=(role, redis_url, queues[role], stop_ev, args.seconds),
                daemon=True,
            )
            for role in ("origin", "edge")
        }
        procs["origin"].start()
        origin_port, pid = queues["origin"].get(timeout=60)
        procs["edge"].start()
        edge_port, _ = queues["edge"].get(timeout=60)
        time.sleep(2.0)  # first parts; the origin's claim and registry record are in
        try:
            on_origin = phase(args, ctx, origin_port, pid, origin_port)
            before = _get(edge_port, "/bench/report")
            on_edge = phase(args, ctx, edge_port, pid, origin_port)
            after = _get(edge_port, "/bench/report")
        finally:
            stop_ev.set()
            for p in procs.values():
                p.join(timeout=20)
                if p.is_alive():
                    p.terminate()
    upstream = after["upstream_requests"] - before["upstream_requests"]
    row = {
        "clients": args.clients,
        "seconds": args.seconds,
        "origin": on_origin,
        "edge": on_edge,
        "edge_added_p99_ms": round(on_edge["delay_ms_p99"] - on_origin["delay_ms_p99"], 1),
        "edge_upstream_requests": upstream,
        "edge_upstream_keys": after["upstream_keys"],
        "edge_upstream_max_per_key": after["upstream_max_per_key"],
        "load_average_1m": round(os.getloadavg()[0], 2),
        "target_added_p99_ms": 50,
    }
    print(
        f"p99 part->response: origin {on_origin['delay_ms_p99']} ms, edge "
        f"{on_edge['delay_ms_p99']} ms (added {row['edge_added_p99_ms']} ms); "
        f"edge upstream: {upstream} requests, at most {row['edge_upstream_max_per_key']} per URL",
        flush=True,
    )
    out = ROOT / "bench" / "results" / "cluster.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
