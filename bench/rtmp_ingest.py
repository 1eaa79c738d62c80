"""RTMP ingest benchmark: onair against nginx-rtmp, side by side (issue 3, Benchmark).

For each N, N concurrent `ffmpeg -re -stream_loop -1 -i clip.mp4 -c copy -f flv`
publishers of a 720p30 2.5 Mbit/s H.264+AAC clip (GOP 1 s) push to each server in
turn. Two modes:

``--mode full`` (default; the issue's workload)
  * onair: the real service, ``python -m control.cli serve`` (``onair serve``) in
    its own process group, on free loopback ports and a temp data dir; N live
    streams created through ``POST /v1/live-streams`` (``record`` false by default,
    ``--record true|both`` for the recording run); so ingest + hub + CMAF
    segmenter + LL-HLS, plus the lifecycle, store and webhook machinery.
  * nginx with Debian's libnginx-mod-rtmp (master + ``--nginx-workers`` workers),
    ``live on; hls on; hls_fragment 1s;`` into a temp dir served by an nginx
    ``http`` location.
  Measured in the steady state, over a window after a warm-up (40 s by default:
  onair keeps 30 s of each stream in memory, nginx-rtmp 6 s on disk, and until
  that window is full every new byte lands on a freshly faulted page, which
  cost onair ~20 % more CPU per stream at N=50 than it pays once running): CPU
  of the server's whole process tree
  (utime+stime from /proc/<pid>/stat, onair's pid and any children; nginx's
  master+workers), RSS of that tree, input Mbit/s per stream (``ss``), and
  "every playlist fresh": this (bench) process polls every stream's media
  playlist over HTTP ``--polls`` times during the window (onair:
  ``/play/<playback_id>/media.m3u8``, age = now - (newest EXT-X-PROGRAM-DATE-TIME
  + the media after it); nginx: ``/hls/<name>.m3u8``, age = now - the .m3u8's
  mtime on disk, as nginx-rtmp has no PDT). A stream is healthy when every poll
  answered 200 with media, age <= ``--fresh`` seconds, and its newest media
  advanced between the first and last poll. The poller runs in this process,
  never in the measured tree; the publishers' own CPU is recorded too
  (``publishers_cpu``), as a gauge of how much of the machine the load takes.
  Results: bench/results/rtmp_full.json (``--table FILE`` reprints one).

``--mode ingest`` (the earlier comparison)
  onair's ``RtmpServer`` alone (ingest + hub + one discarding reader per stream)
  in a child process, against nginx-rtmp with ``master_process off`` and HLS on.
  Not apples to apples (nginx also muxes HLS); kept for the ingest-path figure.

Usage:
  .venv/bin/python bench/rtmp_ingest.py                       # full, N=1,10,25,50,100
  .venv/bin/python bench/rtmp_ingest.py --n 1,10 --seconds 15
  .venv/bin/python bench/rtmp_ingest.py --record both         # record false, then true
  .venv/bin/python bench/rtmp_ingest.py --mode ingest --n 1,10,25,50
  .venv/bin/python bench/rtmp_ingest.py --n 1,10,25,50,100 --record both --workers 1,2
  .venv/bin/python bench/rtmp_ingest.py --find-max          # capacity, recording on
  .venv/bin/python bench/rtmp_ingest.py --hold 25 --seconds 300   # onair + 25 publishers
                                  # kept running (pid printed) for py-spy; ^C stops it
The clip is generated once into bench/results/cache/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

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
    print(f"generating {CLIP.name} (720p30, GOP 1 s, 2.5 Mbit/s x264 + AAC, 12 s)...", flush=True)
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30,noise=alls=14:allf=t",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "12",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            "2400k",
            "-maxrate",
            "2500k",
            "-bufsize",
            "2500k",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ac",
            "2",
            "-movflags",
            "+faststart",
            str(tmp),
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
        capture_output=True,
        text=True,
        check=False,
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
            async def authorize_publish(
                self, stream_key: str, *, protocol: str, remote: str
            ) -> PublishGrant:
                if stream_key not in readers:
                    readers[stream_key] = asyncio.get_running_loop().create_task(drain(stream_key))
                return PublishGrant(stream_key)

        coalesce = float(os.environ.get("ONAIR_BENCH_READ_COALESCE", RtmpLimits().read_coalesce))
        server = RtmpServer(
            hub, Authority(), host="127.0.0.1", port=0, limits=RtmpLimits(read_coalesce=coalesce)
        )
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        while not stop.is_set():
            now = time.time()
            live = [s for s in hub.streams if s.publication is not None]
            fresh = sum(
                1 for s in live if s.publication and now - s.publication.last_write_at < FRESH_S
            )
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
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "onair.log", "wb"),
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
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "nginx.stderr", "wb"),
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
        procs.append(
            subprocess.Popen(
                [
                    "ffmpeg",
                    "-hide_banner",
                    "-nostdin",
                    "-loglevel",
                    "error",
                    "-re",
                    "-stream_loop",
                    "-1",
                    "-i",
                    str(CLIP),
                    "-c",
                    "copy",
                    "-f",
                    "flv",
                    f"rtmp://127.0.0.1:{port}/live/s{i}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(workdir / f"pub{i}.log", "wb"),
            )
        )
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


# -- full-service mode (issue 3's workload) -------------------------------------------

RESULTS = ROOT / "bench" / "results"
FULL_FRESH_S = 3.0
"""Full mode: a poll is fresh when the playlist's newest media is at most this old."""
KEY_RE = re.compile(r"ONAIR_API_KEY=(onair_sk_\S+)")


def _ppid_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            out[int(entry.name)] = int(fields[1])
    return out


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants (onair's process pool, nginx's workers)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppid_map().items():
        children.setdefault(ppid, []).append(pid)
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def tree_cpu(root: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            out[pid] = cpu_seconds(pid)
    return out


def tree_rss_mb(root: int) -> float:
    total = 0.0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            total += rss_mb(pid)
    return total


def popen_group(cmd: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    """A child in its own process group (so that everything it starts can be killed)."""
    with log.open("wb") as err:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=kw.pop("stdout", err),
            stderr=err,
            start_new_session=True,
            **kw,
        )


def kill_group(proc: subprocess.Popen[bytes], grace: float = 8.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it after `grace` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def stop_publishers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)


@dataclass
class Target:
    """One stream under test: where to publish, which playlist to poll."""

    publish_url: str
    playlist_url: str
    playlist_file: Path | None = None
    """nginx: the .m3u8 on disk (its mtime is the playlist's age)."""


class FullServer:
    name = "?"
    proc: subprocess.Popen[bytes]
    workdir: Path
    rtmp_port: int

    def targets(self, n: int, record: bool) -> list[Target]:
        raise NotImplementedError

    def stop(self) -> None:
        kill_group(self.proc)


class OnairService(FullServer):
    """`onair serve` (python -m control.cli serve) on free loopback ports."""

    name = "onair"

    def __init__(
        self, workdir: Path, workers: int = 1, extra_env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.workers = workers
        self.http_port = free_port()
        self.rtmp_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONAIR_")}
        env.update(
            {
                "ONAIR_DATA_DIR": str(workdir / "data"),
                "ONAIR_HOST": "127.0.0.1",
                "ONAIR_HTTP_PORT": str(self.http_port),
                "ONAIR_RTMP_PORT": str(self.rtmp_port),
                "ONAIR_PUBLIC_URL": self.url,
                "ONAIR_LOG_JSON": "false",
                "ONAIR_ACCESS_LOG": "false",
                "ONAIR_SHUTDOWN_TIMEOUT_S": "5",
                "ONAIR_WORKERS": str(workers),
                # every publisher and poller of the benchmark is 127.0.0.1: the
                # per-address caps (RTMP 50, HTTP 256) are for the Internet
                "ONAIR_RTMP_MAX_CONNECTIONS_PER_IP": "100000",
                "ONAIR_HTTP_MAX_CONNECTIONS_PER_IP": "100000",
                **(
                    {"ONAIR_RTMP_READ_COALESCE_S": os.environ["ONAIR_BENCH_READ_COALESCE"]}
                    if "ONAIR_BENCH_READ_COALESCE" in os.environ
                    else {}
                ),
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
                **(extra_env or {}),
            }
        )
        out = workdir / "serve.out"
        with out.open("wb") as stdout:
            self.proc = popen_group(
                [sys.executable, "-m", "control.cli", "serve"],
                workdir / "serve.err",
                stdout=stdout,
                env=env,
                cwd=str(workdir),
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = out.read_text()
            if "onair is running" in text and (m := KEY_RE.search(text)):
                self.api_key = m.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        kill_group(self.proc)
        raise RuntimeError(
            f"onair serve did not start:\n{out.read_text()}\n"
            f"{(workdir / 'serve.err').read_text()[-3000:]}"
        )

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return dict(json.loads(resp.read()))

    def targets(self, n: int, record: bool) -> list[Target]:
        out = []
        for i in range(n):
            obj = self._post("/v1/live-streams", {"name": f"bench-{i}", "record": record})
            pid = obj["playback_ids"][0]["id"]
            out.append(
                Target(
                    f"rtmp://127.0.0.1:{self.rtmp_port}/live/{obj['stream_key']}",
                    f"{self.url}/play/{pid}/media.m3u8",
                )
            )
        return out


class NginxFull(FullServer):
    """nginx + libnginx-mod-rtmp, HLS (1 s fragments) served by an http location."""

    name = "nginx-rtmp"

    def __init__(self, workdir: Path, workers: int, record: bool = False) -> None:
        """`record`: `record all` beside HLS (every byte also written to an FLV
        file: the like-for-like of onair's recording)."""
        self.workdir = workdir
        self.rtmp_port = free_port()
        self.http_port = free_port()
        self.hls = workdir / "hls"
        for d in ("hls", "logs", "tmp", "rec"):
            (workdir / d).mkdir()
        recording = (
            f"record all;\n            record_path {workdir}/rec;\n            record_unique on;"
            if record
            else "record off;"
        )
        tmp = workdir / "tmp"
        conf = workdir / "nginx.conf"
        conf.write_text(f"""
load_module {NGINX_RTMP_MODULE};
daemon off;
master_process on;
user root;
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log warn;
events {{ worker_connections 4096; }}
rtmp {{
    server {{
        listen 127.0.0.1:{self.rtmp_port};
        chunk_size 4096;
        application live {{
            live on;
            {recording}
            hls on;
            hls_path {self.hls};
            hls_fragment 1s;
            hls_playlist_length 6s;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
    server {{
        listen 127.0.0.1:{self.http_port};
        location /hls/ {{
            alias {self.hls}/;
            add_header Cache-Control no-cache;
        }}
    }}
}}
""")
        self.proc = popen_group(
            ["nginx", "-p", str(workdir), "-c", str(conf)], workdir / "nginx.stderr"
        )
        for _ in range(100):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.rtmp_port), 0.2),
            ):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        kill_group(self.proc)
        raise RuntimeError(f"nginx did not start: {(workdir / 'nginx.stderr').read_text()}")

    def targets(self, n: int, record: bool) -> list[Target]:
        return [
            Target(
                f"rtmp://127.0.0.1:{self.rtmp_port}/live/s{i}",
                f"http://127.0.0.1:{self.http_port}/hls/s{i}.m3u8",
                self.hls / f"s{i}.m3u8",
            )
            for i in range(n)
        ]


def start_publishers_full(targets: list[Target], workdir: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i, t in enumerate(targets):
        procs.append(
            popen_group(
                [
                    "ffmpeg",
                    "-hide_banner",
                    "-nostdin",
                    "-loglevel",
                    "error",
                    "-re",
                    "-stream_loop",
                    "-1",
                    "-i",
                    str(CLIP),
                    "-c",
                    "copy",
                    "-f",
                    "flv",
                    t.publish_url,
                ],
                workdir / f"pub{i}.log",
                stdout=subprocess.DEVNULL,
            )
        )
        time.sleep(0.05)
    return procs


@dataclass
class Poll:
    ok: bool
    age: float | None
    marker: str | None
    """Identifies the newest media in the playlist (must advance between polls)."""
    error: str | None = None


def _onair_newest(text: str) -> tuple[float | None, str | None]:
    """End time (epoch s) of the newest media: last PDT + the parts/segment after it."""
    pdt: float | None = None
    parts = 0.0
    inf: float | None = None
    marker: str | None = None
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            value = line.split(":", 1)[1].strip().replace("Z", "+00:00")
            pdt = dt.datetime.fromisoformat(value).timestamp()
            parts, inf = 0.0, None
        elif line.startswith("#EXT-X-PART:"):
            m = re.search(r"DURATION=([0-9.]+)", line)
            parts += float(m.group(1)) if m else 0.0
            u = re.search(r'URI="([^"]+)"', line)
            marker = u.group(1) if u else marker
        elif line.startswith("#EXTINF:"):
            inf = float(line[8:].split(",")[0])
        elif line and not line.startswith("#"):
            marker = line
    if pdt is None:
        return None, marker
    return pdt + (inf if inf is not None else parts), marker


def _nginx_newest(text: str) -> str | None:
    uris = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    return uris[-1] if uris else None


async def poll_once(session: aiohttp.ClientSession, t: Target) -> Poll:
    try:
        async with session.get(t.playlist_url) as resp:
            text = await resp.text()
            if resp.status != 200:
                return Poll(False, None, None, f"HTTP {resp.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Poll(False, None, None, type(exc).__name__)
    now = time.time()
    if t.playlist_file is None:
        end, marker = _onair_newest(text)
        age = None if end is None else now - end
    else:
        marker = _nginx_newest(text)
        try:
            age = now - t.playlist_file.stat().st_mtime
        except OSError:
            age = None
    if marker is None or age is None:
        return Poll(False, age, marker, "no media in playlist")
    return Poll(True, age, marker)


async def measure_window(
    root_pid: int,
    rtmp_port: int,
    targets: list[Target],
    seconds: float,
    polls: int,
    publishers: list[int],
) -> tuple[
    dict[int, float], dict[int, float], int, int, float, list[list[Poll]], list[float], float
]:
    """CPU/bytes snapshots around `seconds`, polling every playlist `polls` times within."""
    rounds: list[list[Poll]] = []
    round_s: list[float] = []
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        c0, b0, t0 = tree_cpu(root_pid), bytes_received(rtmp_port), time.monotonic()
        p0 = _cpu_of(publishers)
        for k in range(polls):
            at = t0 + (k + 0.5) * seconds / polls
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            r0 = time.monotonic()
            rounds.append(list(await asyncio.gather(*(poll_once(session, t) for t in targets))))
            round_s.append(time.monotonic() - r0)
        await asyncio.sleep(max(0.0, t0 + seconds - time.monotonic()))
        c1, b1, t1 = tree_cpu(root_pid), bytes_received(rtmp_port), time.monotonic()
        p1 = _cpu_of(publishers)
    return c0, c1, b0, b1, t1 - t0, rounds, round_s, (p1 - p0) / (t1 - t0)


def _cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(pid)
    return total


@dataclass
class FullResult:
    server: str
    n: int
    record: bool | None
    cpu_per_stream: float
    """CPU seconds per stream per second of the server's process tree."""
    cpu_total: float
    rss_mb: float
    processes: int
    healthy: int
    """Streams whose every poll was 200 and fresh (age <= fresh) and whose newest media advanced."""
    fresh_polls: int
    polls: int
    age_p50: float | None
    age_max: float | None
    publishers_alive: int
    mbps_in: float
    loadavg: str
    problems: dict[str, int]
    """Failed polls by reason (exception name, HTTP status, stale) and streams not advancing."""
    poll_round_s: list[float]
    """How long each poll round (all N playlists) took."""
    publishers_cpu: float
    """CPU (cores) the N ffmpeg publishers used in the window: the machine's other load."""
    workers: int = 1
    """onair's ONAIR_WORKERS, nginx's worker_processes."""
    reused: bool = False

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_full_one(
    make: Callable[[Path], FullServer],
    n: int,
    record: bool | None,
    warmup: float,
    seconds: float,
    polls: int,
    fresh: float,
    workers: int = 1,
) -> FullResult:
    workdir = Path(tempfile.mkdtemp(prefix="bench-rtmp-full-"))
    server: FullServer | None = None
    pubs: list[subprocess.Popen[bytes]] = []
    try:
        server = make(workdir)
        targets = server.targets(n, bool(record))
        pubs = start_publishers_full(targets, workdir)
        time.sleep(warmup)
        c0, c1, b0, b1, elapsed, rounds, round_s, pub_cpu = asyncio.run(
            measure_window(
                server.proc.pid, server.rtmp_port, targets, seconds, polls, [p.pid for p in pubs]
            )
        )
        cpu = sum(v - c0.get(pid, 0.0) for pid, v in c1.items()) / elapsed
        rss = tree_rss_mb(server.proc.pid)
        procs = len(tree_pids(server.proc.pid))
        ages = sorted(p.age for r in rounds for p in r if p.age is not None)
        healthy = 0
        fresh_polls = 0
        problems: dict[str, int] = {}
        for i in range(n):
            mine = [r[i] for r in rounds]
            good = [p.ok and p.age is not None and p.age <= fresh for p in mine]
            fresh_polls += sum(good)
            for p in mine:
                why = p.error or (None if p.age is None or p.age <= fresh else "stale")
                if why:
                    problems[why] = problems.get(why, 0) + 1
            advanced = len(mine) < 2 or mine[0].marker != mine[-1].marker
            if not advanced:
                problems["not advancing"] = problems.get("not advancing", 0) + 1
            healthy += all(good) and advanced
        return FullResult(
            server=server.name,
            n=n,
            record=record,
            cpu_per_stream=cpu / n,
            cpu_total=cpu,
            rss_mb=rss,
            processes=procs,
            healthy=healthy,
            fresh_polls=fresh_polls,
            polls=n * len(rounds),
            problems=problems,
            poll_round_s=round_s,
            publishers_cpu=pub_cpu,
            age_p50=ages[len(ages) // 2] if ages else None,
            age_max=ages[-1] if ages else None,
            publishers_alive=sum(1 for p in pubs if p.poll() is None),
            mbps_in=(b1 - b0) * 8 / elapsed / n / 1e6,
            workers=workers,
            loadavg=" ".join(Path("/proc/loadavg").read_text().split()[:3]),
        )
    finally:
        stop_publishers(pubs)
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _slope(pts: list[tuple[int, float]]) -> float | None:
    if len({n for n, _ in pts}) < 2:
        return None
    mx = sum(n for n, _ in pts) / len(pts)
    my = sum(c for _, c in pts) / len(pts)
    return sum((n - mx) * (c - my) for n, c in pts) / sum((n - mx) ** 2 for n, _ in pts)


def print_full_table(rows: list[dict[str, Any]], fresh: float, seconds: float) -> None:
    header = (
        f"{'rec':>5} {'wk':>2} {'N':>4} | {'onair %/str':>11} {'RSS MB':>7} {'MB/str':>6} "
        f"{'healthy':>8} "
        f"{'age p50/max':>11} {'Mb/s':>5} | {'nginx %/str':>11} {'RSS MB':>7} "
        f"{'healthy':>8} {'age p50/max':>11} {'Mb/s':>5} | {'ratio':>5}"
    )
    print(
        f"\nRTMP -> HLS, full service, 720p30 2.5 Mbit/s -c copy publishers, {seconds:.0f} s "
        f"window\n(CPU = % of one core per stream, whole server process tree; healthy = "
        f"every poll fresh within {fresh:.0f} s)"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        o, g = row["onair"], row.get("nginx")
        cells = (
            f"{str(o['record']).lower():>5} {o.get('workers', 1):>2} {o['n']:>4} | "
            f"{o['cpu_per_stream'] * 100:>11.2f} "
            f"{o['rss_mb']:>7.1f} {o['rss_mb'] / o['n']:>6.2f} {o['healthy']:>4}/{o['n']:<3} "
            f"{_fmt(o['age_p50'], '.1f'):>5}/{_fmt(o['age_max'], '<5.1f')} "
            f"{o['mbps_in']:>5.2f} | "
        )
        if g:
            ratio = o["cpu_per_stream"] / g["cpu_per_stream"] if g["cpu_per_stream"] else 0.0
            cells += (
                f"{g['cpu_per_stream'] * 100:>11.2f} {g['rss_mb']:>7.1f} "
                f"{g['healthy']:>4}/{g['n']:<3} "
                f"{_fmt(g['age_p50'], '.1f'):>5}/{_fmt(g['age_max'], '<5.1f')} "
                f"{g['mbps_in']:>5.2f} | {ratio:>5.2f}"
            )
        print(cells)
    for record in sorted({bool(r["record"]) for r in rows}):
        for workers in sorted({r["onair"].get("workers", 1) for r in rows}):
            fits = []
            mem = []
            for server in ("onair", "nginx"):
                mine = [
                    r[server]
                    for r in rows
                    if r.get(server)
                    and bool(r["record"]) == record
                    and r["onair"].get("workers", 1) == workers
                    and r[server]["healthy"] == r[server]["n"]
                ]
                slope = _slope([(x["n"], x["cpu_total"]) for x in mine])
                fits.append(f"{server} {_fmt(None if slope is None else slope * 100, '.2f')}")
                rss = _slope([(x["n"], x["rss_mb"]) for x in mine])
                mem.append(f"{server} {_fmt(rss, '.2f')}")
            print(
                f"record={str(record).lower()} onair workers={workers}: marginal CPU %/stream"
                f" (least-squares slope of total CPU over N, fully healthy rows):"
                f" {', '.join(fits)}; marginal RSS MB/stream: {', '.join(mem)}"
            )
    print(
        "\nnginx-rtmp records (`record all`) in the rows where onair records. wk = onair's"
        "\nworkers. MB/str = the server tree's RSS / N."
        "\nratio = onair CPU per stream / nginx-rtmp's (target <= 1.0). Mb/s = input read per"
        "\nstream (publishers falling behind on a saturated machine send less). age = now -"
        "\nnewest media in the playlist (onair: PDT + parts; nginx: the .m3u8's mtime)."
    )


def main_full(args: argparse.Namespace) -> None:
    if not NGINX_RTMP_MODULE.exists() or shutil.which("nginx") is None:
        sys.exit("needs nginx and libnginx-mod-rtmp (apt-get install nginx libnginx-mod-rtmp)")
    make_clip()
    counts = [int(x) for x in args.n.split(",") if x]
    seconds = args.seconds or 15.0
    warmup = args.warmup or 40.0
    records = {"false": [False], "true": [True], "both": [False, True]}[args.record]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "benchmark": "rtmp_full",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": {
            "seconds": seconds,
            "warmup": warmup,
            "polls": args.polls,
            "fresh_s": args.fresh,
            "nginx_workers": args.nginx_workers,
            "clip": CLIP.name,
            "cpus": os.cpu_count(),
        },
        "rows": [],
    }
    worker_counts = [int(x) for x in args.workers.split(",") if x]
    doc["params"]["onair_workers"] = worker_counts
    nginx_by_n: dict[tuple[int, bool], dict[str, Any]] = {}
    for record in records:
        for workers in worker_counts:
            for n in counts:
                print(
                    f"record={str(record).lower()} workers={workers} N={n}: onair...",
                    end=" ",
                    flush=True,
                )
                ours = run_full_one(
                    lambda w, k=workers: OnairService(w, k),
                    n,
                    record,
                    warmup,
                    seconds,
                    args.polls,
                    args.fresh,
                    workers=workers,
                )
                row: dict[str, Any] = {"n": n, "record": record, "onair": ours.as_json()}
                print(
                    f"{ours.cpu_per_stream * 100:.2f}%/str {ours.healthy}/{n} healthy"
                    f" {ours.rss_mb / n:.2f} MB/str;",
                    end=" ",
                    flush=True,
                )
                if not args.skip_nginx:
                    if (n, record) in nginx_by_n:
                        row["nginx"] = dict(nginx_by_n[(n, record)], reused=True)
                    else:
                        print("nginx-rtmp...", end=" ", flush=True)
                        theirs = run_full_one(
                            lambda w, r=record: NginxFull(w, args.nginx_workers, r),
                            n,
                            record,
                            warmup,
                            seconds,
                            args.polls,
                            args.fresh,
                            workers=args.nginx_workers,
                        )
                        nginx_by_n[(n, record)] = row["nginx"] = theirs.as_json()
                        print(
                            f"{theirs.cpu_per_stream * 100:.2f}%/str {theirs.healthy}/{n} healthy",
                            end=" ",
                            flush=True,
                        )
                    base = row["nginx"]["cpu_per_stream"]
                    row["ratio"] = ours.cpu_per_stream / base if base else None
                print(flush=True)
                doc["rows"].append(row)
                doc["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                out.write_text(json.dumps(doc, indent=2) + "\n")
    print_full_table(doc["rows"], args.fresh, seconds)
    print(f"\nwrote {out}")


def main_find_max(args: argparse.Namespace) -> None:
    """The most streams each server holds with every playlist fresh, recording on:
    onair with its default workers (the machine's cores) against nginx-rtmp with
    `--nginx-workers` (default here 2) workers and `record all`. N doubles from
    `--start` until a run is not fully healthy, then bisects to within 10 %."""
    if not NGINX_RTMP_MODULE.exists() or shutil.which("nginx") is None:
        sys.exit("needs nginx and libnginx-mod-rtmp (apt-get install nginx libnginx-mod-rtmp)")
    make_clip()
    seconds = args.seconds or 15.0
    warmup = args.warmup or 20.0
    onair_workers = os.cpu_count() or 1
    nginx_workers = args.nginx_workers if args.nginx_workers != 1 else 2
    servers: list[tuple[str, Callable[[Path], FullServer], int]] = [
        ("onair", lambda w: OnairService(w, onair_workers), onair_workers),
        ("nginx-rtmp", lambda w: NginxFull(w, nginx_workers, True), nginx_workers),
    ]
    out = Path(
        args.out if args.out != str(RESULTS / "rtmp_full.json") else RESULTS / "rtmp_max.json"
    )
    doc: dict[str, Any] = {
        "benchmark": "rtmp_find_max",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": {"seconds": seconds, "warmup": warmup, "fresh_s": args.fresh, "record": True},
        "runs": [],
        "max": {},
    }
    for name, make, workers in servers:
        good, bad = 0, None
        n = args.start
        while n <= args.max_n:
            print(f"{name} (workers={workers}) N={n}...", end=" ", flush=True)
            r = run_full_one(make, n, True, warmup, seconds, args.polls, args.fresh, workers)
            ok = r.healthy == n and r.publishers_alive == n
            print(
                f"{'healthy' if ok else 'NOT healthy'} ({r.healthy}/{n},"
                f" {r.cpu_total:.2f} cores, {r.mbps_in:.2f} Mb/s/str)",
                flush=True,
            )
            doc["runs"].append({"server": name, "ok": ok, **r.as_json()})
            if ok:
                good = n
            else:
                bad = n
            if bad is None:
                n *= 2
            elif bad - good <= max(5, good // 10):
                break
            else:
                n = (good + bad) // 2
        doc["max"][name] = {"workers": workers, "streams": good, "first_unhealthy": bad}
        out.write_text(json.dumps(doc, indent=2) + "\n")
    o, g = doc["max"]["onair"]["streams"], doc["max"]["nginx-rtmp"]["streams"]
    print(
        f"\nmost 2.5 Mbit/s streams with every playlist fresh, recording on: onair {o}"
        f" ({onair_workers} workers), nginx-rtmp {g} ({nginx_workers} workers, record all);"
        f" ratio {o / g if g else float('nan'):.2f} (target >= 1.0)"
    )
    print(f"wrote {out}")


def hold_onair(n: int, record: bool, hold_s: float = 600.0) -> None:
    """Start onair with n publishers and keep it running (for py-spy) until ^C/SIGTERM."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-rtmp-hold-"))
    server: OnairService | None = None
    pubs: list[subprocess.Popen[bytes]] = []
    try:
        server = OnairService(workdir)
        pubs = start_publishers_full(server.targets(n, record), workdir)
        print(
            f"onair pid {server.proc.pid} with {n} publishers (record={record}); e.g.\n"
            f"  .venv/bin/py-spy top --pid {server.proc.pid}\n"
            f"  .venv/bin/py-spy record -o /tmp/onair.svg --pid {server.proc.pid}"
            " --duration 10 --nonblocking",
            flush=True,
        )
        time.sleep(hold_s)
    finally:
        stop_publishers(pubs)
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main_ingest(args: argparse.Namespace) -> None:
    """The earlier comparison: RtmpServer alone vs nginx-rtmp (HLS on)."""
    if not NGINX_RTMP_MODULE.exists() or shutil.which("nginx") is None:
        sys.exit("needs nginx and libnginx-mod-rtmp (apt-get install nginx libnginx-mod-rtmp)")
    make_clip()
    counts = [int(x) for x in args.n.split(",") if x]
    seconds = args.seconds or 20.0
    warmup = args.warmup or 6.0
    results: list[tuple[Result, Result]] = []
    for n in counts:
        print(f"N={n}: onair...", end=" ", flush=True)
        ours = run_one(OnairServer, n, warmup, seconds)
        print("nginx-rtmp...", end=" ", flush=True)
        theirs = run_one(NginxServer, n, warmup, seconds)
        print("done", flush=True)
        results.append((ours, theirs))
    print()
    print(
        f"RTMP ingest, 720p30 2.5 Mbit/s publishers, {seconds:.0f} s window "
        "(CPU = % of one core per stream)"
    )
    header = (
        f"{'N':>4} | {'onair CPU%/str':>14} {'Mb/s':>5} {'RSS MB':>7} {'ok':>7} | "
        f"{'nginx CPU%/str':>14} {'Mb/s':>5} {'RSS MB':>7} {'ok':>7} | {'ratio':>5}"
        f" {'ratio/Mb':>8}"
    )
    print(header)
    print("-" * len(header))
    for ours, theirs in results:
        base = theirs.cpu_per_stream
        ratio = ours.cpu_per_stream / base if base else float("inf")
        base_mb = theirs.cpu_per_mbps
        ratio_mb = ours.cpu_per_mbps / base_mb if base_mb else float("inf")
        print(
            f"{ours.n:>4} | {ours.cpu_per_stream * 100:>14.2f} {ours.mbps_in:>5.2f} "
            f"{ours.rss_mb:>7.1f} {ours.healthy:>3}/{ours.n:<3} | "
            f"{theirs.cpu_per_stream * 100:>14.2f} {theirs.mbps_in:>5.2f} "
            f"{theirs.rss_mb:>7.1f} {theirs.healthy:>3}/{theirs.n:<3} | {ratio:>5.2f}"
            f" {ratio_mb:>8.2f}"
        )
    print(
        "\nMb/s = input the server read per stream in the window (publishers falling behind"
        "\non a saturated machine send less); ratio/Mb compares CPU per Mbit/s."
        "\nok = streams with media written (onair) / playlist rewritten (nginx) in the last"
        f" {FRESH_S:.0f} s;"
        "\nonair runs ingest + hub + a discarding reader; nginx-rtmp also muxes HLS to disk."
    )


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop every child group


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mode", choices=("full", "ingest"), default="full")
    ap.add_argument(
        "--n", default=None, help="publisher counts (full: 1,10,25,50,100; ingest: 1,10,25,50)"
    )
    ap.add_argument(
        "--seconds", type=float, default=None, help="measuring window (full: 15 s; ingest: 20 s)"
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="after the last publisher started (full: 40 s; ingest: 6 s)",
    )
    ap.add_argument(
        "--record",
        choices=("false", "true", "both"),
        default="false",
        help="full mode: onair live streams' `record` (both = two runs)",
    )
    ap.add_argument("--polls", type=int, default=3, help="full mode: playlist polls per stream")
    ap.add_argument(
        "--fresh",
        type=float,
        default=FULL_FRESH_S,
        help="full mode: max playlist age (s) to count a poll as fresh",
    )
    ap.add_argument(
        "--nginx-workers",
        type=int,
        default=1,
        help="full mode: nginx worker_processes (onair is one process)",
    )
    ap.add_argument("--skip-nginx", action="store_true", help="full mode: onair only")
    ap.add_argument(
        "--workers",
        default="1",
        help="full mode: onair ONAIR_WORKERS values to run, e.g. 1,2 (workers off and on)",
    )
    ap.add_argument(
        "--find-max",
        action="store_true",
        help="the most streams each server holds with every playlist fresh (recording on)",
    )
    ap.add_argument("--start", type=int, default=50, help="find-max: first N")
    ap.add_argument("--max-n", type=int, default=800, help="find-max: largest N tried")
    ap.add_argument(
        "--hold",
        type=int,
        default=None,
        metavar="N",
        help="full mode: run onair with N publishers for --seconds (default 600)\n"
        "and print its pid, for profiling; ^C/SIGTERM stops it",
    )
    ap.add_argument("--out", default=str(RESULTS / "rtmp_full.json"), help="full mode JSON")
    ap.add_argument(
        "--read-coalesce",
        type=float,
        default=None,
        help="onair's read coalescing in seconds (ONAIR_RTMP_READ_COALESCE_S; "
        "ingest mode: RtmpLimits.read_coalesce); default: the service's own",
    )
    ap.add_argument("--table", metavar="JSON", help="full mode: print the table of a results file")
    ap.add_argument("--serve-onair", metavar="STATUS_JSON", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.table:
        doc = json.loads(Path(args.table).read_text())
        print_full_table(doc["rows"], doc["params"]["fresh_s"], doc["params"]["seconds"])
        return
    if args.read_coalesce is not None:
        os.environ["ONAIR_BENCH_READ_COALESCE"] = str(args.read_coalesce)
    if args.serve_onair:
        serve_onair(args.serve_onair)
        return
    signal.signal(signal.SIGTERM, _terminate)
    if args.n is None:
        args.n = "1,10,25,50,100" if args.mode == "full" else "1,10,25,50"
    if args.find_max:
        main_find_max(args)
    elif args.mode == "ingest":
        main_ingest(args)
    elif args.hold is not None:
        make_clip()
        hold_onair(args.hold, record=args.record == "true", hold_s=args.seconds or 600.0)
    else:
        main_full(args)


if __name__ == "__main__":
    main()
