"""Glass-to-glass latency benchmark: onair LL-HLS against nginx-rtmp HLS, in one run.

What it owns: a wall-clock-stamped RTMP publisher, a viewer page that reads the stamp
back from every displayed frame in headless Chromium, and the side-by-side report.

* Publisher (a child process of this script, `_publish` sub-command): 720p30 frames made
  with numpy in real time, like a camera: frame i is captured at t_start + i/30 s on the
  monotonic clock; when encoding falls behind (a starved machine) missed instants are
  skipped, never queued, and the count is printed. Right when a frame is made, the wall
  clock (ms since a shared t0) is drawn into it as a row of 44 big blocks (24x48 px each):
  `10` start marker, 32 data bits, 8 check bits (xor of the four data bytes ^ 0x5A), `01`
  end marker. PyAV encodes it (libx264 veryfast, zerolatency, keyframe every second of
  capture time, 2.5 Mbit/s VBV) with a 440 Hz AAC tone and muxes FLV straight to rtmp://.
* Viewer: a fresh headless Chromium opens a page this script serves (aiohttp, free
  port): hls.js (vendored realtime/static/vendor/hls.min.js) plays the stream
  (`lowLatencyMode: true` for onair, hls.js defaults for nginx-rtmp's plain HLS). On every
  displayed frame (`video.requestVideoFrameCallback`) the stamp row is drawn to a canvas,
  decoded and checked, and `Date.now() - stamp` is recorded. After a warm-up the samples
  of the measuring window give p50/p95. Optionally (`--watch-page`) the same decoder is
  injected into onair's own /watch/<playback_id> page (its hls.js config + catch-up).
* Servers: `onair serve` (tests/control/api/service_process.py ServiceProcess, stream
  created with latency_mode=low) and Debian nginx + libnginx-mod-rtmp (non-daemon child,
  own prefix, `hls_fragment 1s; hls_playlist_length 4s;`, HLS served by nginx's http
  module with CORS on another free port). Phases run one after another, each with its
  own publisher, so they do not compete for the two cores.

Usage:
    .venv/bin/python bench/glass_to_glass.py [--seconds 25] [--warmup 5]
        [--servers onair,nginx] [--watch-page] [--ll-config JSON] [--watch-js FILE]
        [--preset veryfast|ultrafast] [--keyint SECONDS] [--shaka] [--keep]

--keyint sets the publisher's keyframe interval (1 s by default); --shaka measures
stock Shaka Player (`lowLatencyMode`) on onair too; --watch-page measures onair's
/watch page too; --ll-config adds a run of our page with
extra hls.js config; --watch-js serves FILE as the watch page's watch.js (DevTools Fetch
interception) for an A/B of player tuning. Per run it also reports hls.js's latency
behind the playlist edge and its target, `now - hls.playingDate` (PROGRAM-DATE-TIME is
the server's arrival clock), stalls, and the CPU of server, publisher and viewer.

Prints a table (server, p50, p95, samples, ratio onair/nginx) and writes
bench/results/glass_to_glass.json. Every child runs in its own process group and is
killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
PAGE = Path(__file__).resolve().parent / "_g2g_page.html"
HLS_JS = ROOT / "realtime" / "static" / "vendor" / "hls.min.js"
SHAKA_JS = ROOT / "realtime" / "static" / "vendor" / "shaka-player.compiled.js"
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

WIDTH, HEIGHT, FPS = 1280, 720, 30
BLOCK_W, BLOCK_H = 24, 48
STAMP_X, STAMP_Y = 64, 24
N_BLOCKS = 44  # 2 start + 32 data + 8 check + 2 end
WHITE, BLACK = 235, 16

# The decoder, shared by our page (/g2g.js) and injected into onair's watch page.
DECODER_JS = r"""
(function () {
  "use strict";
  if (window.g2g) return;
  var q = new URLSearchParams(location.search);
  var g = window.g2g = { t0: Number(q.get("t0") || window.G2G_T0 || 0), samples: [],
                         bad: 0, frames: 0, last: null, errors: [], waiting: 0 };
  var BW = %(bw)d, BH = %(bh)d, X = %(x)d, Y = %(y)d, N = %(n)d;
  var canvas = document.createElement("canvas");
  canvas.width = BW * N; canvas.height = BH;
  var ctx = canvas.getContext("2d", { willReadFrequently: true });
  function bitAt(d, i) {  // mean of the green channel over the block's centre 12x24
    var s = 0, c = 0;
    for (var y = BH / 4; y < BH * 3 / 4; y += 2)
      for (var x = i * BW + BW / 4; x < i * BW + BW * 3 / 4; x += 2) {
        s += d[(y * BW * N + x) * 4 + 1]; c++;
      }
    return s / c > 128 ? 1 : 0;
  }
  function decode() {
    var d = ctx.getImageData(0, 0, BW * N, BH).data;
    var b = []; for (var i = 0; i < N; i++) b.push(bitAt(d, i));
    if (b[0] !== 1 || b[1] !== 0 || b[N - 2] !== 0 || b[N - 1] !== 1) return null;
    var v = 0, chk = 0, bytes = [0, 0, 0, 0];
    for (i = 0; i < 32; i++) { v = v * 2 + b[2 + i]; bytes[i >> 3] = bytes[i >> 3] * 2 + b[2 + i]; }
    for (i = 0; i < 8; i++) chk = chk * 2 + b[34 + i];
    if (chk !== (bytes[0] ^ bytes[1] ^ bytes[2] ^ bytes[3] ^ 0x5a)) return null;
    return v;
  }
  function attach(video) {
    video.addEventListener("waiting", function () { g.waiting++; });
    function onFrame(now, meta) {
      var wall = Date.now();
      g.frames++;
      if (video.videoWidth === %(w)d) {
        ctx.drawImage(video, X, Y, BW * N, BH, 0, 0, BW * N, BH);
        var v = decode();
        if (v === null) g.bad++;
        else {
          g.last = wall - (g.t0 + v);
          var hls = window.onairHls;
          var pd = hls && hls.playingDate ? hls.playingDate.getTime() : NaN;
          g.samples.push([wall, g.last,
                          hls && isFinite(hls.latency) ? Math.round(hls.latency * 1000) : null,
                          hls && isFinite(hls.targetLatency)
                            ? Math.round(hls.targetLatency * 1000) : null,
                          isFinite(pd) ? wall - pd : null, video.playbackRate]);
          if (g.samples.length > 20000) g.samples.splice(0, 10000);
        }
      }
      video.requestVideoFrameCallback(onFrame);
    }
    video.requestVideoFrameCallback(onFrame);
  }
  function find() {
    var v = document.querySelector("video");
    if (v) attach(v); else setTimeout(find, 50);
  }
  find();
})();
"""
for _name, _value in {
    "BW": BLOCK_W,
    "BH": BLOCK_H,
    "X": STAMP_X,
    "Y": STAMP_Y,
    "N": N_BLOCKS,
    "W": WIDTH,
}.items():
    DECODER_JS = DECODER_JS.replace(f"%({_name.lower()})d", str(_value))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- publisher


def stamp_bits(value: int) -> list[int]:
    """The 44 block values (1 white, 0 black) that encode `value` (32 bits)."""
    value &= 0xFFFFFFFF
    data = [(value >> (31 - i)) & 1 for i in range(32)]
    chk = ((value >> 24) ^ (value >> 16) ^ (value >> 8) ^ value ^ 0x5A) & 0xFF
    check = [(chk >> (7 - i)) & 1 for i in range(8)]
    return [1, 0, *data, *check, 0, 1]


def run_publisher(
    url: str,
    t0_ms: int,
    seconds: float,
    bitrate: int,
    preset: str = "veryfast",
    keyint: int = 1,
    fmt: str = "flv",
) -> None:
    """Publish stamped 720p30 + AAC in real time until `seconds` or SIGTERM: to
    `url` (rtmp://, rtmps://) as FLV, or, with `url` "-", to stdout as `fmt` (a
    relay such as Debian's ffmpeg takes it on: bench/ingest_protocols.py)."""
    import av
    import numpy as np

    stop = False

    def on_term(_sig: int, _frm: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    # unbuffered: every packet the muxer flushes goes to the pipe at once
    target: Any = open(sys.stdout.fileno(), "wb", buffering=0, closefd=False) if url == "-" else url
    out = av.open(target, "w", format=fmt, container_options={"fflags": "flush_packets"})
    vs = out.add_stream(
        "libx264",
        rate=FPS,
        options={
            "preset": preset,
            "forced-idr": "1",
            "tune": "zerolatency",
            "maxrate": str(bitrate),
            "bufsize": str(bitrate),
            "x264-params": f"keyint={2 * FPS * keyint}:min-keyint={FPS * keyint}:scenecut=0",
        },
    )
    vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    vs.bit_rate = bitrate
    vs.codec_context.gop_size = 2 * FPS * keyint
    aus = out.add_stream("aac", rate=48000)
    aus.layout = "stereo"
    aus.bit_rate = 128_000

    # Backgrounds: a few noisy gradients cycled, so the encoder has real work to do.
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = ((xx * 200 // WIDTH + yy * 55 // HEIGHT) % 256).astype(np.int16)
    backgrounds = [
        np.clip(base + rng.integers(-12, 13, size=base.shape), 0, 255).astype(np.uint8)
        for _ in range(8)
    ]
    chroma = np.full((HEIGHT // 2, WIDTH), 128, dtype=np.uint8)  # U and V stacked (I420)
    chroma[: HEIGHT // 4, : WIDTH // 2] = 100
    white = np.full((BLOCK_H, BLOCK_W), WHITE, dtype=np.uint8)
    black = np.full((BLOCK_H, BLOCK_W), BLACK, dtype=np.uint8)

    samples_per_frame = 1024
    tone = 0.1 * np.sin(2 * math.pi * 440 * np.arange(48000) / 48000).astype(np.float32)
    audio_samples = 0

    start = time.monotonic()
    i = 0
    late = 0
    encode_ms: list[float] = []  # capture (stamp) -> packet handed to the RTMP socket
    sent = 0
    last_key_second = -1
    try:
        while not stop and i < seconds * FPS:
            # A camera: frame i is captured at start + i/FPS. When encoding falls behind
            # (a loaded machine), skip the missed capture instants instead of drifting.
            behind = int((time.monotonic() - start) * FPS) - i
            if behind > 0:
                late += behind
                i += behind
            delay = start + i / FPS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            img = np.empty((HEIGHT * 3 // 2, WIDTH), dtype=np.uint8)
            img[:HEIGHT] = backgrounds[i % len(backgrounds)]
            img[HEIGHT:] = chroma
            bar = (i * 8) % WIDTH  # a moving bar below the stamp
            img[200:680, bar : bar + 40] = 200
            stamp = int(time.time() * 1000) - t0_ms  # the wall clock, at capture time
            for k, bit in enumerate(stamp_bits(stamp)):
                x = STAMP_X + k * BLOCK_W
                img[STAMP_Y : STAMP_Y + BLOCK_H, x : x + BLOCK_W] = white if bit else black
            frame = av.VideoFrame.from_ndarray(img, format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            if i // (FPS * keyint) != last_key_second:  # a keyframe every `keyint` s
                last_key_second = i // (FPS * keyint)  # of capture time, skips or not
                frame.pict_type = av.video.frame.PictureType.I
            for packet in vs.encode(frame):
                out.mux(packet)
            encode_ms.append(time.time() * 1000 - t0_ms - stamp)
            sent += 1
            # Audio up to this frame's time.
            while audio_samples < (i + 1) * 48000 // FPS:
                off = audio_samples % 48000
                chunk = np.resize(tone[off:], samples_per_frame)
                af = av.AudioFrame.from_ndarray(
                    np.stack([chunk, chunk]), format="fltp", layout="stereo"
                )
                af.sample_rate = 48000
                af.pts = audio_samples
                af.time_base = Fraction(1, 48000)
                for packet in aus.encode(af):
                    out.mux(packet)
                audio_samples += samples_per_frame
            i += 1
    finally:
        with contextlib.suppress(Exception):
            out.close()
        enc = sorted(encode_ms[FPS:]) or [0.0]
        print(
            f"publisher: {sent} frames sent, {late} skipped (encoder behind), capture->sent p50 "
            f"{enc[len(enc) // 2]:.0f} ms p95 {enc[int(len(enc) * 0.95)]:.0f} ms",
            file=sys.stderr,
            flush=True,
        )


# --------------------------------------------------------------------------- children


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(
            args,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )


def kill_group(proc: subprocess.Popen[bytes] | None, grace_s: float = 3.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def start_publisher(
    url: str, t0_ms: int, seconds: float, args: argparse.Namespace, log: Path
) -> subprocess.Popen[bytes]:
    return spawn(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "_publish",
            "--url",
            url,
            "--t0",
            str(t0_ms),
            "--duration",
            str(seconds),
            "--bitrate",
            str(args.bitrate),
            "--preset",
            args.preset,
            "--keyint",
            str(args.keyint),
        ],
        log,
    )


@dataclass
class Target:
    server: str
    player: str
    page_url: str
    playlist_url: str
    publisher_url: str
    inject: bool = False
    watch_js: bytes | None = None
    """Serve this instead of onair's /static/watch.js (A/B of player tuning)."""


@dataclass
class Result:
    server: str
    player: str
    samples: int
    p50_ms: float | None
    p95_ms: float | None
    min_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    decode_failures: int
    frames_seen: int
    waiting_events: int
    hls_latency_p50_ms: float | None
    """hls.js's distance behind the playlist's live edge."""
    hls_target_latency_p50_ms: float | None
    pdt_latency_p50_ms: float | None
    """now - hls.playingDate: behind the server's arrival clock (PROGRAM-DATE-TIME)."""
    dropped_frames: int | None
    errors: list[dict[str, Any]] = field(default_factory=list)
    playlist_head: str = ""
    cpu: dict[str, float] = field(default_factory=dict)
    load_avg: float = 0.0
    note: str = ""
    series: list[list[Any]] = field(default_factory=list)
    """Every 15th sample: [s since window start, g2g ms, hls.latency ms, target ms,
    pdt latency ms, playbackRate]."""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as s,
        s.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r,
    ):
        return r.status, await r.text()


async def wait_playlist(url: str, timeout_s: float) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = ""
    while loop.time() < deadline:
        with contextlib.suppress(Exception):
            status, text = await http_get(url)
            last = f"{status}"
            if status == 200 and ("#EXTINF" in text or "#EXT-X-STREAM-INF" in text):
                return text
        await asyncio.sleep(0.25)
    raise TimeoutError(f"no playable playlist at {url} after {timeout_s}s (last {last})")


async def override_script(page: Any, pattern: str, body: bytes) -> None:
    """Answer requests matching `pattern` with `body` (DevTools Fetch interception)."""
    import base64

    encoded = base64.b64encode(body).decode()
    original = page._on_event
    tasks: set[asyncio.Task[Any]] = set()

    def on_event(data: dict[str, Any]) -> None:
        if data.get("method") == "Fetch.requestPaused":
            task = asyncio.get_running_loop().create_task(
                page.send(
                    "Fetch.fulfillRequest",
                    {
                        "requestId": data["params"]["requestId"],
                        "responseCode": 200,
                        "responseHeaders": [
                            {"name": "Content-Type", "value": "text/javascript"},
                            {"name": "Cache-Control", "value": "no-store"},
                        ],
                        "body": encoded,
                    },
                )
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        original(data)

    page._on_event = on_event
    await page.send("Fetch.enable", {"patterns": [{"urlPattern": pattern}]})


TICKS = os.sysconf("SC_CLK_TCK")


def proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds used) for every readable process."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    return table


def tree_cpu(table: dict[int, tuple[int, float]], root: int) -> dict[int, float]:
    """CPU seconds of `root` and its descendants, by pid."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in out:
            out[pid] = table[pid][1]
            todo.extend(children.get(pid, []))
    return out


@dataclass
class CpuWatch:
    """CPU used over the measuring window by the server, the publisher and the viewer
    (Chromium: this process's other descendants), in % of one core."""

    server_pid: int
    publisher_pid: int
    _start: dict[str, dict[int, float]] = field(default_factory=dict)
    _t: float = 0.0

    def _groups(self) -> dict[str, dict[int, float]]:
        table = proc_table()
        server = tree_cpu(table, self.server_pid)
        pub = tree_cpu(table, self.publisher_pid)
        mine = tree_cpu(table, os.getpid())
        viewer = {
            p: c for p, c in mine.items() if p != os.getpid() and p not in server and p not in pub
        }
        return {"server": server, "publisher": pub, "viewer": viewer}

    def start(self) -> None:
        self._start, self._t = self._groups(), time.monotonic()

    def stop(self) -> dict[str, float]:
        end, dt = self._groups(), max(time.monotonic() - self._t, 1e-6)
        out = {}
        for name, pids in end.items():
            used = sum(
                c - self._start[name].get(p, 0.0) for p, c in pids.items() if p in self._start[name]
            )
            out[f"{name}_cpu_pct"] = round(100 * used / dt, 1)
        return out


async def measure(
    target: Target, t0_ms: int, warmup_s: float, seconds_s: float, cpu: CpuWatch | None = None
) -> Result:
    from tests.support.chromium import chromium_page

    async with chromium_page(None if target.inject else target.page_url) as page:
        if target.inject and target.watch_js is not None:
            await override_script(page, "*/static/watch.js*", target.watch_js)
        if target.inject:
            await page.send(
                "Page.addScriptToEvaluateOnNewDocument",
                {"source": f"window.G2G_T0 = {t0_ms};\n" + DECODER_JS},
            )
            await page.navigate(target.page_url)
        await page.wait_for("window.g2g && window.g2g.samples.length > 0", timeout_s=30)
        started = time.time() * 1000
        await asyncio.sleep(warmup_s)
        if cpu:
            cpu.start()
        await asyncio.sleep(seconds_s)
        usage = cpu.stop() if cpu else {}
        g: dict[str, Any] = await page.evaluate(
            "(() => { const v = document.querySelector('video');"
            " const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;"
            " return Object.assign({}, window.g2g, {dropped: q ? q.droppedVideoFrames : null,"
            " stats: window.onairStats || null, trace: window.onairTrace || null}); })()"
        )
    if g.get("trace"):
        out = RESULTS / f"g2g_trace_{re.sub(r'[^a-z0-9]+', '_', target.player.lower())}.json"
        out.write_text(json.dumps(g["trace"], indent=0))
    window = [s for s in g["samples"] if s[0] >= started + warmup_s * 1000]
    lat = [float(s[1]) for s in window]

    def col(k: int) -> list[float]:
        return [float(s[k]) for s in window if s[k] is not None]

    def p50(values: list[float]) -> float | None:
        return round(pct(values, 0.5)) if values else None

    t_start = started + warmup_s * 1000
    series = [[round((s[0] - t_start) / 1000, 2), *s[1:]] for s in window[::15]]
    note = ""
    if g.get("stats"):
        note = f"watch page stats: {json.dumps(g['stats'])[:400]}"
    return Result(
        server=target.server,
        player=target.player,
        samples=len(lat),
        p50_ms=round(pct(lat, 0.5)) if lat else None,
        p95_ms=round(pct(lat, 0.95)) if lat else None,
        min_ms=min(lat) if lat else None,
        max_ms=max(lat) if lat else None,
        mean_ms=round(statistics.fmean(lat)) if lat else None,
        decode_failures=int(g["bad"]),
        frames_seen=int(g["frames"]),
        waiting_events=int(g["waiting"]),
        hls_latency_p50_ms=p50(col(2)),
        hls_target_latency_p50_ms=p50(col(3)),
        pdt_latency_p50_ms=p50(col(4)),
        dropped_frames=g.get("dropped"),
        errors=g["errors"][-10:],
        cpu=usage,
        load_avg=os.getloadavg()[0],
        note=note,
        series=series,
    )


# --------------------------------------------------------------------------- servers


async def start_page_server(port: int) -> Any:
    from aiohttp import web

    async def page(_r: web.Request) -> web.StreamResponse:
        return web.FileResponse(PAGE, headers={"Cache-Control": "no-store"})

    async def hls_js(_r: web.Request) -> web.StreamResponse:
        return web.FileResponse(HLS_JS)

    async def shaka_js(_r: web.Request) -> web.StreamResponse:
        return web.FileResponse(SHAKA_JS)

    async def g2g_js(_r: web.Request) -> web.Response:
        return web.Response(text=DECODER_JS, content_type="application/javascript")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/hls.min.js", hls_js)
    app.router.add_get("/shaka.js", shaka_js)
    app.router.add_get("/g2g.js", g2g_js)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def start_nginx(workdir: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    rtmp_port, http_port = free_port(), free_port()
    hls = workdir / "hls"
    hls.mkdir(parents=True)
    (workdir / "logs").mkdir()
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
load_module {NGINX_RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log warn;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        application live {{
            live on;
            record off;
            hls on;
            hls_path {hls};
            hls_fragment 1s;
            hls_playlist_length 4s;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
    server {{
        listen 127.0.0.1:{http_port};
        location /hls/ {{
            alias {hls}/;
            add_header Access-Control-Allow-Origin * always;
            add_header Cache-Control no-cache always;
        }}
    }}
}}
""")
    proc = spawn(["nginx", "-p", str(workdir), "-c", str(conf)], workdir / "nginx.log")
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", rtmp_port), 0.2):
            return proc, rtmp_port, http_port
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    kill_group(proc)
    raise RuntimeError(f"nginx did not start: {(workdir / 'nginx.log').read_text()[-2000:]}")


async def media_playlist(url: str) -> str:
    """The media playlist text at `url`, following a multivariant playlist's first variant."""
    _, text = await http_get(url)
    if "#EXT-X-STREAM-INF" in text:
        uri = next(ln for ln in text.splitlines() if ln and not ln.startswith("#"))
        _, text = await http_get(str(URL(url).join(URL(uri))))
    return text


def playlist_head(text: str) -> str:
    keep = [
        ln
        for ln in text.splitlines()
        if ln.startswith(("#EXT-X-TARGETDURATION", "#EXT-X-PART-INF", "#EXT-X-SERVER-CONTROL"))
    ]
    return " | ".join(dict.fromkeys(keep))[:400]


async def run_onair(
    args: argparse.Namespace, work: Path, page_port: int, t0_ms: int, players: list[str]
) -> list[Result]:
    import aiohttp

    from tests.control.api.service_process import ServiceProcess

    env = {}
    if args.read_coalesce is not None:
        env["ONAIR_RTMP_READ_COALESCE_S"] = str(args.read_coalesce)
    svc = ServiceProcess(work / "onair" / "data", env=env)
    pub: subprocess.Popen[bytes] | None = None
    results: list[Result] = []
    try:
        await asyncio.to_thread(svc.start)
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{svc.url}/v1/live-streams",
                json={"name": "g2g", "latency_mode": "low", "record": False},
                headers={"Authorization": f"Bearer {svc.admin_key}"},
            ) as r,
        ):
            body = await r.json()
            assert r.status == 201, body
        key, pid = body["stream_key"], body["playback_ids"][0]["id"]
        playlist = f"{svc.url}/play/{pid}.m3u8"
        total = len(players) * (args.warmup + args.seconds + 15) + 20
        pub = start_publisher(
            f"rtmp://127.0.0.1:{svc.rtmp_port}/live/{key}",
            t0_ms,
            total,
            args,
            work / "onair-publisher.log",
        )
        text = await wait_playlist(playlist, 20)
        for player in players:
            if player == "watch":
                target = Target(
                    "onair",
                    "onair /watch page",
                    f"{svc.url}/watch/{pid}",
                    playlist,
                    "",
                    inject=True,
                )
            elif player == "watch-alt":
                target = Target(
                    "onair",
                    f"/watch + {Path(args.watch_js).name}"[:23],
                    f"{svc.url}/watch/{pid}",
                    playlist,
                    "",
                    inject=True,
                    watch_js=args.watch_js_body,
                )
            else:
                query = {"ll": "1", "t0": str(t0_ms), "src": playlist}
                if args.trace:
                    query["trace"] = "1"
                label = "hls.js lowLatencyMode"
                if player in ("shaka", "shaka-tuned"):
                    query["player"] = "shaka"
                    label = "Shaka lowLatencyMode"
                if player == "shaka-tuned":
                    query["config"] = args.shaka_config
                    label = "Shaka LL + --shaka-config"
                if player == "tuned":
                    query["config"] = args.ll_config
                    label = "hls.js LL + --ll-config"
                target = Target(
                    "onair",
                    label,
                    f"http://127.0.0.1:{page_port}/?{urlencode(query)}",
                    playlist,
                    "",
                )
            print(f"  onair: {target.player} ...", flush=True)
            assert svc.proc is not None
            res = await measure(
                target, t0_ms, args.warmup, args.seconds, CpuWatch(svc.proc.pid, pub.pid)
            )
            with contextlib.suppress(Exception):
                text = await media_playlist(playlist)
            res.playlist_head = playlist_head(text) + f" | {durations(text)}"
            results.append(res)
    finally:
        kill_group(pub)
        with contextlib.suppress(Exception):
            svc.kill()
    return results


async def run_nginx(args: argparse.Namespace, work: Path, page_port: int, t0_ms: int) -> Result:
    nginx: subprocess.Popen[bytes] | None = None
    pub: subprocess.Popen[bytes] | None = None
    try:
        nginx, rtmp_port, http_port = start_nginx(work / "nginx")
        pub = start_publisher(
            f"rtmp://127.0.0.1:{rtmp_port}/live/g2g",
            t0_ms,
            args.warmup + args.seconds + 40,
            args,
            work / "nginx-publisher.log",
        )
        playlist = f"http://127.0.0.1:{http_port}/hls/g2g.m3u8"
        await wait_playlist(playlist, 30)
        target = Target(
            "nginx-rtmp",
            "hls.js defaults",
            f"http://127.0.0.1:{page_port}/?"
            + urlencode({"ll": "0", "t0": str(t0_ms), "src": playlist}),
            playlist,
            "",
        )
        print(f"  nginx-rtmp: {target.player} ...", flush=True)
        res = await measure(target, t0_ms, args.warmup, args.seconds, CpuWatch(nginx.pid, pub.pid))
        with contextlib.suppress(Exception):
            text = await media_playlist(playlist)
            res.playlist_head = playlist_head(text) + f" | {durations(text)}"
        return res
    finally:
        kill_group(pub)
        kill_group(nginx)


def durations(text: str) -> str:
    """Segment (EXTINF) and part durations seen in a media playlist, as a short summary."""
    seg = [float(m) for m in re.findall(r"#EXTINF:([0-9.]+)", text)]
    part = [float(m) for m in re.findall(r"#EXT-X-PART:DURATION=([0-9.]+)", text)]
    out = f"{len(seg)} segments {min(seg, default=0):.2f}-{max(seg, default=0):.2f} s"
    if part:
        out += f", {len(part)} parts {min(part):.3f}-{max(part):.3f} s"
    return out


def print_publisher_logs(work: Path) -> None:
    for log in sorted(work.glob("*publisher.log")):
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        print(f"  {log.name}: {' '.join(tail)}")


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v / 1000:.2f} s"


async def main_async(args: argparse.Namespace) -> int:
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    work = Path(tempfile.mkdtemp(prefix="onair-g2g-"))
    page_port = free_port()
    runner = await start_page_server(page_port)
    t0_ms = int(time.time() * 1000) - 1000
    results: list[Result] = []
    began = time.monotonic()
    me = asyncio.current_task()
    assert me is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, me.cancel)
    try:
        async with asyncio.timeout(args.max_run_s):  # children are killed in the finallys
            if "onair" in servers:
                players = ["bench"]
                if args.ll_config:
                    players.append("tuned")
                if args.shaka:
                    players.append("shaka")
                if args.shaka and args.shaka_config:
                    players.append("shaka-tuned")
                if args.watch_page:
                    players.append("watch")
                if args.watch_js:
                    players.append("watch-alt")
                results += await run_onair(args, work, page_port, t0_ms, players)
            if "nginx" in servers:
                results.append(await run_nginx(args, work, page_port, t0_ms))
    finally:
        await runner.cleanup()
        print_publisher_logs(work)
        if args.keep:
            print(f"  work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    nginx = next((r for r in results if r.server == "nginx-rtmp"), None)
    print(
        f"\nglass-to-glass latency ({args.seconds:.0f} s window after {args.warmup:.0f} s "
        f"warm-up; 720p30 x264 {args.preset} zerolatency, keyframe every {args.keyint} s, "
        f"{args.bitrate // 1000} kbit/s)"
    )
    print(
        f"{'server':<11} {'player':<23} {'p50':>7} {'p95':>7} {'n':>5} {'bad':>4} "
        f"{'stalls':>6} {'edge':>7} {'target':>7} {'vs PDT':>7} {'p50 ratio':>9}"
    )
    for r in results:
        ratio = "-"
        if r.server == "onair" and nginx and nginx.p50_ms and r.p50_ms is not None:
            ratio = f"{r.p50_ms / nginx.p50_ms:.2f}"
        print(
            f"{r.server:<11} {r.player:<23} {fmt(r.p50_ms):>7} {fmt(r.p95_ms):>7} "
            f"{r.samples:>5} {r.decode_failures:>4} {r.waiting_events:>6} "
            f"{fmt(r.hls_latency_p50_ms):>7} {fmt(r.hls_target_latency_p50_ms):>7} "
            f"{fmt(r.pdt_latency_p50_ms):>7} {ratio:>9}"
        )
    for r in results:
        print(
            f"  {r.server} / {r.player}: CPU % of a core: "
            + ", ".join(f"{k.removesuffix('_cpu_pct')} {v:.0f}" for k, v in r.cpu.items())
            + f"; load average {r.load_avg:.1f}"
        )
    for r in results:
        print(f"  {r.server} playlist: {r.playlist_head}")
    print(
        "targets (onair): p50 <= 1.00 s, p95 <= 1.50 s.  p50/p95: glass to glass (capture "
        "-> displayed); edge/target: hls.js latency behind the playlist edge and its target "
        "(p50); vs PDT: now - hls.playingDate (PROGRAM-DATE-TIME = arrival at the server); "
        "stalls: video 'waiting' events; bad: stamps that failed to decode"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "glass_to_glass.json"
    out.write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": args.seconds,
                "warmup": args.warmup,
                "bitrate": args.bitrate,
                "load_avg": os.getloadavg(),
                "duration_s": round(time.monotonic() - began, 1),
                "results": [asdict(r) for r in results],
                "ratio_p50_onair_over_nginx": (
                    round(results[0].p50_ms / nginx.p50_ms, 3)
                    if nginx
                    and nginx.p50_ms
                    and results
                    and results[0].server == "onair"
                    and results[0].p50_ms is not None
                    else None
                ),
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    pp = sub.add_parser("_publish", help="(internal) the stamped RTMP publisher")
    pp.add_argument("--url", required=True)
    pp.add_argument("--t0", type=int, required=True)
    pp.add_argument("--duration", type=float, default=60)
    pp.add_argument("--bitrate", type=int, default=2_500_000)
    pp.add_argument("--preset", default="veryfast")
    pp.add_argument("--keyint", type=int, default=1)
    pp.add_argument("--format", default="flv", help="container (with --url -: to stdout)")
    p.add_argument("--servers", default="onair,nginx")
    p.add_argument("--seconds", type=float, default=25)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--bitrate", type=int, default=2_500_000)
    p.add_argument(
        "--preset",
        default="veryfast",
        help="x264 preset of the publisher (ultrafast on a starved machine)",
    )
    p.add_argument(
        "--watch-page",
        action="store_true",
        help="also measure onair's own /watch page (decoder injected)",
    )
    p.add_argument(
        "--ll-config",
        default="",
        help="also measure onair with hls.js LL plus this JSON config, e.g. "
        '\'{"maxLiveSyncPlaybackRate": 1.5, "liveSyncOnStallIncrease": 0.3}\'',
    )
    p.add_argument(
        "--watch-js",
        default="",
        help="also measure onair's /watch page with this file as its watch.js",
    )
    p.add_argument(
        "--max-run-s", type=float, default=175, help="hard bound on the whole run (default 175 s)"
    )
    p.add_argument(
        "--read-coalesce",
        type=float,
        default=None,
        help="onair's ONAIR_RTMP_READ_COALESCE_S (default: the service's own)",
    )
    p.add_argument("--keyint", type=int, default=1, help="seconds between keyframes (1)")
    p.add_argument(
        "--shaka",
        action="store_true",
        help="also measure stock Shaka Player (lowLatencyMode) on onair",
    )
    p.add_argument(
        "--shaka-config",
        default=None,
        metavar="JSON",
        help="with --shaka: a second Shaka run with this configuration on top "
        '(e.g. \'{"manifest": {"defaultPresentationDelay": 0.8}}\')',
    )
    p.add_argument("--keep", action="store_true", help="keep the temp work dir (logs)")
    p.add_argument(
        "--trace",
        action="store_true",
        help="hls.js runs record a timeline of playlist, part and media events "
        "(bench/results/g2g_trace_<player>.json)",
    )
    args = p.parse_args()
    if args.cmd == "_publish":
        run_publisher(
            args.url, args.t0, args.duration, args.bitrate, args.preset, args.keyint, args.format
        )
        return 0
    if not HLS_JS.exists():
        sys.exit("hls.js is not vendored: run `make vendor-js`")
    if "nginx" in args.servers and (
        not NGINX_RTMP_MODULE.exists() or shutil.which("nginx") is None
    ):
        sys.exit("needs nginx and libnginx-mod-rtmp (apt-get install nginx libnginx-mod-rtmp)")
    args.watch_js_body = Path(args.watch_js).read_bytes() if args.watch_js else None
    try:
        return asyncio.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; child processes were stopped", file=sys.stderr)
        return 130
    except TimeoutError as e:
        print(
            f"run exceeded --max-run-s ({args.max_run_s} s) or a wait timed out: {e}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
