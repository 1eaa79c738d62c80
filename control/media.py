"""The media side of the service, composed: hub, ingest, LL-HLS, recording, VOD.

`media_ctx` is the cleanup context `service_app` adds after the store and
services: it opens the BlobStore and the VOD process pool, builds the hub with
the `LiveLifecycle` as its observer, the LL-HLS manager, the asset service
and jobs, the playback routes' backend and the RTMP listener, and closes them
in reverse. `MediaKick` is the `LiveControl` handed to `create_app` before any
of that exists; it forwards to the lifecycle once it does.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, cast

from aiohttp import web

from control import appkeys
from control.assets import AssetService
from control.live import LiveLifecycle
from control.playback import Playback
from control.reconciler import Reconciler
from control.room_broadcasts import ROOM_BROADCASTS, HubDispatch, RoomBroadcasts
from control.settings import Settings
from control.store.base import Op
from control.vod_jobs import MP4, AssetJobs
from ingest.ports import PublishGrant
from ingest.rtmp.server import RtmpLimits, RtmpServer
from ingest.webrtc.config import WebRtcConfig
from realtime.hls.manager import LiveHlsManager
from vod.blobstore import make_blobstore
from vod.jobs import VodContext, make_process_pool
from vod.manifest import Manifest

log = logging.getLogger(__name__)


class LazyAuthority:
    """The `PublishAuthority` for routes mounted before startup (WHIP): the
    lifecycle that answers is built in `media_ctx`."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def authorize_publish(
        self, stream_key: str, *, protocol: str, remote: str
    ) -> PublishGrant:
        return await self._app[appkeys.LIVE].authorize_publish(
            stream_key, protocol=protocol, remote=remote
        )


def playback_resolver(app: web.Application) -> Callable[[str, str | None], Awaitable[str]]:
    """WHEP's `resolve_playback(playback_id, token)` → live stream id."""

    async def resolve(playback_id: str, token: str | None) -> str:
        return await app[appkeys.PLAYBACK].resolve_live(playback_id, token)

    return resolve


def webrtc_config(settings: Settings) -> WebRtcConfig:
    loopback = settings.webrtc_loopback
    if loopback is None:
        loopback = settings.host in ("127.0.0.1", "localhost", "::1")
    env = {
        "ONAIR_WEBRTC_PUBLIC_IP": settings.webrtc_public_ip or "",
        "ONAIR_WEBRTC_HOSTS": settings.webrtc_hosts,
        "ONAIR_WEBRTC_INTERFACES": settings.webrtc_interfaces,
        "ONAIR_WEBRTC_UDP_PORTS": settings.webrtc_udp_ports,
        "ONAIR_WEBRTC_ICE_SERVERS": settings.webrtc_ice_servers,
        "ONAIR_WEBRTC_LOOPBACK": "1" if loopback else "",
        "ONAIR_WEBRTC_CONNECT_TIMEOUT_S": str(settings.webrtc_connect_timeout_s),
        "ONAIR_WEBRTC_MAX_SESSIONS": str(settings.webrtc_max_sessions),
        "ONAIR_WEBRTC_MAX_SESSIONS_PER_STREAM": str(settings.webrtc_max_sessions_per_stream),
        "ONAIR_WEBRTC_MAX_SESSIONS_PER_IP": str(settings.webrtc_max_sessions_per_ip),
        "ONAIR_WEBRTC_TURN_URLS": settings.webrtc_turn_urls,
        "ONAIR_WEBRTC_TURN_SECRET": settings.webrtc_turn_secret or "",
        "ONAIR_WEBRTC_TURN_TTL_S": str(settings.webrtc_turn_ttl_s),
    }
    if settings.webrtc_allow_private_candidates is not None:
        env["ONAIR_WEBRTC_ALLOW_PRIVATE_CANDIDATES"] = (
            "1" if settings.webrtc_allow_private_candidates else "0"
        )
    return WebRtcConfig.from_env(env)


def rtmps_context(settings: Settings) -> ssl.SSLContext | None:
    """The server side of RTMPS, from ONAIR_TLS_CERT_FILE / ONAIR_TLS_KEY_FILE."""
    if not settings.rtmps_enabled:
        return None
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


class MediaKick:
    """`LiveControl` for the API: kicks through the lifecycle once media is up."""

    def __init__(self) -> None:
        self.lifecycle: LiveLifecycle | None = None

    def kick(self, live_stream_id: str, reason: str) -> None:
        if self.lifecycle is not None:
            self.lifecycle.kick(live_stream_id, reason)


async def media_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    store = app[appkeys.STORE]
    outbox = app[appkeys.OUTBOX]
    tasks = app[appkeys.TASKS]

    blobs = make_blobstore(
        data_dir=settings.data_path,
        s3_endpoint=settings.s3_endpoint,
        s3_bucket=settings.s3_bucket,
        s3_region=settings.s3_region,
        s3_access_key=settings.s3_access_key,
        s3_secret_key=settings.s3_secret_key,
        create_bucket=settings.s3_create_bucket,
    )
    pool = make_process_pool(max_workers=settings.media_workers)
    vod = VodContext(blobs, pool, str(settings.data_path / "tmp"))
    assets = AssetService(store, outbox.commit)
    asset_jobs = AssetJobs(store, assets, vod, app[appkeys.JOBS])
    asset_jobs.register()

    hub = app[appkeys.HUB]
    hls = LiveHlsManager(hub)

    def ready_jobs(asset_id: str) -> Sequence[Op]:
        return [asset_jobs.op(MP4, {"asset_id": asset_id})]

    lifecycle = LiveLifecycle(
        hub,
        store=store,
        live_streams=app[appkeys.LIVE_STREAMS],
        assets=assets,
        hls=hls,
        blobs=blobs,
        node_id=settings.node_id,
        spawn=lambda coro: tasks.spawn(cast(Coroutine[Any, Any, Any], coro)),
        ready_jobs=ready_jobs,
        jobs_queued=asset_jobs.notify,
        final_retry_s=settings.recording_final_retry_s,
    )
    rooms = RoomBroadcasts(
        store=store,
        assets=assets,
        hls=hls,
        blobs=blobs,
        spawn=lambda coro: tasks.spawn(cast(Coroutine[Any, Any, Any], coro)),
        ready_jobs=ready_jobs,
        jobs_queued=asset_jobs.notify,
    )
    hub.observer = HubDispatch(lifecycle, rooms)
    app[ROOM_BROADCASTS] = rooms
    live_sinks = hls.sink_factory
    hls.sink_factory = lambda sid: (
        rooms.sinks_for(sid) if rooms.owns(sid) else live_sinks(sid) if live_sinks else ()
    )

    def live_manifest(asset_id: str) -> Manifest | None:
        return lifecycle.recording_manifest(asset_id) or rooms.recording_manifest(asset_id)

    playback = Playback(
        store=store,
        blobs=blobs,
        hls=hls,
        vod=vod,
        live_manifest=live_manifest,
        presign_s=settings.s3_presign_s,
        max_token_ttl_s=settings.playback_token_max_ttl_s,
        thumbnail_concurrency=settings.thumbnail_concurrency,
    )
    app[appkeys.BLOBS] = blobs
    app[appkeys.ASSETS] = assets
    app[appkeys.ASSET_JOBS] = asset_jobs
    app[appkeys.LIVE] = lifecycle
    app[appkeys.HLS] = hls
    app[appkeys.PLAYBACK] = playback
    # a deleted live stream, room, asset, playback id or signing key stops edge
    # playback on this node at once (other nodes: within EDGE_CACHE_S)
    app[appkeys.OUTBOX].op_listeners.append(playback.forget_grants_after)
    kick = app[appkeys.LIVE_CONTROL]
    if isinstance(kick, MediaKick):
        kick.lifecycle = lifecycle

    rtmp = RtmpServer(
        hub,
        lifecycle,
        host=settings.host,
        port=settings.rtmp_port,
        limits=RtmpLimits(
            read_coalesce=settings.rtmp_read_coalesce_s,
            max_connections_per_client=settings.rtmp_max_connections_per_ip,
        ),
        conn_limits=app[appkeys.STATE].conn_limits,
        tls=rtmps_context(settings),
        tls_port=settings.rtmps_port if settings.rtmps_enabled else None,
    )
    app[appkeys.RTMP] = rtmp
    reconciler = Reconciler(
        store,
        settings,
        assets=assets,
        jobs=asset_jobs,
        blobs=blobs,
        owner=f"{settings.node_id}:reconciler",
    )
    await lifecycle.start()
    await rtmp.start()
    reconciler.start()
    log.info("rtmp listening", extra={"port": rtmp.port})
    try:
        yield
    finally:
        await reconciler.stop()
        await rtmp.stop()
        await rooms.close()
        await lifecycle.stop()
        with contextlib.suppress(Exception):
            await blobs.close()
        pool.shutdown(wait=False, cancel_futures=True)
