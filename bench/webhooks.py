"""Webhook delivery benchmark: drain rate and first-attempt latency, SQLite and Redis.

    .venv/bin/python bench/webhooks.py [--deliveries 10000] [--latency-samples 200]
                                       [--backends sqlite,redis]

For each backend: N events are committed and dispatched (N queued deliveries
to one endpoint), then a WebhookService drains them to a local aiohttp
receiver running in another process (which answers 200). Then, with the
service idle, single events are committed one at a time and the time from
just before `commit()` to the receiver's arrival timestamp is measured
(notify() is called after the commit, as the API does). Targets: ≥ 1,000
deliveries/s and first-attempt p50 ≤ 100 ms. Redis runs against a private
redis-server (tests/support/redis_server.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiohttp import ClientSession, web  # noqa: E402

from control.ids import new_id  # noqa: E402
from control.outbox import Outbox  # noqa: E402
from control.store.base import EventDraft, Put, Store  # noqa: E402
from control.store.redis import RedisStore  # noqa: E402
from control.store.sqlite import SqliteStore  # noqa: E402
from control.webhooks import ENDPOINTS, WebhookService, new_webhook_secret  # noqa: E402
from control.webhooks.dispatcher import Dispatcher  # noqa: E402
from control.webhooks.model import queue_for  # noqa: E402


# -- receiver process -----------------------------------------------------------------------
def serve_receiver() -> None:
    arrivals: dict[str, float] = {}
    count = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        arrivals.setdefault(request.headers.get("webhook-id", ""), time.time())
        count += 1
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"count": count, "arrivals": arrivals})

    async def reset(request: web.Request) -> web.Response:
        nonlocal count
        arrivals.clear()
        count = 0
        return web.json_response({})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_get("/stats", stats)
        app.router.add_post("/reset", reset)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(port, flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


# -- benchmark -----------------------------------------------------------------------------------
async def run_backend(
    name: str, store: Store, base_url: str, n: int, samples: int, per_endpoint: int = 64
) -> dict[str, Any]:
    await store.open()
    http = ClientSession()
    try:
        await http.post(f"{base_url}/reset")
        endpoint_id = new_id("we")
        await store.commit(
            [
                Put(
                    ENDPOINTS,
                    endpoint_id,
                    {"url": f"{base_url}/hook", "events": [], "secret": new_webhook_secret()},
                )
            ]
        )
        # N events, committed in batches of 100 (as many API requests would)
        for i in range(0, n, 100):
            await store.commit(
                [],
                [
                    EventDraft("asset.progress", f"as_{j % 50}", {"i": j})
                    for j in range(i, min(n, i + 100))
                ],
            )
        t0 = time.perf_counter()
        dispatcher = Dispatcher(store, batch=500)
        while await dispatcher.dispatch_once():
            pass
        dispatch_s = time.perf_counter() - t0
        queued = await store.queue_depth(queue_for(endpoint_id))
        assert queued == n, (queued, n)

        svc = WebhookService(
            store,
            outbox=Outbox(store),
            node_id="bench",
            max_in_flight=max(64, per_endpoint),
            per_endpoint_concurrency=per_endpoint,
            poll_interval_s=0.5,
            allow_private=True,
            timeout_s=10,
        )
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        await svc.start()
        while await store.queue_depth(queue_for(endpoint_id)) > 0:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        drain_s = time.perf_counter() - t0
        drain_cpu_s = time.process_time() - cpu0
        stats = await (await http.get(f"{base_url}/stats")).json()
        received = stats["count"]

        # first-attempt latency, one event at a time, service idle
        await asyncio.sleep(0.3)
        starts: dict[str, float] = {}
        for i in range(samples):
            t = time.time()
            (ev,) = await store.commit([], [EventDraft("live_stream.active", f"ls_{i}", {})])
            svc.notify()
            starts[ev.id] = t
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = await (await http.get(f"{base_url}/stats")).json()
            if all(eid in stats["arrivals"] for eid in starts):
                break
            await asyncio.sleep(0.05)
        lat = sorted(
            (stats["arrivals"][e] - t) * 1000 for e, t in starts.items() if e in stats["arrivals"]
        )
        await svc.stop()
        return {
            "backend": name,
            "deliveries": n,
            "received": received,
            "dispatch_per_s": n / dispatch_s,
            "drain_per_s": n / drain_s,
            "end_to_end_per_s": n / (dispatch_s + drain_s),
            "drain_cpu_ms_per_delivery": drain_cpu_s * 1000 / n,
            "lat_p50_ms": statistics.median(lat) if lat else float("nan"),
            "lat_p90_ms": lat[int(len(lat) * 0.9) - 1] if lat else float("nan"),
            "lat_p99_ms": lat[max(0, int(len(lat) * 0.99) - 1)] if lat else float("nan"),
            "lat_samples": len(lat),
        }
    finally:
        await http.close()
        await store.close()


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'backend':<8} {'deliveries':>10} {'dispatch/s':>11} {'drain/s':>9} "
        f"{'e2e/s':>8} {'cpu ms/dlv':>10} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['backend']:<8} {r['received']:>10} {r['dispatch_per_s']:>11.0f} "
            f"{r['drain_per_s']:>9.0f} {r['end_to_end_per_s']:>8.0f} "
            f"{r['drain_cpu_ms_per_delivery']:>10.3f} {r['lat_p50_ms']:>7.1f} "
            f"{r['lat_p90_ms']:>7.1f} {r['lat_p99_ms']:>7.1f}"
        )
    print("targets: drain ≥ 1000 deliveries/s, first-attempt p50 ≤ 100 ms")
    print(
        "cpu ms/dlv = CPU of the service process per delivery while draining (the receiver "
        "and redis-server run in other processes); load average now: "
        + " ".join(f"{x:.1f}" for x in os.getloadavg())
    )


async def amain(args: argparse.Namespace) -> list[dict[str, Any]]:
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        base_url = f"http://127.0.0.1:{port}"
        rows = []
        backends = args.backends.split(",")
        if "sqlite" in backends:
            with tempfile.TemporaryDirectory() as tmp:
                store = SqliteStore(Path(tmp) / "bench.db")
                rows.append(
                    await run_backend(
                        "sqlite", store, base_url, args.deliveries, args.latency_samples
                    )
                )
        if "redis" in backends:
            from tests.support.redis_server import redis_server, redis_server_binary

            if redis_server_binary() is None:
                print("redis-server not installed: skipping redis", file=sys.stderr)
            else:
                with redis_server() as url:
                    rows.append(
                        await run_backend(
                            "redis",
                            RedisStore(url),
                            base_url,
                            args.deliveries,
                            args.latency_samples,
                        )
                    )
        return rows
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--backends", default="sqlite,redis")
    parser.add_argument(
        "--per-endpoint", type=int, default=64, help="per-endpoint concurrency (one endpoint)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.serve:
        serve_receiver()
        return
    rows = asyncio.run(amain(args))
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    os.environ.get("ONAIR_BENCH_STRICT") and sys.exit(
        0 if all(r["drain_per_s"] >= 1000 and r["lat_p50_ms"] <= 100 for r in rows) else 1
    )


if __name__ == "__main__":
    main()
