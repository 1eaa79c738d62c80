"""Shared e2e helpers: a real ffmpeg RTMP publisher (testsrc2 + sine, -g 30), a
polling helper, and small parsers for LL-HLS playlists.

    pub = await Publisher.start(rtmp_url, seconds=10)
    await pub.wait()               # ffmpeg ends by itself after `seconds`
    await pub.stop()               # or SIGTERM it now (only that process)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support.hls_rules import attrs

T = TypeVar("T")


class Publisher:
    """One ffmpeg publishing a test picture (640x360 30 fps, GOP 30) and a tone over
    RTMP, RTMPS or SRT (by the URL's scheme)."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, log: Path | None) -> None:
        self.proc = proc
        self.url = url
        self.log = log
        self.started_at = time.monotonic()

    @staticmethod
    def args(url: str, seconds: float, size: str = "640x360", keyint_s: int = 1) -> list[str]:
        gop = str(30 * keyint_s)
        return [
            "ffmpeg", "-hide_banner", "-loglevel", "warning", "-nostdin",
            "-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
            "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", f"{seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-g", gop, "-keyint_min", gop, "-sc_threshold", "0", "-pix_fmt", "yuv420p",
            "-b:v", "600k",
            "-c:a", "aac", "-b:a", "64k", "-ar", "48000",
            # SRT carries MPEG-TS; RTMP(S), FLV
            "-f", "mpegts" if url.startswith("srt://") else "flv", url,
        ]  # fmt: skip

    @classmethod
    def popen(cls, url: str, seconds: float, log: Path | None = None) -> subprocess.Popen[bytes]:
        """The same publisher as a plain child process (for sync, module-scoped fixtures)."""
        err = log.open("ab") if log is not None else None
        try:
            return subprocess.Popen(
                cls.args(url, seconds),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err if err is not None else subprocess.DEVNULL,
            )
        finally:
            if err is not None:
                err.close()

    @classmethod
    async def start(
        cls,
        url: str,
        seconds: float = 10.0,
        *,
        log: Path | None = None,
        size: str = "640x360",
        keyint_s: int = 1,
    ) -> Publisher:
        args = cls.args(url, seconds, size, keyint_s)
        err = log.open("ab") if log is not None else subprocess.DEVNULL
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        finally:
            if not isinstance(err, int):
                err.close()
        return cls(proc, url, log)

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def wait(self, within: float = 60.0) -> int:
        return await asyncio.wait_for(self.proc.wait(), within)

    async def stop(self) -> None:
        """End this ffmpeg now (SIGTERM, then SIGKILL)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


async def poll(
    fn: Callable[[], Awaitable[T]],
    until: Callable[[T], bool],
    *,
    within: float = 20.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Call ``fn`` until ``until(result)``; return that result or raise TimeoutError."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        last = await fn()
        if until(last):
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {within}s; last: {str(last)[:2000]}")
        await asyncio.sleep(interval)


async def ffprobe(target: str | Path, *extra: str, within: float = 60.0) -> dict[str, Any]:
    """ffprobe's JSON about streams and format; raises AssertionError on failure."""
    proc = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format",
        *extra, str(target),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode == 0, f"ffprobe {target}: {err.decode()[-2000:]}"
    return dict(json.loads(out))


async def ffmpeg_decode(target: str, *extra: str, within: float = 60.0) -> str:
    """Decode ``target`` fully with ffmpeg (-f null); returns stderr; asserts success."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", *extra, "-i", target,
        "-f", "null", "-",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"ffmpeg -i {target}: {err.decode()[-2000:]}"
    return err.decode()


async def make_file(path: Path, *args: str) -> Path:
    """Run ``ffmpeg -y <args> path`` to make a test file."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", *args, str(path),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return path


def tag_attrs(line: str) -> dict[str, str]:
    """``#EXT-X-PART:DURATION=0.2,URI="p.mp4"`` → {"DURATION": "0.2", "URI": "p.mp4"}."""
    _, _, rest = line.partition(":")
    return attrs(rest)


def tags(text: str, name: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(name + ":") or ln == name]


def media_sequence(text: str) -> int:
    (line,) = tags(text, "#EXT-X-MEDIA-SEQUENCE")
    return int(line.split(":", 1)[1])


def next_part(text: str) -> tuple[int, int]:
    """(_HLS_msn, _HLS_part) of the first part not yet listed in a media playlist."""
    msn = media_sequence(text)
    lines = text.splitlines()
    segs = 0
    for ln in lines:
        if ln.startswith("#EXT-X-SKIP:"):
            segs += int(tag_attrs(ln)["SKIPPED-SEGMENTS"])
        elif ln and not ln.startswith("#"):
            segs += 1
    trailing = 0
    for ln in reversed(lines):
        if ln and not ln.startswith("#"):
            break
        if ln.startswith("#EXT-X-PART:"):
            trailing += 1
    return msn + segs, trailing


def stop_popen(proc: subprocess.Popen[bytes]) -> None:
    """End one child started by `Publisher.popen` (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
