"""Run `onair serve` as a real subprocess on free loopback ports (test helper).

svc = ServiceProcess(tmp_path / "data", env={"ONAIR_WEBHOOK_BACKOFF_BASE_S": "0.5"})
svc.start()            # waits for the banner; svc.admin_key on first start
... svc.url ...
svc.kill()             # SIGKILL, or svc.stop() for SIGTERM (graceful)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

KEY_RE = re.compile(r"ONAIR_API_KEY=(onair_sk_\S+)")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STARTED_GROUPS: set[int] = set()
"""Process groups of every `onair serve` the suite started (one per start)."""


def leftover_processes() -> list[str]:
    """`ps` lines of the processes (zombies aside: nothing runs in them, and
    reaping them is init's job) still in those groups."""
    if not STARTED_GROUPS:
        return []
    table = subprocess.run(
        ["ps", "-eo", "pid,pgid,stat,args"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[1:]
    left = []
    for line in table:
        fields = line.split(None, 3)
        if len(fields) >= 3 and int(fields[1]) in STARTED_GROUPS and not fields[2].startswith("Z"):
            left.append(line.strip())
    return left


class ServiceProcess:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.rtmp_port = free_port()
        self.srt_port = free_port(socket.SOCK_DGRAM)
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_key: str | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONAIR_")}
        env.update(
            {
                "ONAIR_DATA_DIR": str(self.data_dir),
                "ONAIR_HOST": "127.0.0.1",
                "ONAIR_HTTP_PORT": str(self.port),
                "ONAIR_RTMP_PORT": str(self.rtmp_port),
                "ONAIR_SRT_PORT": str(self.srt_port),
                "ONAIR_PUBLIC_URL": self.url,
                "ONAIR_SHUTDOWN_TIMEOUT_S": "5",
                # one process unless a test asks for workers (tests/e2e/test_workers.py)
                "ONAIR_WORKERS": "1",
                # the tests' webhook receivers listen on 127.0.0.1
                "ONAIR_WEBHOOK_ALLOW_PRIVATE": "true",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None
        self.runs += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.data_dir.parent / f"serve-{self.runs}.out"
        self.stderr_path = self.data_dir.parent / f"serve-{self.runs}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            # its own process group: a SIGKILL of the service leaves its media
            # pool (forkserver + workers) behind, and `kill` takes the group
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "control.cli", "serve"],
                stdout=out,
                stderr=err,
                env=self._env(),
                cwd=str(self.data_dir.parent),
                start_new_session=True,
            )
        STARTED_GROUPS.add(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text()
            if "onair is running" in text:
                m = KEY_RE.search(text)
                if m:
                    self.admin_key = m.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"onair serve did not start:\n{self.stdout_path.read_text()}\n"
            f"{self.stderr_path.read_text()[-4000:]}"
        )

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful shutdown); returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.reap(self.proc)
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: no cleanup at all (of the service and of what it started)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.reap(self.proc)
            self.proc = None

    @staticmethod
    def reap(proc: subprocess.Popen[bytes]) -> None:
        """Kill what a dead service left in its process group (its media pool)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def workers(self) -> dict[str, int]:
        """node id → pid of each worker process the supervisor runs now."""
        assert self.proc is not None
        found = {}
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        for pid in children.read_text().split():
            with contextlib.suppress(OSError):
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                for item in environ:
                    if item.startswith(b"ONAIR_NODE_ID="):
                        found[item.split(b"=", 1)[1].decode()] = int(pid)
        return found

    def logs(self) -> str:
        return self.stderr_path.read_text() if hasattr(self, "stderr_path") else ""
