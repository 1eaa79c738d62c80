"""The BlobStore protocol: where recordings, uploads, MP4s and thumbnails live.

One async protocol, two implementations (``local.LocalBlobStore`` for a
directory on disk, ``s3.S3BlobStore`` for any S3-compatible endpoint), one
contract test suite. Keys are ``/``-separated relative paths over a small safe
charset; ``validate_key`` rejects everything else, so a key built from a URL
can never reach outside the store (no ``..``, no absolute paths, no ``\\``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol, runtime_checkable

DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK_SIZE = 1024 * 1024
MAX_KEY_LENGTH = 512

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=-]*")


class BlobError(Exception):
    """Base class of BlobStore errors."""


class BlobUnavailable(BlobError):
    """The store could not be reached (refused, timed out, 5xx or throttled): the
    same call may well succeed later, unlike a store that refused the write
    itself (a full disk, a permission). Writers that can wait (the recorder)
    hold their data and retry; others treat it like any failure."""


class BlobNotFound(BlobError, KeyError):
    """No object under that key (or the key is not a valid key at all)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"blob not found: {self.key!r}"


class InvalidKey(BlobNotFound, ValueError):
    """The key is malformed (traversal, absolute, bad characters).

    It subclasses BlobNotFound so that a route handing a URL path to the store
    answers 404 for a traversal attempt exactly as for a missing object.
    """

    def __str__(self) -> str:
        return f"invalid blob key: {self.key!r}"


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise InvalidKey.

    Segments match ``[A-Za-z0-9_][A-Za-z0-9._=-]*`` (so no ``.``/``..``, no hidden
    files, no empty segments, no leading ``/``), at most 512 characters in all.
    """
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(str(key))
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidKey(key)
    return key


def validate_prefix(prefix: str) -> str:
    """A list/delete prefix: empty, or a key, optionally ending with ``/``."""
    if prefix == "":
        return prefix
    body = prefix[:-1] if prefix.endswith("/") else prefix
    validate_key(body)
    return prefix


def join_key(*parts: str) -> str:
    """Join key parts with ``/`` and validate the result."""
    return validate_key("/".join(p.strip("/") for p in parts if p.strip("/")))


@runtime_checkable
class BlobStore(Protocol):
    """Async object storage. All methods are safe to call on the event loop."""

    async def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        """Store ``data`` atomically under ``key`` (replacing any object there)."""
        ...

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> int:
        """Store an object from an async iterator of chunks without buffering it
        whole (multipart on S3). Returns the size. If the iterator raises, nothing
        is stored and the error propagates."""
        ...

    async def put_file(
        self,
        key: str,
        path: str | Path,
        content_type: str = DEFAULT_CONTENT_TYPE,
        *,
        move: bool = False,
    ) -> int:
        """Store the local file at ``path`` (streamed). Returns the size.

        ``move=True``: the caller gives the file up; a local store on the same
        filesystem renames it into place instead of copying (it may be gone after)."""
        ...

    async def get(self, key: str) -> bytes:
        """The whole object. Raises BlobNotFound."""
        ...

    def open(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Iterate the object's bytes ``[start, end)`` in chunks (``end`` None: to
        the end). Raises BlobNotFound on first iteration when missing."""
        ...

    async def get_file(self, key: str, path: str | Path) -> int:
        """Download the object to a local file (streamed). Returns the size."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def size(self, key: str) -> int:
        """Size in bytes. Raises BlobNotFound."""
        ...

    async def list(self, prefix: str = "") -> list[str]:
        """All keys starting with ``prefix`` (plain string prefix), sorted."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; missing is not an error."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with ``prefix``; returns how many.
        An empty prefix is refused (ValueError) so nobody wipes the store by accident."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The object's file when the store is a local directory (zero-copy reads by
        worker processes), else None. The file may not exist."""
        ...

    async def url_for(self, key: str, expires_s: int = 300) -> str | None:
        """A short-lived direct GET URL (S3 presigned), or None (local store)."""
        ...

    async def close(self) -> None: ...
