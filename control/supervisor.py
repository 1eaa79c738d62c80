"""`onair serve` with several workers: the supervisor.

The supervisor prepares the store (its schema and the first admin key), then
starts ``settings.workers`` worker processes. Each worker is an `onair serve`
of its own and a node of the cluster machinery (`control.node`): the workers
share the HTTP, RTMP and RTMPS ports (``SO_REUSEPORT``: the kernel spreads
connections over them), each takes a slice of the WebRTC UDP range and listens
for the other nodes on a loopback port of its own. A publisher lands on any
worker, which becomes its stream's origin; a viewer on any worker plays any
stream through the origin-edge relay; a room is hosted by one worker and
reached from all. Events wake the other workers through the local bus
(`control.local_bus`) or Redis.

The supervisor prints the one banner once every worker is ready; restarts a
worker that dies, under a new node id (the dead worker's publishers reconnect
to any worker and its rooms move, as a dead node's do; the supervisor clears
the dead worker's alive key so that happens at once); lets a worker that
drained and exited cleanly stay gone (it exits when all have); and on SIGINT
or SIGTERM stops them all gracefully, each finishing its recordings.

A worker knows it is one from ``ONAIR_WORKER_INDEX``; it says it is ready with
one line on its stdout (`READY`) and stops when its stdin closes, so workers
never outlive a supervisor that was killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from control.settings import Settings, SettingsError

log = logging.getLogger(__name__)

READY = "onair-worker-ready"
"""The line a worker prints on its stdout once it serves (then its node id)."""
STARTUP_TIMEOUT_S = 120.0
RESTART_BACKOFF_S = (0.5, 10.0)
"""First and longest wait before restarting a worker that keeps dying young."""
YOUNG_S = 10.0
_WORKER_ID = re.compile(r"^(?P<machine>.+)-w\d+(\.\d+)?$")


def worker_node_id(base: str, index: int, generation: int) -> str:
    """``<base>-w<index>``, and ``.<generation>`` from the first restart on: a
    restarted worker is a new node, so nothing takes it for the one that died."""
    suffix = f".{generation}" if generation > 1 else ""
    return f"{base}-w{index}{suffix}"


def machine_of(node_id: str) -> str:
    """The node id of the `onair serve` a worker belongs to (itself when not a worker)."""
    m = _WORKER_ID.match(node_id)
    return m.group("machine") if m else node_id


def udp_slice(ports: str, index: int, count: int) -> str:
    """Worker `index`'s share of a ``min-max`` WebRTC UDP range ('' stays '')."""
    if not ports.strip():
        return ""
    low_s, _, high_s = ports.strip().partition("-")
    low, high = int(low_s), int(high_s or low_s)
    size = (high - low + 1) // count
    if size < 1:
        raise SettingsError(f"webrtc_udp_ports {ports!r} has fewer ports than workers ({count})")
    first = low + index * size
    last = high if index == count - 1 else first + size - 1
    return f"{first}-{last}"


def _free_port(host: str, kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
        s.bind((host if host not in ("", "0.0.0.0") else "0.0.0.0", 0))
        return int(s.getsockname()[1])


def resolve_ports(settings: Settings) -> Settings:
    """Port 0 ("any free port") must be one port for all workers: pick it here."""
    changes: dict[str, int] = {}
    for name in ("http_port", "rtmp_port", "rtmps_port"):
        if getattr(settings, name) == 0:
            changes[name] = _free_port(settings.host)
    if settings.srt_port == 0:
        changes["srt_port"] = _free_port(settings.host, socket.SOCK_DGRAM)
    return settings.replace(**changes) if changes else settings


def worker_env(settings: Settings, index: int, node_id: str) -> dict[str, str]:
    """The environment of worker `index`: the supervisor's, with the settings it
    resolved (command-line overrides included) spelled as ONAIR_ variables."""
    env = dict(os.environ)
    named = {
        "data_dir": settings.data_dir,
        "host": settings.host,
        "http_port": settings.http_port,
        "rtmp_port": settings.rtmp_port,
        "public_url": settings.public_url,
        "redis_url": settings.redis_url,
        "rtmps_port": settings.rtmps_port,
        "srt_port": settings.srt_port,
    }
    for name, value in named.items():
        if value is not None:
            env[f"ONAIR_{name.upper()}"] = str(value)
    env["ONAIR_WORKERS"] = str(settings.workers)
    env["ONAIR_WORKER_INDEX"] = str(index)
    env["ONAIR_NODE_ID"] = node_id
    env["ONAIR_WEBRTC_UDP_PORTS"] = udp_slice(settings.webrtc_udp_ports, index, settings.workers)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Worker:
    index: int
    generation: int = 0
    node_id: str = ""
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    done: bool = False
    """Exited on its own after draining: not restarted."""
    reader: asyncio.Task[None] | None = None


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        command: list[str] | None = None,
        on_dead: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """`command`: how to start a worker (default ``python -m control.cli
        serve``); `on_dead(node_id)`: awaited when a worker died."""
        self.settings = settings
        self.command = command or [sys.executable, "-m", "control.cli", "serve"]
        self.on_dead = on_dead
        self.workers = [Worker(i) for i in range(settings.workers)]
        self.stopping = False
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- running -------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until all serve (`RuntimeError` if one
        exits or hangs first: a port in use, a bad setting)."""
        for worker in self.workers:
            await self._spawn(worker)
        waits = [asyncio.ensure_future(w.ready.wait()) for w in self.workers]
        exits = [asyncio.ensure_future(self._exited(w)) for w in self.workers]
        watched: list[asyncio.Future[Any]] = [asyncio.gather(*waits), *exits]
        try:
            done, _ = await asyncio.wait(
                watched,
                timeout=STARTUP_TIMEOUT_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not all(w.ready.is_set() for w in self.workers):
                raise RuntimeError(
                    "a worker exited before it served" if done else "workers did not start"
                )
        finally:
            for f in (*waits, *watched):
                f.cancel()
        self._tasks = [
            asyncio.get_running_loop().create_task(self._keep(w), name=f"worker-{w.index}")
            for w in self.workers
        ]

    async def wait(self) -> None:
        """Until every worker is gone for good (stopped, or drained and exited)."""
        await self._stopped.wait()

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM every worker (each drains its requests and finishes its
        recordings), SIGKILL those still there after `timeout_s`."""
        self.stopping = True
        for worker in self.workers:
            self._signal(worker, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            process = worker.process
            if process is None or process.returncode is not None:
                continue
            try:
                await asyncio.wait_for(process.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("worker %s did not stop in time: killed", worker.node_id)
                self._signal(worker, signal.SIGKILL)
                await process.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stopped.set()

    def kill(self) -> None:
        for worker in self.workers:
            self._signal(worker, signal.SIGKILL)

    # -- one worker ----------------------------------------------------------------

    async def _spawn(self, worker: Worker) -> None:
        worker.generation += 1
        worker.node_id = worker_node_id(self.settings.node_id, worker.index, worker.generation)
        worker.ready = asyncio.Event()
        worker.started_at = time.monotonic()
        worker.process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,  # closes when the supervisor dies
            stdout=asyncio.subprocess.PIPE,
            env=worker_env(self.settings, worker.index, worker.node_id),
        )
        worker.reader = asyncio.get_running_loop().create_task(self._read(worker, worker.process))

    async def _read(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        """Forward the worker's output; its READY line sets `worker.ready`."""
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode("utf-8", "replace")
            if line.startswith(READY):
                worker.ready.set()
                continue
            sys.stdout.write(line)
            sys.stdout.flush()

    async def _exited(self, worker: Worker) -> int:
        assert worker.process is not None
        return await worker.process.wait()

    async def _keep(self, worker: Worker) -> None:
        """Restart `worker` whenever it dies, until the supervisor stops."""
        backoff = RESTART_BACKOFF_S[0]
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self.stopping:
                return
            if code == 0:
                log.info("worker %s drained and exited", worker.node_id)
                worker.done = True
                if all(w.done for w in self.workers):
                    self._stopped.set()
                return
            log.warning(
                "worker %s died (exit %s): starting another",
                worker.node_id,
                code,
                extra={"node_id": worker.node_id, "exit_code": code},
            )
            if self.on_dead is not None:
                try:
                    await self.on_dead(worker.node_id)
                except Exception:
                    log.exception("clearing worker %s from the store failed", worker.node_id)
            if time.monotonic() - worker.started_at < YOUNG_S:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESTART_BACKOFF_S[1])
            else:
                backoff = RESTART_BACKOFF_S[0]
            if self.stopping:
                return
            await self._spawn(worker)

    @staticmethod
    def _signal(worker: Worker, sig: int) -> None:
        process = worker.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)


def watch_stdin(stop: Callable[[], None]) -> None:
    """In a worker: call `stop` (thread-safe) when stdin closes, i.e. when the
    supervisor is gone however it went."""
    import threading

    loop = asyncio.get_running_loop()

    def read() -> None:
        with contextlib.suppress(Exception):
            while os.read(sys.stdin.fileno(), 4096):
                pass
        with contextlib.suppress(RuntimeError):  # the loop already closed
            loop.call_soon_threadsafe(stop)

    threading.Thread(target=read, name="supervisor-watch", daemon=True).start()


def private_listener(settings: Settings) -> tuple[socket.socket, str]:
    """A bound socket on which this worker hears other nodes, and its URL: a
    port of its own on `node_url`'s host (the shared port would land on any
    worker)."""
    from urllib.parse import urlsplit

    host = (urlsplit(settings.node_url).hostname if settings.node_url else None) or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return sock, f"http://{shown}:{port}"
