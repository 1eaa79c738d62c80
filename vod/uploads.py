"""Receiving an upload: an HTTP request body streamed into the BlobStore.

``receive_upload(reader, blobs, key, max_bytes)`` reads ``reader`` (an
``aiohttp.StreamReader`` — ``request.content`` — or anything with
``async read(n) -> bytes``) chunk by chunk into ``blobs.put_stream`` (multipart
on S3): memory stays at one chunk plus one S3 part whatever the file size. Over
``max_bytes`` it raises ``UploadTooLarge`` and nothing is stored. An empty body
raises ``EmptyUpload``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from vod.blobstore import BlobStore

CHUNK = 256 * 1024


class ByteReader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class UploadError(ValueError):
    """The upload is refused; ``status`` is the HTTP status to answer."""

    status = 400


class UploadTooLarge(UploadError):
    status = 413

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"upload larger than the limit of {max_bytes} bytes")
        self.max_bytes = max_bytes


class EmptyUpload(UploadError):
    def __init__(self) -> None:
        super().__init__("the upload is empty")


async def receive_upload(
    reader: ByteReader,
    blobs: BlobStore,
    key: str,
    max_bytes: int,
    *,
    content_type: str = "application/octet-stream",
    declared_length: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Stream ``reader`` to ``blobs[key]``; returns the number of bytes stored.

    ``declared_length`` (Content-Length) over the limit is refused before reading.
    ``on_progress(received)`` is called after each chunk (it must not block).
    """
    if declared_length is not None and declared_length > max_bytes:
        raise UploadTooLarge(max_bytes)
    received = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal received
        while True:
            chunk = await reader.read(CHUNK)
            if not chunk:
                return
            received += len(chunk)
            if received > max_bytes:
                raise UploadTooLarge(max_bytes)
            if on_progress is not None:
                on_progress(received)
            yield chunk

    size = await blobs.put_stream(key, chunks(), content_type)
    if size == 0:
        await blobs.delete(key)
        raise EmptyUpload()
    return size
