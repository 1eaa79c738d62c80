"""Blob storage for VOD: the BlobStore protocol, a local-disk and an S3 implementation.

Entry points: ``LocalBlobStore(root)``, ``S3BlobStore(endpoint_url, bucket, region,
access_key, secret_key, create_bucket=...)``, ``make_blobstore(...)`` to pick one
from settings, ``BlobUnavailable`` (unreachable now, may come back later),
``BlobNotFound`` / ``InvalidKey`` (an InvalidKey is a BlobNotFound, so traversal
attempts look exactly like missing objects).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vod.blobstore.base import (
    BlobError,
    BlobNotFound,
    BlobStore,
    BlobUnavailable,
    InvalidKey,
    join_key,
    validate_key,
    validate_prefix,
)
from vod.blobstore.local import LocalBlobStore

if TYPE_CHECKING:
    from vod.blobstore.s3 import S3BlobStore


def make_blobstore(
    *,
    data_dir: str | Path,
    s3_endpoint: str | None = None,
    s3_bucket: str | None = None,
    s3_region: str | None = None,
    s3_access_key: str | None = None,
    s3_secret_key: str | None = None,
    create_bucket: bool = False,
) -> BlobStore:
    """S3 when a bucket is configured, else ``LocalBlobStore(<data_dir>/blobs)``."""
    if s3_bucket:
        from vod.blobstore.s3 import S3BlobStore

        return S3BlobStore(
            s3_endpoint,
            s3_bucket,
            s3_region,
            s3_access_key,
            s3_secret_key,
            create_bucket=create_bucket,
        )
    return LocalBlobStore(Path(data_dir) / "blobs")


def __getattr__(name: str) -> object:
    if name == "S3BlobStore":
        from vod.blobstore.s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(name)


__all__ = [
    "BlobError",
    "BlobNotFound",
    "BlobStore",
    "BlobUnavailable",
    "InvalidKey",
    "LocalBlobStore",
    "S3BlobStore",
    "join_key",
    "make_blobstore",
    "validate_key",
    "validate_prefix",
]
