"""API benchmark: create + get live streams with idempotency keys at increasing
request rates against a real `onair serve` process, on SQLite and on Redis.

Open loop: request pairs (POST /v1/live-streams with a fresh Idempotency-Key,
then GET of the created stream) are started on a fixed schedule so the offered
rate does not sag when the server slows down. Latency is measured per request
from the moment it is sent; the achieved rate counts completed 2xx requests.
Target on a 2-core machine: p99 ≤ 25 ms at 500 requests/s.

Usage: .venv/bin/python bench/api.py [--rates 100,250,500] [--seconds 6]
                                     [--backends sqlite,redis] [--access-log]
Results: printed table and bench/results/api.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.control.api.service_process import ServiceProcess  # noqa: E402
from tests.support.redis_server import redis_server  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "api.json"
TARGET_P99_MS = 25.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    return os.getloadavg()[0]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


async def run_rate(url: str, key: str, rate: float, seconds: float) -> dict[str, Any]:
    """Offer `rate` requests/s (half creates, half gets) for `seconds`."""
    pairs = int(rate * seconds / 2)
    interval = 2.0 / rate
    latencies: list[float] = []
    errors: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as s:
        # warm the pool
        async with s.get(f"{url}/v1/live-streams?limit=1") as r:
            await r.read()

        async def one_pair(i: int) -> None:
            idem = {"Idempotency-Key": f"bench-{uuid.uuid4().hex}"}
            t0 = time.perf_counter()
            try:
                async with s.post(
                    f"{url}/v1/live-streams", json={"name": f"bench {i}"}, headers=idem
                ) as r:
                    body = await r.json()
                    t1 = time.perf_counter()
                    if r.status != 201:
                        errors[str(r.status)] = errors.get(str(r.status), 0) + 1
                        return
                latencies.append(t1 - t0)
                t2 = time.perf_counter()
                async with s.get(f"{url}/v1/live-streams/{body['id']}") as r:
                    await r.read()
                    t3 = time.perf_counter()
                    if r.status != 200:
                        errors[str(r.status)] = errors.get(str(r.status), 0) + 1
                        return
                latencies.append(t3 - t2)
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        for i in range(pairs):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one_pair(i)))
        offered_elapsed = time.perf_counter() - start
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {
        "offered_rps": rate,
        "offered_actual_rps": round(2 * pairs / offered_elapsed, 1) if offered_elapsed else None,
        "achieved_rps": round(len(latencies) / elapsed, 1),
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(pct(ms, 50), 2),
        "p90_ms": round(pct(ms, 90), 2),
        "p99_ms": round(pct(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
    }


@contextlib.contextmanager
def backend(kind: str) -> Iterator[dict[str, str]]:
    if kind == "sqlite":
        yield {}
    elif kind == "redis":
        with redis_server() as url:
            yield {"ONAIR_REDIS_URL": url}
    else:
        raise ValueError(kind)


def bench_backend(
    kind: str, rates: list[float], seconds: float, access_log: bool
) -> list[dict[str, Any]]:
    rows = []
    with backend(kind) as env, tempfile.TemporaryDirectory(prefix="onair-bench-") as tmp:
        env = {
            **env,
            "ONAIR_RATE_LIMIT_PER_S": "1000000",
            "ONAIR_RATE_LIMIT_BURST": "1000000",
            "ONAIR_ACCESS_LOG": "true" if access_log else "false",
        }
        svc = ServiceProcess(Path(tmp) / "data", env)
        svc.start()
        try:
            assert svc.admin_key, "expected a fresh admin key"
            assert svc.proc is not None
            for rate in rates:
                cpu0 = cpu_seconds(svc.proc.pid)
                row = asyncio.run(run_rate(svc.url, svc.admin_key, rate, seconds))
                cpu = cpu_seconds(svc.proc.pid) - cpu0
                row["server_cpu_ms_per_request"] = round(1000 * cpu / max(1, row["requests"]), 3)
                row["load_average_1m"] = round(load_average(), 2)
                row["backend"] = kind
                row["target_met"] = row["p99_ms"] <= TARGET_P99_MS and not row["errors"]
                rows.append(row)
                print(
                    f"{kind:7} {rate:6.0f} req/s offered  {row['achieved_rps']:7.1f} achieved  "
                    f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
                    f"max {row['max_ms']} ms  "
                    f"server CPU {row['server_cpu_ms_per_request']} ms/req  "
                    f"load {row['load_average_1m']}  errors {row['errors'] or 0}",
                    flush=True,
                )
        finally:
            svc.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="100,250,500")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--backends", default="sqlite,redis")
    ap.add_argument("--access-log", action="store_true", help="keep JSON access logs on")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    rows: list[dict[str, Any]] = []
    for kind in args.backends.split(","):
        rows += bench_backend(kind, rates, args.seconds, args.access_log)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "target_p99_ms": TARGET_P99_MS,
                "seconds": args.seconds,
                "access_log": args.access_log,
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
