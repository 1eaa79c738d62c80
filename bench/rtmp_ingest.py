"""RTMP ingest benchmark: onair's RtmpServer against nginx-rtmp, side by side.

For each N, N concurrent `ffmpeg -re -stream_loop -1 -i clip.mp4 -c copy -f flv`
publishers of a 720p30 2.5 Mbit/s H.264+AAC clip push to

* onair: `RtmpServer` in its own process, with a `Hub` and, per stream, one
  reader that discards what it gets (the ingest path alone: handshake, chunk
  reassembly, AMF, FLV → MediaUnit, hub fan-out);
* nginx with Debian's libnginx-mod-rtmp, one process (`master_process off`),
  `live on; hls on; hls_fragment 1s;` into a temp dir.

It measures the server's CPU seconds per stream per second (utime+stime from
/proc/<pid>/stat over the measuring window, after a warm-up), its RSS, and
health: (nginx) playlists rewritten in the last 4 s / (onair) publications
written to in the last 4 s; and how many bytes per stream it actually read.

Usage: .venv/bin/python bench/rtmp_ingest.py [--n 1,10,25,50] [--seconds 20] [--warmup 6]
The clip is generated once into bench/results/cache/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "results" / "cache"
CLIP = CACHE / "clip_720p30_2500k_g30.mp4"
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
TICKS = os.sysconf("SC_CLK_TCK")
FRESH_S = 4.0
"""A stream is healthy if its playlist / publication was updated this recently."""


def make_clip() -> Path:
    if CLIP.exists():
        return CLIP
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CLIP.with_suffix(".tmp.mp4")
    print(f"generating {CLIP.name} (720p30, GOP 1 s, 2.5 Mbit/s x264 + AAC, 12 s)...",
          flush=True)
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30,noise=alls=14:allf=t",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", "12", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2400k",
            "-maxrate", "2500k", "-bufsize", "2500k", "-g", "30", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-movflags", "+faststart", str(tmp),
        ],
        check=True,
    )
    tmp.rename(CLIP)
    return CLIP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def bytes_received(port: int) -> int:
    """Bytes received so far on the server's established connections (from `ss -ti`)."""
    out = subprocess.run(
        ["ss", "-Htin", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, check=False,
    ).stdout
    total = 0
    for word in out.split():
        if word.startswith("bytes_received:"):
            total += int(word.split(":", 1)[1])
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the onair server process ------------------------------------------------------


def write_status(path: str, status: dict[str, int]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)


def serve_onair(status_path: str) -> None:
    """Runs in the child process: RtmpServer + Hub + a discarding reader per stream."""
    sys.path.insert(0, str(ROOT))
    from ingest.hub import Hub
    from ingest.ports import PublishGrant
    from ingest.rtmp.server import RtmpLimits, RtmpServer

    async def main() -> None:
        hub = Hub()
        readers: dict[str, asyncio.Task[None]] = {}

        async def drain(stream_id: str) -> None:
            reader = hub.stream(stream_id).subscribe("bench-discard", max_units=1024)
            async for _ in reader:
                pass

        class Authority:
            async def authorize_publish(self, stream_key: str, *, protocol: str,
                                        remote: str) -> PublishGrant:
                if stream_key not in readers:
                    readers[stream_key] = asyncio.get_running_loop().create_task(drain(stream_key))
                return PublishGrant(stream_key)

        coalesce = float(os.environ.get("ONAIR_BENCH_READ_COALESCE", RtmpLimits().read_coalesce))
        server = RtmpServer(hub, Authority(), host="127.0.0.1", port=0,
                            limits=RtmpLimits(read_coalesce=coalesce))
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        while not stop.is_set():
            now = time.time()
            live = [s for s in hub.streams if s.publication is not None]
            fresh = sum(1 for s in live
                        if s.publication and now - s.publication.last_write_at < FRESH_S)
            status = {"port": server.port, "live": len(live), "fresh": fresh, **server.stats()}
            write_status(status_path, status)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        await server.stop()

    asyncio.run(main())


# -- servers under test --------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path

    def healthy_streams(self) -> int:
        raise NotImplementedError


class OnairServer(Server):
    @classmethod
    def start(cls, workdir: Path) -> OnairServer:
        status = workdir / "status.json"
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-onair", str(status)],
            stdout=subprocess.DEVNULL, stderr=open(workdir / "onair.log", "wb"),
        )
        for _ in range(100):
            if status.exists():
                break
            time.sleep(0.1)
        port = json.loads(status.read_text())["port"]
        return cls("onair", proc, port, workdir)

    def healthy_streams(self) -> int:
        return int(json.loads((self.workdir / "status.json").read_text())["fresh"])


class NginxServer(Server):
    @classmethod
    def start(cls, workdir: Path) -> NginxServer:
        port = free_port()
        hls = workdir / "hls"
        hls.mkdir()
        (workdir / "logs").mkdir()
        conf = workdir / "nginx.conf"
        conf.write_text(f"""
load_module {NGINX_RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log warn;
events {{ worker_connections 4096; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            record off;
            hls on;
            hls_path {hls};
            hls_fragment 1s;
            hls_playlist_length 6s;
        }}
    }}
}}
""")
        proc = subprocess.Popen(
            ["nginx", "-p", str(workdir), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=open(workdir / "nginx.stderr", "wb"),
        )
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.1)
        return cls("nginx-rtmp", proc, port, workdir)

    def healthy_streams(self) -> int:
        now = time.time()
        playlists = (self.workdir / "hls").glob("*.m3u8")
        return sum(1 for p in playlists if now - p.stat().st_mtime < FRESH_S)


def start_publishers(port: int, n: int, workdir: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        procs.append(subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
             "-stream_loop", "-1", "-i", str(CLIP), "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/s{i}"],
            stdout=subprocess.DEVNULL, stderr=open(workdir / f"pub{i}.log", "wb"),
        ))
        time.sleep(0.05)
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@dataclass
class Result:
    server: str
    n: int
    cpu_per_stream: float
    """CPU seconds per stream per second (= fraction of one core per stream)."""
    rss_mb: float
    healthy: int
    publishers_alive: int
    mbps_in: float
    """Mbit/s per stream the server actually read in the window."""

    @property
    def cpu_per_mbps(self) -> float:
        return self.cpu_per_stream / self.mbps_in if self.mbps_in else 0.0


def run_one(kind: type[Server], n: int, warmup: float, seconds: float) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-rtmp-{kind.__name__.lower()}-"))
    server = kind.start(workdir)  # type: ignore[attr-defined]
    pubs: list[subprocess.Popen[bytes]] = []
    try:
        pubs = start_publishers(server.port, n, workdir)
        time.sleep(warmup)
        pid = server.proc.pid
        c0, b0, t0 = cpu_seconds(pid), bytes_received(server.port), time.monotonic()
        time.sleep(seconds)
        c1, b1, t1 = cpu_seconds(pid), bytes_received(server.port), time.monotonic()
        rss = rss_mb(server.proc.pid)
        healthy = server.healthy_streams()
        alive = sum(1 for p in pubs if p.poll() is None)
        mbps = (b1 - b0) * 8 / (t1 - t0) / n / 1e6
        return Result(server.name, n, (c1 - c0) / (t1 - t0) / n, rss, healthy, alive, mbps)
    finally:
        stop(pubs)
        stop([server.proc])
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", default="1,10,25,50", help="comma-separated publisher counts")
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window")
    ap.add_argument("--warmup", type=float, default=6.0)
    ap.add_argument("--read-coalesce", type=float, default=None,
                    help="onair RtmpLimits.read_coalesce in seconds (0 = off; default 0.03)")
    ap.add_argument("--serve-onair", metavar="STATUS_JSON", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read_coalesce is not None:
        os.environ["ONAIR_BENCH_READ_COALESCE"] = str(args.read_coalesce)
    if args.serve_onair:
        serve_onair(args.serve_onair)
        return
    if not NGINX_RTMP_MODULE.exists() or shutil.which("nginx") is None:
        sys.exit("needs nginx and libnginx-mod-rtmp (apt-get install nginx libnginx-mod-rtmp)")
    make_clip()
    counts = [int(x) for x in args.n.split(",") if x]
    results: list[tuple[Result, Result]] = []
    for n in counts:
        print(f"N={n}: onair...", end=" ", flush=True)
        ours = run_one(OnairServer, n, args.warmup, args.seconds)
        print("nginx-rtmp...", end=" ", flush=True)
        theirs = run_one(NginxServer, n, args.warmup, args.seconds)
        print("done", flush=True)
        results.append((ours, theirs))
    print()
    print(f"RTMP ingest, 720p30 2.5 Mbit/s publishers, {args.seconds:.0f} s window "
          "(CPU = % of one core per stream)")
    header = (f"{'N':>4} | {'onair CPU%/str':>14} {'Mb/s':>5} {'RSS MB':>7} {'ok':>7} | "
              f"{'nginx CPU%/str':>14} {'Mb/s':>5} {'RSS MB':>7} {'ok':>7} | {'ratio':>5}"
              f" {'ratio/Mb':>8}")
    print(header)
    print("-" * len(header))
    for ours, theirs in results:
        base = theirs.cpu_per_stream
        ratio = ours.cpu_per_stream / base if base else float("inf")
        base_mb = theirs.cpu_per_mbps
        ratio_mb = ours.cpu_per_mbps / base_mb if base_mb else float("inf")
        print(f"{ours.n:>4} | {ours.cpu_per_stream * 100:>14.2f} {ours.mbps_in:>5.2f} "
              f"{ours.rss_mb:>7.1f} {ours.healthy:>3}/{ours.n:<3} | "
              f"{theirs.cpu_per_stream * 100:>14.2f} {theirs.mbps_in:>5.2f} "
              f"{theirs.rss_mb:>7.1f} {theirs.healthy:>3}/{theirs.n:<3} | {ratio:>5.2f}"
              f" {ratio_mb:>8.2f}")
    print("\nMb/s = input the server read per stream in the window (publishers falling behind"
          "\non a saturated machine send less); ratio/Mb compares CPU per Mbit/s."
          "\nok = streams with media written (onair) / playlist rewritten (nginx) in the last"
          f" {FRESH_S:.0f} s;"
          "\nonair runs ingest + hub + a discarding reader; nginx-rtmp also muxes HLS to disk.")


if __name__ == "__main__":
    main()
