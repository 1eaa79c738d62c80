"""S3BlobStore: the BlobStore on any S3-compatible endpoint (AWS, MinIO, R2).

boto3 is synchronous; every call runs in a worker thread (``asyncio.to_thread``)
so the event loop never waits on the network. Large objects go up as multipart
uploads part by part (``part_size`` bytes in memory at most), never buffered
whole. With an ``endpoint_url`` the client uses path-style addressing (what
MinIO and most self-hosted endpoints want); without one it talks to AWS with
virtual-hosted style. The bucket is created only when ``create_bucket=True``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from vod.blobstore.base import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    BlobNotFound,
    BlobUnavailable,
    validate_key,
    validate_prefix,
)

MIN_PART_SIZE = 5 * 1024 * 1024
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


_BUSY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"}


def _is_missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES


def _is_unavailable(exc: Exception) -> bool:
    """Unreachable, cut off, timed out, 5xx or throttled (after botocore's own
    retries): the endpoint's trouble, not a refusal of this request."""
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(exc.response.get("Error", {}).get("Code"))
        return int(status) >= 500 or code in _BUSY_CODES
    return False


class S3BlobStore:
    """Objects live in one bucket; an optional ``key_prefix`` namespaces them."""

    def __init__(
        self,
        endpoint_url: str | None,
        bucket: str,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        create_bucket: bool = False,
        part_size: int = 8 * 1024 * 1024,
        key_prefix: str = "",
        max_pool_connections: int = 16,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError("S3 multipart parts must be at least 5 MiB")
        self.endpoint_url = endpoint_url or None
        self.bucket = bucket
        self.region = region or "us-east-1"
        self.part_size = part_size
        self.key_prefix = key_prefix.strip("/") + "/" if key_prefix.strip("/") else ""
        self._create_bucket = create_bucket
        self._bucket_ready = not create_bucket
        self._bucket_lock = asyncio.Lock()
        config = Config(
            region_name=self.region,
            signature_version="s3v4",
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=max_pool_connections,
            connect_timeout=10,
            read_timeout=60,
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )

    def __repr__(self) -> str:
        return f"S3BlobStore({self.endpoint_url!r}, {self.bucket!r})"

    # -- plumbing -------------------------------------------------------------

    def _k(self, key: str) -> str:
        return self.key_prefix + validate_key(key)

    async def _call(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        try:
            await self._ready()
            return await asyncio.to_thread(fn, **kwargs)
        except (ClientError, BotoConnectionError, HTTPClientError) as exc:
            if _is_unavailable(exc):
                raise BlobUnavailable(f"S3 endpoint unavailable: {type(exc).__name__}") from exc
            raise

    async def _ready(self) -> None:
        if self._bucket_ready:
            return
        async with self._bucket_lock:
            if not self._bucket_ready:
                await asyncio.to_thread(self._ensure_bucket_sync)
                self._bucket_ready = True

    def _ensure_bucket_sync(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if not _is_missing(exc) and "NoSuchBucket" not in str(exc):
                raise
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    # -- writes ---------------------------------------------------------------

    async def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        await self._call(
            self._client.put_object,
            Bucket=self.bucket,
            Key=self._k(key),
            Body=bytes(data),
            ContentType=content_type,
        )

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> int:
        k = self._k(key)
        await self._ready()
        buf = bytearray()
        total = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                buf += chunk
                total += len(chunk)
                while len(buf) >= self.part_size:
                    if upload_id is None:
                        upload_id = await self._create_multipart(k, content_type)
                    body = bytes(buf[: self.part_size])
                    del buf[: self.part_size]
                    parts.append(await self._upload_part(k, upload_id, len(parts) + 1, body))
            if upload_id is None:
                await self._call(
                    self._client.put_object,
                    Bucket=self.bucket,
                    Key=k,
                    Body=bytes(buf),
                    ContentType=content_type,
                )
                return total
            if buf or not parts:
                parts.append(await self._upload_part(k, upload_id, len(parts) + 1, bytes(buf)))
            await self._call(
                self._client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=k,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            upload_id = None
            return total
        finally:
            if upload_id is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        asyncio.to_thread(
                            self._client.abort_multipart_upload,
                            Bucket=self.bucket,
                            Key=k,
                            UploadId=upload_id,
                        )
                    )

    async def _create_multipart(self, k: str, content_type: str) -> str:
        resp = await self._call(
            self._client.create_multipart_upload,
            Bucket=self.bucket,
            Key=k,
            ContentType=content_type,
        )
        return str(resp["UploadId"])

    async def _upload_part(
        self, k: str, upload_id: str, number: int, body: bytes
    ) -> dict[str, Any]:
        resp = await self._call(
            self._client.upload_part,
            Bucket=self.bucket,
            Key=k,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
        )
        return {"ETag": resp["ETag"], "PartNumber": number}

    async def put_file(
        self,
        key: str,
        path: str | Path,
        content_type: str = DEFAULT_CONTENT_TYPE,
        *,
        move: bool = False,
    ) -> int:
        validate_key(key)
        f: BinaryIO = await asyncio.to_thread(open, Path(path), "rb")

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                data = await asyncio.to_thread(f.read, self.part_size)
                if not data:
                    return
                yield data

        try:
            return await self.put_stream(key, chunks(), content_type)
        finally:
            await asyncio.to_thread(f.close)

    # -- reads ----------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        k = self._k(key)
        try:
            resp = await self._call(self._client.get_object, Bucket=self.bucket, Key=k)
        except ClientError as exc:
            if _is_missing(exc):
                raise BlobNotFound(key) from None
            raise
        body = resp["Body"]
        try:
            return bytes(await asyncio.to_thread(body.read))
        finally:
            body.close()

    async def open(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        k = self._k(key)
        if end is not None and end <= start:
            if not await self.exists(key):
                raise BlobNotFound(key)
            return
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": k}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            resp = await self._call(self._client.get_object, **kwargs)
        except ClientError as exc:
            if _is_missing(exc):
                raise BlobNotFound(key) from None
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return
            raise
        body = resp["Body"]
        try:
            while True:
                chunk = await asyncio.to_thread(body.read, chunk_size)
                if not chunk:
                    break
                yield chunk
        finally:
            body.close()

    async def get_file(self, key: str, path: str | Path) -> int:
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        total = 0
        f: BinaryIO = await asyncio.to_thread(open, dest, "wb")
        try:
            async for chunk in self.open(key):
                await asyncio.to_thread(f.write, chunk)
                total += len(chunk)
        finally:
            await asyncio.to_thread(f.close)
        return total

    async def _head(self, key: str) -> dict[str, Any] | None:
        try:
            k = self._k(key)
        except BlobNotFound:
            return None
        try:
            resp: dict[str, Any] = await self._call(
                self._client.head_object, Bucket=self.bucket, Key=k
            )
            return resp
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise

    async def exists(self, key: str) -> bool:
        return await self._head(key) is not None

    async def size(self, key: str) -> int:
        head = await self._head(key)
        if head is None:
            raise BlobNotFound(key)
        return int(head["ContentLength"])

    def _list_sync(self, prefix: str) -> list[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        keys: list[str] = []
        strip = len(self.key_prefix)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key_prefix + prefix):
            for obj in page.get("Contents", []):
                keys.append(obj["Key"][strip:])
        keys.sort()
        return keys

    async def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        await self._ready()
        result: list[str] = await self._call(self._list_sync, prefix=prefix)
        return result

    # -- deletes --------------------------------------------------------------

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete_object, Bucket=self.bucket, Key=self._k(key))

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise ValueError("refusing to delete the whole store (empty prefix)")
        keys = await self.list(prefix)
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self.key_prefix + k} for k in keys[i : i + 1000]]
            await self._call(
                self._client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
        return len(keys)

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    async def url_for(self, key: str, expires_s: int = 300) -> str | None:
        k = self._k(key)
        url: str = await asyncio.to_thread(
            self._client.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.bucket, "Key": k},
            ExpiresIn=int(expires_s),
        )
        return url

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._client.close)
