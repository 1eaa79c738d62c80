"""LocalBlobStore: the BlobStore on a local directory (the default).

Every write goes to a hidden temp file in the target directory and is renamed
into place, so readers see the old object or the new one, never half of one,
and a crash leaves at most a stray ``.*.tmp`` file (ignored by ``list``). All
file I/O runs in worker threads (``asyncio.to_thread``), never on the loop.

``put`` is the recorder's hot path (one call per live segment per stream), so
every write skips what it can: a known-existing directory is not re-created,
the temp name is a counter (created with ``O_EXCL``, like ``mkstemp``, mode
0600) instead of a random one, and the data is made durable with ``fdatasync``
(the file's data and the metadata needed to read it back, its size; not its
times) before the rename.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from vod.blobstore.base import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    BlobNotFound,
    validate_key,
    validate_prefix,
)

_MAX_KNOWN_DIRS = 4096
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class LocalBlobStore:
    """Objects are files under ``root``; the key is the relative path."""

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._dirs: set[str] = set()
        """Directories ``put`` has seen exist (re-checked when a create fails)."""
        self._seq = itertools.count()
        """Temp file names: unique in this process; O_EXCL guards against others."""

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        """The file backing ``key`` (validated; the file may not exist)."""
        return self.root / validate_key(key)

    # -- writes ---------------------------------------------------------------

    def _open_temp(self, key: str) -> tuple[Path, BinaryIO, str]:
        """The target of ``key`` and a new hidden temp file beside it to write."""
        target = self.path_for(key)
        directory, name = os.path.split(target)
        if directory not in self._dirs:
            os.makedirs(directory, exist_ok=True)
            if len(self._dirs) >= _MAX_KNOWN_DIRS:
                self._dirs.clear()
            self._dirs.add(directory)
        try:
            fd, tmp = self._create_temp(directory, name)
        except FileNotFoundError:
            # The directory went away since (delete_prefix prunes empty ones).
            os.makedirs(directory, exist_ok=True)
            fd, tmp = self._create_temp(directory, name)
        return target, os.fdopen(fd, "wb"), tmp

    def _create_temp(self, directory: str, name: str) -> tuple[int, str]:
        """A new hidden temp file next to ``name`` (O_EXCL, mode 0600, as mkstemp)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        pid = os.getpid()
        while True:
            tmp = os.path.join(directory, f".{name}.{pid}-{next(self._seq)}.tmp")
            try:
                return os.open(tmp, flags, 0o600), tmp
            except FileExistsError:  # pragma: no cover - a stray file from a dead process
                continue

    def _commit(self, f: BinaryIO, tmp: str, target: Path) -> None:
        f.flush()
        if self.fsync:
            _datasync(f.fileno())
        f.close()
        os.replace(tmp, target)

    @staticmethod
    def _abort(f: BinaryIO, tmp: str) -> None:
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)

    def _put_sync(self, key: str, data: bytes) -> None:
        target, f, tmp = self._open_temp(key)
        try:
            f.write(data)
            self._commit(f, tmp, target)
        except BaseException:
            self._abort(f, tmp)
            raise

    async def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        validate_key(key)
        await asyncio.to_thread(self._put_sync, key, bytes(data))

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> int:
        validate_key(key)
        target, f, tmp = await asyncio.to_thread(self._open_temp, key)
        total = 0
        try:
            async for chunk in chunks:
                if chunk:
                    await asyncio.to_thread(f.write, chunk)
                    total += len(chunk)
            await asyncio.to_thread(self._commit, f, tmp, target)
        except BaseException:
            await asyncio.to_thread(self._abort, f, tmp)
            raise
        return total

    def _put_file_sync(self, key: str, path: Path, move: bool) -> int:
        if move:
            target = self.path_for(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.stat().st_dev == target.parent.stat().st_dev:
                size = path.stat().st_size
                if self.fsync:
                    with open(path, "rb") as src:
                        os.fsync(src.fileno())
                os.replace(path, target)
                return size
        target, f, tmp = self._open_temp(key)
        try:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, CHUNK_SIZE)
            size = f.tell()
            self._commit(f, tmp, target)
            return size
        except BaseException:
            self._abort(f, tmp)
            raise

    async def put_file(
        self,
        key: str,
        path: str | Path,
        content_type: str = DEFAULT_CONTENT_TYPE,
        *,
        move: bool = False,
    ) -> int:
        validate_key(key)
        return await asyncio.to_thread(self._put_file_sync, key, Path(path), move)

    # -- reads ----------------------------------------------------------------

    def _existing(self, key: str) -> Path:
        path = self.path_for(key)
        if not path.is_file():
            raise BlobNotFound(key)
        return path

    def _get_sync(self, key: str) -> bytes:
        try:
            return self._existing(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get_sync, key)

    async def open(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        path = await asyncio.to_thread(self._existing, key)
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        try:
            if start:
                await asyncio.to_thread(f.seek, start)
            pos = start
            while end is None or pos < end:
                n = chunk_size if end is None else min(chunk_size, end - pos)
                chunk = await asyncio.to_thread(f.read, n)
                if not chunk:
                    break
                pos += len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(f.close)

    def _get_file_sync(self, key: str, dest: Path) -> int:
        src = self._existing(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest.stat().st_size

    async def get_file(self, key: str, path: str | Path) -> int:
        return await asyncio.to_thread(self._get_file_sync, key, Path(path))

    async def exists(self, key: str) -> bool:
        try:
            path = self.path_for(key)
        except BlobNotFound:
            return False
        return await asyncio.to_thread(path.is_file)

    def _size_sync(self, key: str) -> int:
        try:
            return self._existing(key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def size(self, key: str) -> int:
        return await asyncio.to_thread(self._size_sync, key)

    def _list_sync(self, prefix: str) -> list[str]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return keys

    async def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        return await asyncio.to_thread(self._list_sync, prefix)

    # -- deletes --------------------------------------------------------------

    def _prune(self, directory: Path) -> None:
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _delete_sync(self, key: str) -> None:
        path = self.path_for(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._prune(path.parent)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete_sync, key)

    def _delete_prefix_sync(self, prefix: str) -> int:
        keys = self._list_sync(prefix)
        for key in keys:
            self._delete_sync(key)
        return len(keys)

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise ValueError("refusing to delete the whole store (empty prefix)")
        validate_prefix(prefix)
        return await asyncio.to_thread(self._delete_prefix_sync, prefix)

    def local_path(self, key: str) -> Path | None:
        return self.path_for(key)

    async def url_for(self, key: str, expires_s: int = 300) -> str | None:
        validate_key(key)
        return None

    async def close(self) -> None:
        return None
