"""Abuse benchmark: one `onair serve` node unattacked, then attacked, in one run.

What it measures, in each phase, side by side:

* glass-to-glass latency of a live stream in headless Chromium (hls.js
  `lowLatencyMode`), with bench/glass_to_glass.py's stamped publisher and page;
* the API's p99 (GET /v1/live-streams/{id} ten times a second);
* webhook first-attempt p50: a stream renamed twice a second, from the event's
  commit (`created_at`) to its first arrival at a receiver on loopback.

The attack (in a process of its own, so the probes measure the server and not
an event loop busy with the attack; from other loopback addresses, bounded,
stopped at the end):
`--connections` (2,000) idle or dripping connections from 127.0.0.2, and a
thumbnail flood (`--thumb-workers` workers asking for random times of a VOD
asset) from 127.0.0.3 — tests/support/abuse.py.

Usage:
    .venv/bin/python bench/abuse.py [--seconds 20] [--warmup 5] [--connections 2000]
        [--thumb-workers 16]

Prints a table and writes bench/results/abuse.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import glass_to_glass as g2g  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def pct(values: list[float], p: float) -> float | None:
    return round(g2g.pct(values, p) * 1000, 1) if values else None


def attack_main(
    port: int,
    url: str,
    vod_pid: str,
    vod_duration: float,
    connections: int,
    thumb_workers: int,
    stop: Any,
    out: Any,
) -> None:
    """The attack, in its own process until `stop` is set; its counts to `out`."""
    from tests.support.abuse import ConnectionFlood, ThumbnailFlood

    async def attack() -> dict[str, Any]:
        flood = ConnectionFlood("127.0.0.1", port, connections=connections)
        thumbs = ThumbnailFlood(url, vod_pid, vod_duration, workers=thumb_workers)
        await flood.start()
        await thumbs.start()
        await asyncio.to_thread(stop.wait, 600)
        report = {
            "connections_opened": flood.opened,
            "connections_refused": dict(flood.refused),
            "dripping_cut": flood.cut,
            "held_at_end": flood.held_now,
            "thumbnail_answers": {str(k): v for k, v in thumbs.statuses.items()},
        }
        await thumbs.stop()
        await flood.stop()
        return report

    out.put(asyncio.run(attack()))


class Probes:
    """API latency and webhook first-attempt latency while a phase runs."""

    def __init__(self, base: str, key: str, stream_id: str) -> None:
        self.base = base
        self.key = key
        self.stream_id = stream_id
        self.api: list[float] = []
        self.api_errors = 0
        self.webhook: list[float] = []
        self.sent: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        self.api, self.webhook, self.api_errors = [], [], 0

    async def receive(self, body: dict[str, Any]) -> None:
        if body.get("type") != "live_stream.updated":
            return
        created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00")).timestamp()
        self.webhook.append(time.time() - created)

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._api()), asyncio.ensure_future(self._rename())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _api(self) -> None:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.key}"}
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as s:
            while True:
                t0 = time.perf_counter()
                try:
                    async with s.get(f"{self.base}/v1/live-streams/{self.stream_id}") as r:
                        await r.read()
                        ok = r.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if ok:
                    self.api.append(time.perf_counter() - t0)
                else:
                    self.api_errors += 1
                await asyncio.sleep(0.1)

    async def _rename(self) -> None:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.key}"}
        async with aiohttp.ClientSession(headers=headers) as s:
            n = 0
            while True:
                n += 1
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.patch(
                        f"{self.base}/v1/live-streams/{self.stream_id}", json={"name": f"n{n}"}
                    ) as r:
                        await r.read()
                await asyncio.sleep(0.5)


async def start_receiver(probes: Probes) -> tuple[Any, int]:
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        await probes.receive(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = g2g.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def make_vod(base: str, key: str, work: Path) -> tuple[str, float]:
    import aiohttp

    from tests.e2e._media import make_file

    src = await make_file(
        work / "vod.mp4",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
        "-t", "20", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p",
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(f"{base}/v1/uploads", json={}) as r:
            up = await r.json()
        async with aiohttp.ClientSession() as plain:
            async with plain.put(up["url"], data=src.read_bytes()) as r:
                asset_id = (await r.json())["asset_id"]
        for _ in range(300):
            async with s.get(f"{base}/v1/assets/{asset_id}") as r:
                asset = await r.json()
            if asset["status"] == "ready":
                return asset["playback_ids"][0]["id"], float(asset["duration_s"])
            await asyncio.sleep(0.2)
    raise RuntimeError("the VOD asset for the thumbnail flood never became ready")


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import aiohttp

    from tests.control.api.service_process import ServiceProcess

    page_port = g2g.free_port()
    page_runner = await g2g.start_page_server(page_port)
    svc = ServiceProcess(work / "data")
    pub = None
    receiver = None
    out: dict[str, Any] = {"phases": {}}
    try:
        await asyncio.to_thread(svc.start)
        assert svc.admin_key
        key = svc.admin_key
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(headers=headers) as s:
            async with s.post(
                f"{svc.url}/v1/live-streams",
                json={"name": "abuse", "latency_mode": "low", "record": False},
            ) as r:
                ls = await r.json()
        probes = Probes(svc.url, key, ls["id"])
        receiver, hook_port = await start_receiver(probes)
        async with aiohttp.ClientSession(headers=headers) as s:
            async with s.post(
                f"{svc.url}/v1/webhook-endpoints",
                json={"url": f"http://127.0.0.1:{hook_port}/hook", "events": ["live_stream.*"]},
            ) as r:
                assert r.status == 201, await r.text()
        vod_pid, vod_duration = await make_vod(svc.url, key, work)
        t0_ms = int(time.time() * 1000)
        total = 2 * (args.warmup + args.seconds + 20) + 30
        pub = g2g.start_publisher(
            f"rtmp://127.0.0.1:{svc.rtmp_port}/live/{ls['stream_key']}",
            t0_ms,
            total,
            args,
            work / "publisher.log",
        )
        playlist = f"{svc.url}/play/{ls['playback_ids'][0]['id']}.m3u8"
        await g2g.wait_playlist(playlist, 20)
        target = g2g.Target(
            "onair",
            "hls.js lowLatencyMode",
            f"http://127.0.0.1:{page_port}/?ll=1&t0={t0_ms}&src={playlist}",
            playlist,
            "",
        )
        probes.start()
        for phase in ("unattacked", "attacked"):
            attacker = stop_attack = attack_out = None
            if phase == "attacked":
                # in a process of its own: the probes below measure the server, not
                # an event loop busy reconnecting 2,000 sockets
                ctx = mp.get_context("spawn")
                stop_attack, attack_out = ctx.Event(), ctx.Queue()
                attacker = ctx.Process(
                    target=attack_main,
                    args=(
                        svc.port,
                        svc.url,
                        vod_pid,
                        vod_duration,
                        args.connections,
                        args.thumb_workers,
                        stop_attack,
                        attack_out,
                    ),
                    daemon=True,
                )
                attacker.start()
                await asyncio.sleep(1.0)  # the flood is up
            print(f"  {phase} ...", flush=True)
            measuring = asyncio.ensure_future(g2g.measure(target, t0_ms, args.warmup, args.seconds))
            await asyncio.sleep(args.warmup)
            probes.reset()
            result = await measuring
            row: dict[str, Any] = {
                "g2g_p50_ms": result.p50_ms,
                "g2g_p95_ms": result.p95_ms,
                "g2g_samples": result.samples,
                "stalls": result.waiting_events,
                "api_p50_ms": pct(probes.api, 0.5),
                "api_p99_ms": pct(probes.api, 0.99),
                "api_requests": len(probes.api),
                "api_errors": probes.api_errors,
                "webhook_first_attempt_p50_ms": pct(probes.webhook, 0.5),
                "webhook_deliveries": len(probes.webhook),
            }
            if attacker is not None and stop_attack is not None and attack_out is not None:
                stop_attack.set()
                row["attack"] = await asyncio.to_thread(attack_out.get, True, 60)
                await asyncio.to_thread(attacker.join, 30)
            out["phases"][phase] = row
        await probes.stop()
    finally:
        g2g.kill_group(pub)
        if receiver is not None:
            await receiver.cleanup()
        await page_runner.cleanup()
        with contextlib.suppress(Exception):
            svc.kill()
    return out


def report(out: dict[str, Any]) -> None:
    quiet, hit = out["phases"]["unattacked"], out["phases"]["attacked"]
    print(f"{'':34} {'unattacked':>12} {'attacked':>12} {'ratio':>7}")
    for name in (
        "g2g_p50_ms",
        "g2g_p95_ms",
        "api_p50_ms",
        "api_p99_ms",
        "webhook_first_attempt_p50_ms",
    ):
        a, b = quiet.get(name), hit.get(name)
        ratio = f"{b / a:.2f}" if a and b else "-"
        print(f"{name:34} {a!s:>12} {b!s:>12} {ratio:>7}")
    print(f"{'api errors':34} {quiet['api_errors']!s:>12} {hit['api_errors']!s:>12}")
    print(f"{'stalls':34} {quiet['stalls']!s:>12} {hit['stalls']!s:>12}")
    print("attack:", json.dumps(hit.get("attack")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--thumb-workers", type=int, default=16)
    parser.add_argument("--bitrate", type=int, default=2_500_000)
    parser.add_argument("--preset", default="veryfast")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onair-abuse-") as tmp:
        out = asyncio.run(run(args, Path(tmp)))
    report(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "abuse.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
