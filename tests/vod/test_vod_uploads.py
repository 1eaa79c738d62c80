"""Uploads stream from the HTTP request body into storage, with a hard size limit."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from vod.blobstore import BlobStore
from vod.uploads import EmptyUpload, UploadError, UploadTooLarge, receive_upload

LIMIT = 6 * 1024 * 1024


def make_app(blobs: BlobStore) -> web.Application:
    async def put(request: web.Request) -> web.Response:
        try:
            size = await receive_upload(
                request.content,
                blobs,
                f"uploads/{request.match_info['id']}",
                LIMIT,
                declared_length=request.content_length,
            )
        except UploadError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        return web.json_response({"size": size})

    app = web.Application(client_max_size=1024)  # body is streamed, never read whole
    app.router.add_put("/up/{id}", put)
    return app


@pytest.fixture
async def server(blobs: BlobStore) -> AsyncIterator[TestServer]:
    srv = TestServer(make_app(blobs), host="127.0.0.1", port=0)
    await srv.start_server()
    yield srv
    await srv.close()


async def chunked(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_a_chunked_upload_is_stored_whole(server: TestServer, blobs: BlobStore) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)
    async with aiohttp.ClientSession() as s:
        async with s.put(server.make_url("/up/a"), data=chunked(data)) as resp:
            assert resp.status == 200
            assert (await resp.json())["size"] == len(data)
    assert await blobs.get("uploads/a") == data


async def test_over_the_limit_is_refused_and_nothing_is_kept(
    server: TestServer, blobs: BlobStore
) -> None:
    data = os.urandom(LIMIT + 1)
    async with aiohttp.ClientSession() as s:
        async with s.put(server.make_url("/up/b"), data=chunked(data)) as resp:
            assert resp.status == 413
    assert not await blobs.exists("uploads/b")


async def test_a_declared_length_over_the_limit_is_refused_up_front(blobs: BlobStore) -> None:
    class Never:
        async def read(self, n: int = -1) -> bytes:
            raise AssertionError("must not read")

    with pytest.raises(UploadTooLarge):
        await receive_upload(Never(), blobs, "uploads/c", 10, declared_length=11)


async def test_an_empty_upload_is_refused(blobs: BlobStore) -> None:
    class Empty:
        async def read(self, n: int = -1) -> bytes:
            return b""

    with pytest.raises(EmptyUpload):
        await receive_upload(Empty(), blobs, "uploads/d", 10)
    assert not await blobs.exists("uploads/d")
