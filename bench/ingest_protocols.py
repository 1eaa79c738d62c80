"""Ingest protocols side by side: RTMP, RTMPS and SRT into one `onair serve`, in one
run (issue 18, Benchmark): ingest latency, and CPU per stream at N publishers.

* **Latency** (capture -> arrival at the server), one protocol after another: the
  stamped publisher of bench/glass_to_glass.py (720p30 x264 veryfast zerolatency,
  keyframe every 1 s, the capture wall clock drawn into every frame) muxes FLV (or
  MPEG-TS for SRT) to stdout, and Debian's ffmpeg relays it (`-c copy`) to rtmp://,
  rtmps:// or srt:// (`latency` = ONAIR_SRT_LATENCY_MS) -- the same hop for all
  three, so the differences are the protocols'. For every complete
  segment of the live playlist, this script reads the stamp of its first frame
  (PyAV decodes init + segment) and its EXT-X-PROGRAM-DATE-TIME, which is the
  server's wall clock when the segment's first unit arrived: latency = PDT - stamp.
* **CPU per stream**: N Debian ffmpeg publishers (`-re -stream_loop -1 -c copy`,
  the 720p30 2.5 Mbit/s clip of bench/rtmp_ingest.py) per protocol in turn, after a
  warm-up; CPU of onair's process tree over the window (utime+stime), divided by N.
  Every stream must be `active` with a fresh playlist, or the row says so.

The certificate for RTMPS is made here (self-signed, tests/e2e/_tls.py).

Usage:
    .venv/bin/python bench/ingest_protocols.py [--n 25] [--protocols rtmp,rtmps,srt]
        [--latency-s 20] [--warmup 20] [--seconds 20]

Prints a table (protocol, latency p50/p95, CPU % of a core per stream, ratio to
RTMP) and writes bench/results/ingest_protocols.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import glass_to_glass as g2g  # noqa: E402
import rtmp_ingest as ri  # noqa: E402

from tests.e2e._tls import self_signed  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PROTOCOLS = ("rtmp", "rtmps", "srt")
SRT_LATENCY_MS = 120


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """`onair serve` with RTMP, RTMPS and SRT listeners."""

    def __init__(self, work: Path) -> None:
        cert, key = self_signed(work)
        self.rtmps_port = ri.free_port()
        self.srt_port = free_udp_port()
        self.onair = ri.OnairService(
            work,
            1,
            {
                "ONAIR_RTMPS_PORT": str(self.rtmps_port),
                "ONAIR_TLS_CERT_FILE": str(cert),
                "ONAIR_TLS_KEY_FILE": str(key),
                "ONAIR_SRT_PORT": str(self.srt_port),
                "ONAIR_SRT_LATENCY_MS": str(SRT_LATENCY_MS),
            },
        )

    def stream(self, name: str) -> dict[str, Any]:
        return self.onair._post("/v1/live-streams", {"name": name, "record": False})

    def get(self, path: str) -> Any:
        req = urllib.request.Request(
            self.onair.url + path, headers={"Authorization": f"Bearer {self.onair.api_key}"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def ingest(self, protocol: str, key: str) -> list[str]:
        """ffmpeg output arguments that publish to `key` over `protocol`."""
        if protocol == "rtmp":
            return ["-f", "flv", f"rtmp://127.0.0.1:{self.onair.rtmp_port}/live/{key}"]
        if protocol == "rtmps":
            return ["-f", "flv", f"rtmps://127.0.0.1:{self.rtmps_port}/live/{key}"]
        url = (
            f"srt://127.0.0.1:{self.srt_port}?streamid={key}&pkt_size=1316"
            f"&latency={SRT_LATENCY_MS * 1000}"
        )
        return ["-f", "mpegts", url]

    def stop(self) -> None:
        self.onair.stop()


# -- latency ---------------------------------------------------------------------------


def read_stamp(y: Any) -> int | None:
    """The 32-bit stamp drawn by glass_to_glass's publisher, from a luma plane."""
    bits = []
    for k in range(g2g.N_BLOCKS):
        x = g2g.STAMP_X + k * g2g.BLOCK_W
        block = y[
            g2g.STAMP_Y + g2g.BLOCK_H // 4 : g2g.STAMP_Y + g2g.BLOCK_H * 3 // 4,
            x + g2g.BLOCK_W // 4 : x + g2g.BLOCK_W * 3 // 4,
        ]
        bits.append(1 if float(block.mean()) > 128 else 0)
    value = 0
    for b in bits[2:34]:
        value = value * 2 + b
    return value if g2g.stamp_bits(value) == bits else None


def first_frame_stamp(init: bytes, segment: bytes) -> int | None:
    import io

    import av

    with av.open(io.BytesIO(init + segment)) as c:
        for frame in c.decode(video=0):
            return read_stamp(frame.to_ndarray(format="gray"))
    return None


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return bytes(r.read())


def measure_latency(svc: Service, protocol: str, seconds: float, work: Path) -> dict[str, Any]:
    ls = svc.stream(f"latency-{protocol}")
    pid = ls["playback_ids"][0]["id"]
    t0_ms = int(time.time() * 1000) - 1000
    log = work / f"latency-{protocol}.log"
    direct = protocol.endswith("-direct")  # PyAV's own FFmpeg publishes: no relay
    ingest = svc.ingest(protocol.removesuffix("-direct"), ls["stream_key"])
    # the container the protocol carries, so the relay only copies (ffmpeg 5.1 going
    # from MPEG-TS to FLV would send an empty AAC config before it parses one)
    container = "mpegts" if protocol == "srt" else "flv"
    relay: subprocess.Popen[bytes] | None = None
    with log.open("wb") as err:
        publisher = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "glass_to_glass.py"), "_publish",
             "--url", ingest[-1] if direct else "-", "--format", container,
             "--t0", str(t0_ms), "--duration", str(seconds + 6), "--keyint", "1"],
            stdout=err if direct else subprocess.PIPE, stderr=err, start_new_session=True,
        )  # fmt: skip
        if not direct:
            relay = subprocess.Popen(
                ["ffmpeg", "-hide_banner", "-loglevel", "error", "-fflags", "nobuffer",
                 "-probesize", "500000", "-analyzeduration", "1000000", "-f", container,
                 "-i", "pipe:0", "-c", "copy", "-flush_packets", "1",
                 "-max_interleave_delta", "0", *ingest],
                stdin=publisher.stdout, stderr=err, start_new_session=True,
            )  # fmt: skip
            assert publisher.stdout is not None
            publisher.stdout.close()
    base = f"{svc.onair.url}/play/{pid}"
    seen: dict[int, float] = {}
    samples: list[float] = []
    inits: dict[str, bytes] = {}
    deadline = time.monotonic() + seconds + 15
    try:
        while time.monotonic() < deadline and len(seen) < seconds:
            time.sleep(0.5)
            try:
                text = fetch(f"{base}/media.m3u8").decode()
            except OSError:
                continue
            init_uri = None
            pdt: float | None = None
            for line in text.splitlines():
                if line.startswith("#EXT-X-MAP:"):
                    init_uri = re.search(r'URI="([^"]+)"', line).group(1)  # type: ignore[union-attr]
                elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                    stamp = line.split(":", 1)[1].replace("Z", "+00:00")
                    pdt = dt.datetime.fromisoformat(stamp).timestamp()
                elif line and not line.startswith("#") and pdt is not None and init_uri:
                    msn = int(line.split(".")[0])
                    if msn not in seen:
                        if init_uri not in inits:
                            inits[init_uri] = fetch(f"{base}/{init_uri}")
                        value = first_frame_stamp(inits[init_uri], fetch(f"{base}/{line}"))
                        seen[msn] = pdt
                        if value is not None and msn > 1:  # the first is the start's
                            samples.append(pdt * 1000 - (t0_ms + value))
                    pdt = None
    finally:
        if relay is not None:
            ri.kill_group(relay, 3)
        ri.kill_group(publisher, 3)
    arrival_order = list(samples)
    samples.sort()
    return {
        "segments": len(samples),
        "p50_ms": round(statistics.median(samples)) if samples else None,
        "p95_ms": round(samples[int(len(samples) * 0.95)]) if samples else None,
        "min_ms": round(samples[0]) if samples else None,
        "max_ms": round(samples[-1]) if samples else None,
        "samples_ms": [round(x) for x in arrival_order],
    }


# -- CPU per stream --------------------------------------------------------------------


def measure_cpu(
    svc: Service, protocol: str, n: int, warmup: float, seconds: float, work: Path
) -> dict[str, Any]:
    clip = ri.make_clip()
    streams = [svc.stream(f"cpu-{protocol}-{i}") for i in range(n)]
    loop = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1"]
    pubs = [
        ri.popen_group(
            [*loop, "-i", str(clip), "-c", "copy", *svc.ingest(protocol, s["stream_key"])],
            work / f"pub-{protocol}-{i}.log",
        )
        for i, s in enumerate(streams)
    ]
    try:
        time.sleep(warmup)
        root = svc.onair.proc.pid
        before, pub_before = ri.tree_cpu(root), sum(ri.cpu_seconds(p.pid) for p in pubs)
        began = time.monotonic()
        time.sleep(seconds)
        after, pub_after = ri.tree_cpu(root), sum(ri.cpu_seconds(p.pid) for p in pubs)
        elapsed = time.monotonic() - began
        used = sum(c - before.get(pid, 0.0) for pid, c in after.items())
        active = 0
        fresh = 0
        for s in streams:
            status = svc.get(f"/v1/live-streams/{s['id']}")["status"]
            active += status == "active"
            with contextlib.suppress(OSError):
                text = fetch(f"{svc.onair.url}/play/{s['playback_ids'][0]['id']}/media.m3u8")
                fresh += b"#EXTINF" in text
        rss = ri.tree_rss_mb(root)
    finally:
        ri.stop_publishers(pubs)
    time.sleep(3)  # their streams go idle before the next protocol's
    return {
        "n": n,
        "active": active,
        "playlists_with_media": fresh,
        "server_cpu_pct": round(100 * used / elapsed, 1),
        "cpu_pct_per_stream": round(100 * used / elapsed / n, 2),
        "publishers_cpu_pct": round(100 * (pub_after - pub_before) / elapsed, 1),
        "server_rss_mb": round(rss),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=25, help="publishers per protocol (CPU)")
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--latency-s", type=float, default=20, help="segments (s) per latency run")
    ap.add_argument("--warmup", type=float, default=20)
    ap.add_argument("--seconds", type=float, default=20, help="CPU window")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    ap.add_argument(
        "--direct",
        action="store_true",
        help="latency also of rtmp-direct and rtmps-direct: the stamped publisher "
        "(PyAV's FFmpeg 8) straight to the server, no relay (its FFmpeg has no SRT)",
    )
    args = ap.parse_args()
    protocols = [p for p in args.protocols.split(",") if p]
    if shutil.which("ffmpeg") is None:
        sys.exit("needs Debian's ffmpeg (apt-get install ffmpeg)")
    work = Path(tempfile.mkdtemp(prefix="onair-ingest-"))
    svc = Service(work)
    rows: dict[str, dict[str, Any]] = {p: {"protocol": p} for p in protocols}
    try:
        if not args.skip_latency:
            if args.direct:
                for p in [x for x in protocols if x != "srt"]:
                    rows[f"{p}-direct"] = {"protocol": f"{p}-direct"}
            for p in rows:
                print(f"  latency: {p} ...", flush=True)
                rows[p]["latency"] = measure_latency(svc, p, args.latency_s, work)
        if not args.skip_cpu:
            for p in protocols:
                print(f"  CPU: {p} x {args.n} ...", flush=True)
                rows[p]["cpu"] = measure_cpu(svc, p, args.n, args.warmup, args.seconds, work)
    finally:
        svc.stop()
        if args.keep:
            print(f"  work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    ref = rows.get("rtmp", {})
    print(
        f"\ningest protocols into onair (one run; latency: capture -> server arrival, 720p30 "
        f"x264 zerolatency via an ffmpeg relay, SRT latency {SRT_LATENCY_MS} ms; CPU: "
        f"{args.n} ffmpeg -c copy publishers of 720p30 2.5 Mbit/s, {args.seconds:.0f} s "
        f"window after {args.warmup:.0f} s)"
    )
    print(
        f"{'protocol':9} {'lat p50':>8} {'lat p95':>8} {'n':>3} {'vs rtmp':>8}  "
        f"{'CPU/stream':>10} {'vs rtmp':>8} {'active':>7} {'server RSS':>10}"
    )
    for p, r in rows.items():
        lat, cpu = r.get("latency", {}), r.get("cpu", {})
        ref_lat = ref.get("latency", {}).get("p50_ms")
        ref_cpu = ref.get("cpu", {}).get("cpu_pct_per_stream")
        d_lat = (
            f"{lat['p50_ms'] - ref_lat:+d} ms"
            if lat.get("p50_ms") is not None and ref_lat is not None
            else "-"
        )
        r_cpu = (
            f"{cpu['cpu_pct_per_stream'] / ref_cpu:.2f}x"
            if cpu.get("cpu_pct_per_stream") and ref_cpu
            else "-"
        )
        print(
            f"{p:9} {_ms(lat.get('p50_ms')):>8} {_ms(lat.get('p95_ms')):>8} "
            f"{lat.get('segments', 0):>3} {d_lat:>8}  "
            f"{_pct(cpu.get('cpu_pct_per_stream')):>10} {r_cpu:>8} "
            f"{str(cpu.get('active', '-')) + '/' + str(cpu.get('n', '-')):>7} "
            f"{str(cpu.get('server_rss_mb', '-')) + ' MB':>10}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "ingest_protocols.json"
    out.write_text(
        json.dumps(
            {"at": time.time(), "load_avg": os.getloadavg(), "rows": list(rows.values())},
            indent=1,
        )
    )
    print(f"wrote {out}")
    return 0


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} %"


if __name__ == "__main__":
    sys.exit(main())
