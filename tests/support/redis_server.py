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
