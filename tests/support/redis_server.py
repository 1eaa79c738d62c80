"""A throwaway real redis-server on loopback for tests and benchmarks.

    with redis_server() as url:      # "redis://127.0.0.1:<free port>/0"
        ...

Starts ``redis-server --port <free> --save '' --appendonly no`` in a temp
directory, waits until it answers PING, and kills it on exit. No fixed ports:
the OS picks a free one (retried if another process grabs it first).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator


class RedisServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


@contextlib.contextmanager
def redis_server(startup_timeout_s: float = 10.0) -> Iterator[str]:
    """Run a private redis-server; yields its URL."""
    binary = redis_server_binary()
    if binary is None:
        raise RedisServerError("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="onair-redis-") as tmp:
        for _attempt in range(5):
            port = free_port()
            proc = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    tmp,
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=tmp,
            )
            deadline = time.monotonic() + startup_timeout_s
            while time.monotonic() < deadline and proc.poll() is None:
                if _ping(port):
                    break
                time.sleep(0.02)
            if proc.poll() is None and _ping(port):
                break
            proc.kill()
            proc.wait()
        else:
            raise RedisServerError("redis-server did not start")
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait(timeout=10)


def _start(binary: str, args: list[str], port: int, cwd: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        if _ping(port):
            return proc
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise RedisServerError(f"redis-server {' '.join(args[:2])} did not start")


class SentinelSet:
    """A master, one replica and three Sentinels (quorum 2) on loopback; the
    Sentinels call the master down after 1 s and fail over to the replica."""

    MASTER = "mymaster"

    def __init__(self, binary: str, tmp: str) -> None:
        self.binary = binary
        self.tmp = tmp
        self.master_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def sentinels(self) -> str:
        """The ``ONAIR_REDIS_SENTINELS`` value."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def start(self) -> None:
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.tmp]
        self.procs[self.master_port] = _start(
            self.binary, ["--port", str(self.master_port), *common], self.master_port, self.tmp
        )
        self.procs[self.replica_port] = _start(
            self.binary,
            [
                *("--port", str(self.replica_port)),
                *("--replicaof", "127.0.0.1", str(self.master_port)),
                *common,
            ],
            self.replica_port,
            self.tmp,
        )
        for port in self.sentinel_ports:
            conf = f"{self.tmp}/sentinel-{port}.conf"
            with open(conf, "w") as f:
                f.write(
                    f"port {port}\nbind 127.0.0.1\ndir {self.tmp}\n"
                    f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master_port} 2\n"
                    f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                    f"sentinel failover-timeout {self.MASTER} 5000\n"
                    f"sentinel parallel-syncs {self.MASTER} 1\n"
                )
            self.procs[port] = _start(self.binary, [conf, "--sentinel"], port, self.tmp)
        self._wait_replica_in_sync()

    def _wait_replica_in_sync(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", self.replica_port), timeout=1) as s:
                s.sendall(b"INFO replication\r\n")
                time.sleep(0.05)
                if b"master_link_status:up" in s.recv(65536):
                    return
            time.sleep(0.1)
        raise RedisServerError("the replica did not sync with the master")

    def kill_master(self) -> None:
        """SIGKILL the master: no goodbye, its unreplicated writes are gone."""
        proc = self.procs.pop(self.master_port)
        proc.kill()
        proc.wait(timeout=10)

    def current_master_port(self) -> int:
        with socket.create_connection(("127.0.0.1", self.sentinel_ports[0]), timeout=1) as s:
            s.sendall(f"SENTINEL get-master-addr-by-name {self.MASTER}\r\n".encode())
            time.sleep(0.05)
            reply = s.recv(4096).decode().split("\r\n")
        return int(reply[4])

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        for proc in self.procs.values():
            proc.wait(timeout=10)
        self.procs.clear()


@contextlib.contextmanager
def redis_sentinel_set() -> Iterator[SentinelSet]:
    binary = redis_server_binary()
    if binary is None:
        raise RedisServerError("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="onair-sentinel-") as tmp:
        cluster = SentinelSet(binary, tmp)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
