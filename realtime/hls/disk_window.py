"""A live stream's segments on disk, for a window whose memory keeps only the
live edge and whose stream is not recorded.

Owns `DiskWindow`, a `SegmentSink` and `SegmentSource`: each complete segment
is written (off the event loop) to a file of its own in the stream's directory
and read back on request; files older than the window are removed as new ones
come, and the directory when the broadcast ends (after the playlist's linger).
`DiskWindows` makes one per stream under a directory of this process's own
and, at start, removes what processes that died left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections import deque
from pathlib import Path

from realtime.segments import InitSegment, Part, Segment

log = logging.getLogger(__name__)

KEEP_S = 45.0
"""Seconds of segments kept on disk (the live window is 30 s)."""
LINGER_S = 60.0
"""After the end, the files stay this long for players finishing the playlist."""


class DiskWindow:
    def __init__(self, directory: Path, *, keep_s: float = KEEP_S) -> None:
        self.directory = directory
        self.keep_s = keep_s
        self._kept: deque[tuple[int, float]] = deque()
        self._writes: dict[int, asyncio.Task[None]] = {}
        self._pending: dict[int, Segment] = {}
        """Segments whose file is being written: read from memory meanwhile."""
        self.removed = False

    def _path(self, msn: int) -> Path:
        return self.directory / f"{msn}.m4s"

    # -- SegmentSink -----------------------------------------------------------------

    def on_init(self, init: InitSegment) -> None:
        pass

    def on_part(self, part: Part) -> None:
        pass

    def on_segment(self, segment: Segment) -> None:
        if self.removed:
            return
        self._pending[segment.msn] = segment
        self._kept.append((segment.msn, segment.duration))
        gone: list[int] = []
        total = sum(d for _, d in self._kept)
        while len(self._kept) > 1 and total - self._kept[0][1] >= self.keep_s:
            msn, duration = self._kept.popleft()
            total -= duration
            gone.append(msn)
        task = asyncio.ensure_future(self._write(segment, gone))
        self._writes[segment.msn] = task

    def on_end(self) -> None:
        asyncio.get_running_loop().call_later(LINGER_S, self.remove)

    async def _write(self, segment: Segment, gone: list[int]) -> None:
        data = segment.join()

        def write() -> None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._path(segment.msn).write_bytes(data)
            for msn in gone:
                with contextlib.suppress(FileNotFoundError):
                    self._path(msn).unlink()

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            log.warning("live window cache %s: %r", self.directory, exc)
        finally:
            self._pending.pop(segment.msn, None)
            self._writes.pop(segment.msn, None)

    # -- SegmentSource ---------------------------------------------------------------

    async def read_segment(self, msn: int) -> bytes | None:
        pending = self._pending.get(msn)
        if pending is not None:
            return pending.join()
        try:
            return await asyncio.to_thread(self._path(msn).read_bytes)
        except OSError:
            return None

    def remove(self) -> None:
        """Delete the directory (in a thread: the broadcast is over)."""
        self.removed = True
        for task in self._writes.values():
            task.cancel()
        asyncio.get_running_loop().run_in_executor(
            None, lambda: shutil.rmtree(self.directory, ignore_errors=True)
        )


class DiskWindows:
    """The `DiskWindow`s of this process, under ``<root>/<pid>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.directory = root / str(os.getpid())

    def clear_dead(self) -> None:
        """Remove the directories of processes that are gone (blocking: call at start)."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                os.kill(int(entry.name), 0)
            except ProcessLookupError:
                shutil.rmtree(entry, ignore_errors=True)
            except PermissionError:
                pass  # alive, another user's

    def window(self, stream_id: str, broadcast: str) -> DiskWindow:
        return DiskWindow(self.directory / f"{stream_id}-{broadcast}")

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
