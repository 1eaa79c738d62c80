"""What outlives the broadcast: recording, blob storage, assets, VOD playback.

Entry points (the composition root in ``control`` wires these):

- ``vod.blobstore``: ``BlobStore`` protocol, ``LocalBlobStore(root)``,
  ``S3BlobStore(endpoint_url, bucket, region, access_key, secret_key, create_bucket=)``,
  ``make_blobstore(data_dir=, s3_endpoint=, s3_bucket=, ...)``, ``BlobNotFound``.
- ``vod.recorder``: ``Recorder(blobs, prefix, on_progress=)`` (a ``SegmentSink``;
  ``finalize()``), ``finalize_recording(blobs, prefix)`` (window close or crash recovery).
- ``vod.manifest``: ``Manifest`` (``duration_s``, ``gaps()``, ``summary()``),
  ``load_manifest``, ``media_key(prefix, name)``, ``is_media_name(name)``.
- ``vod.playlist``: ``render_media_playlist(manifest, suffix=, uri_prefix=)``, ``gaps``.
- ``vod.jobs``: ``VodContext(blobs, executor)``, ``make_handlers(ctx)`` →
  ``{"mp4", "thumbnail", "upload", "clip"}``, ``make_process_pool()``,
  ``render_thumbnail``, ``PermanentJobError``.
- ``vod.uploads``: ``receive_upload(reader, blobs, key, max_bytes)``.
- ``vod.tokens``: ``verify_playback_token(...)``, ``sign_playback_token(...)``,
  ``generate_signing_key()``, ``InvalidToken``.
"""
