"""One onair node, built in one place: `build_node(settings) -> Node`.

`build_node` constructs every service of the node once, in dependency order,
each given what it needs as constructor arguments (the way mediamtx's
``core.createResources`` builds its servers)::

    store → outbox, event bus → API keys, live streams, webhooks, jobs, retention
          → [media] blob store, VOD pool, assets + asset jobs
          → LL-HLS manager → live lifecycle, room broadcasts
          → hub (observed by both, through HubDispatch)
          → live stream admin (kicks through the lifecycle)
          → playback, RTMP server, reconciler, WHIP/WHEP, rooms

Construction does no I/O. `Node.start()` opens and starts them in that order
(an `AsyncExitStack`); `Node.stop()` stops them in reverse. A node without
media (`media=False`) is the control plane alone: the API contract tests run
it with a `live_control` that records kicks.

The HTTP side is `control.http.make_http_app(node)`; `onair serve`
(`control.cli`) builds one node, one HTTP app over it, and the playback edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, cast

from control.analytics.tracker import ViewTracker
from control.domain.api_keys import API_KEY_RECORDS, ApiKeyCache
from control.domain.assets import AssetService
from control.domain.live_streams import (
    LiveControl,
    LiveStreamAdmin,
    LiveStreamService,
    NoLiveControl,
)
from control.domain.uploads import Clips, Uploads
from control.domain.webhook_endpoints import WebhookEndpoints
from control.eventbus import API_KEYS, EVENTS, GRANTS, KICK, BusTransport, EventBus
from control.jobs import DEFAULT_QUEUE, JobRunner
from control.live import KICK_REASONS, LiveLifecycle
from control.local_bus import UnixBus, bus_dir
from control.metrics import Registry
from control.outbox import EventNotifier, Outbox
from control.playback import Playback
from control.reconciler import Reconciler
from control.registry import Load, NodeRegistry, node_url
from control.relay import LiveRelay
from control.retention import Retention
from control.room_broadcasts import HubDispatch, RoomBroadcasts
from control.rooms import RoomKeeper, Rooms, StoreRooms
from control.settings import Settings
from control.siblings import Siblings
from control.store import prepare_data_dir, store_for
from control.store.base import Enqueue, Op, Store
from control.store.sqlite import SqliteStore
from control.tasks import BackgroundTasks
from control.timeline import timeline_ops
from control.vod_jobs import MP4, AssetJobs
from control.webhooks import RetryPolicy, WebhookService, new_webhook_secret
from control.webhooks.destination import check_url
from ingest.conn_limits import ConnectionLimits, default_max_connections
from ingest.hub import Hub
from ingest.rtmp.server import RtmpLimits, RtmpServer
from ingest.srt.libsrt import available as srt_available
from ingest.srt.server import SrtLimits, SrtServer
from ingest.webrtc.config import WebRtcConfig
from ingest.whip.session import WhipService
from realtime.hls.disk_window import DiskWindows
from realtime.hls.manager import LiveHlsManager
from realtime.rooms.rtc import RtcSettings
from realtime.rooms.service import RoomService
from realtime.rooms.tokens import JoinTokens
from realtime.webrtc.routes import WebRtcRoutes
from realtime.whep.session import WhepService
from vod.blobstore import BlobStore, make_blobstore
from vod.jobs import VodContext, make_process_pool
from vod.manifest import Manifest

log = logging.getLogger(__name__)

DRAIN_CHECK_S = 0.5

Extra = Callable[["Node"], AbstractAsyncContextManager[None]]
"""A part added to a node from outside (tests): entered after the services and
media, before the job runner starts and the node reports ready."""


@dataclass
class NodeState:
    """What the node says about itself (health, readiness) and the caps it
    enforces on every listener."""

    ready: bool = False
    shutting_down: bool = False
    draining: bool = False
    """Taking no new publishers or rooms, and leaving once empty (`onair drain`)."""
    health_checks: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    """name → async check; GET /v1/health is 503 when one returns False."""
    queue_depths: dict[str, Callable[[], Awaitable[int]]] = field(default_factory=dict)
    """name → async depth; /v1/health and /metrics report them."""
    request_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(48))
    """Bounds API requests in flight per node (settings.max_concurrent_requests)."""
    conn_limits: ConnectionLimits = field(
        default_factory=lambda: ConnectionLimits(total=default_max_connections())
    )
    """Caps on accepted sockets, shared by the HTTP and RTMP listeners."""
    health_snapshot: tuple[float, dict[str, Any], int] | None = None
    """(monotonic time, body, status) of the last health check round."""
    health_refresh: asyncio.Future[tuple[float, dict[str, Any], int]] | None = None
    """The round in progress, which concurrent health requests share."""


@dataclass
class Media:
    """The media half of a node: ingest, LL-HLS, recording, VOD, WebRTC, rooms."""

    blobs: BlobStore
    pool: Executor
    """The VOD process pool (MP4s, thumbnails, uploads, clips)."""
    vod: VodContext
    assets: AssetService
    asset_jobs: AssetJobs
    hls: LiveHlsManager
    lifecycle: LiveLifecycle
    room_broadcasts: RoomBroadcasts
    hub: Hub
    playback: Playback
    rtmp: RtmpServer
    reconciler: Reconciler
    webrtc: WebRtcRoutes
    rooms: Rooms
    uploads: Uploads
    clips: Clips
    relay: LiveRelay
    """Live playback of streams another node ingests (origin-edge)."""
    views: ViewTracker
    """The views this node's playback answers and beacons make."""
    siblings: Siblings | None = None
    """The other workers of this machine (None: this process is not a worker)."""
    srt: SrtServer | None = None
    """The SRT listener (None: SRT is off, or another worker of this machine has it)."""


def srt_server(settings: Settings, hub: Hub, lifecycle: LiveLifecycle) -> SrtServer | None:
    """The SRT listener when SRT is on and libsrt is here. One per machine: SRT
    is UDP, where SO_REUSEPORT would scatter a caller's packets, so only the
    first worker listens."""
    if settings.srt_port is None or (settings.worker_index or 0) != 0:
        return None
    if not srt_available():
        log.warning("SRT ingest is off: libsrt 1.5 is not installed (libsrt1.5-gnutls)")
        return None
    return SrtServer(
        hub,
        lifecycle,
        host=settings.host,
        port=settings.srt_port,
        limits=SrtLimits(latency_ms=settings.srt_latency_ms, passphrase=settings.srt_passphrase),
    )


class Node:
    """Every service of one node; see the module docstring. Built by `build_node`."""

    def __init__(
        self,
        *,
        settings: Settings,
        metrics: Registry,
        tasks: BackgroundTasks,
        notifier: EventNotifier,
        state: NodeState,
        store: Store,
        owns_store: bool,
        outbox: Outbox,
        bus: EventBus,
        api_keys: ApiKeyCache,
        live_streams: LiveStreamService,
        live_admin: LiveStreamAdmin,
        webhooks: WebhookService,
        webhook_endpoints: WebhookEndpoints,
        jobs: JobRunner,
        retention: Retention,
        registry: NodeRegistry,
        media: Media | None,
        extras: Sequence[Extra] = (),
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tasks = tasks
        self.notifier = notifier
        self.state = state
        self.store = store
        self.owns_store = owns_store
        self.outbox = outbox
        self.bus = bus
        self.api_keys = api_keys
        self.live_streams = live_streams
        self.live_admin = live_admin
        self.webhooks = webhooks
        self.webhook_endpoints = webhook_endpoints
        self.jobs = jobs
        self.retention = retention
        self.registry = registry
        self.media = media
        self.extras = tuple(extras)
        self._stack: AsyncExitStack | None = None
        self._shutdown_begun = False
        self.exit_requested = asyncio.Event()
        """Set when the node wants its process to exit (it drained)."""

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Open and start every part in dependency order; on failure, what
        started is stopped again."""
        if self._stack is not None:
            raise RuntimeError("node already started")
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self._close_core)
            await self._open_store(stack)
            await self._start_bus(stack)
            await self._start_services(stack)
            if self.media is not None:
                await self._start_media(stack, self.media)
            for extra in self.extras:
                await stack.enter_async_context(extra(self))
            await self._start_jobs(stack)
            await self.registry.start()
            stack.push_async_callback(self.registry.stop)
            drain = asyncio.get_running_loop().create_task(self._drain_when_asked(), name="drain")
            stack.push_async_callback(_cancel, drain)
            self._stack = stack.pop_all()

    async def begin_shutdown(self) -> None:
        """The first step of a graceful stop, while requests may still be in
        flight: not ready, SSE streams end, rooms finish (their signaling sockets
        close), WebRTC sessions close."""
        if self._shutdown_begun:
            return
        self._shutdown_begun = True
        self.state.shutting_down = True
        self.state.ready = False
        self.notifier.close()
        if self.media is not None:
            await self.media.rooms.close_all()
            await self.media.webrtc.close()

    async def _drain_when_asked(self) -> None:
        """Once a drain is asked for: no new publishers or rooms, and ask for the
        process to exit when nothing is left here or the deadline passes."""
        await self.registry.drain_asked.wait()
        self.state.draining = True
        media = self.media
        if media is not None:
            media.lifecycle.accepting = False
            media.rooms.service.accepting_rooms = False
        while not self.empty():
            left = self.registry.drain_deadline - time.monotonic()
            if left <= 0:
                break  # what is still here is handed over by the graceful stop
            await asyncio.sleep(min(DRAIN_CHECK_S, left))
        if media is not None and media.rooms.service.rooms:
            # rooms still here move when another node can take them
            moved = await media.rooms.release_all()
            log.info("node %s handed %d room(s) on", self.settings.node_id, moved)
        log.info("node %s drained: exiting", self.settings.node_id)
        self.exit_requested.set()

    def empty(self) -> bool:
        """Nothing here that leaving would interrupt: no publisher, room or
        WebRTC session."""
        media = self.media
        if media is None:
            return True
        return (
            not any(s.live for s in media.hub.streams)
            and not media.rooms.service.rooms
            and not media.webrtc.whip.sessions
            and not media.webrtc.whep.sessions
        )

    async def stop(self) -> None:
        """Stop every part in the reverse order of `start`."""
        await self.begin_shutdown()
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    # -- the steps of start() ------------------------------------------------------

    async def _close_core(self) -> None:
        self.state.shutting_down = True
        self.notifier.close()
        await self.tasks.close(grace_s=self.settings.shutdown_timeout_s)

    async def _open_store(self, stack: AsyncExitStack) -> None:
        if not self.owns_store:
            return
        await prepare_data_dir(self.settings)
        await self.store.open()
        stack.push_async_callback(self.store.close)

    async def _start_bus(self, stack: AsyncExitStack) -> None:
        await self.bus.start()
        stack.push_async_callback(self.bus.stop)

    async def _start_services(self, stack: AsyncExitStack) -> None:
        grace = self.settings.shutdown_timeout_s

        async def stop_services() -> None:
            self.state.ready = False
            self.state.shutting_down = True
            await self.retention.stop()
            await _stop(self.webhooks, grace)

        # before any delivery goes out: stored payloads of older versions held stream keys
        await self.retention.scrub()
        await self.webhooks.start()
        stack.push_async_callback(stop_services)
        self.retention.start()

    async def _start_media(self, stack: AsyncExitStack, media: Media) -> None:
        async def close_storage() -> None:
            with contextlib.suppress(Exception):
                await media.blobs.close()
            media.pool.shutdown(wait=False, cancel_futures=True)

        stack.push_async_callback(close_storage)
        await media.lifecycle.start()
        stack.push_async_callback(media.lifecycle.stop)
        stack.push_async_callback(media.room_broadcasts.close)
        await media.rtmp.start()
        stack.push_async_callback(media.rtmp.stop)
        log.info("rtmp listening", extra={"port": media.rtmp.port})
        if media.srt is not None:
            await media.srt.start()
            stack.push_async_callback(media.srt.close)
        media.reconciler.start()
        stack.push_async_callback(media.reconciler.stop)
        await media.rooms.start()
        stack.push_async_callback(media.rooms.stop)
        await media.relay.start()
        stack.push_async_callback(media.relay.stop)
        media.views.start()
        stack.push_async_callback(media.views.stop)
        if media.siblings is not None:
            stack.push_async_callback(media.siblings.stop)

    async def _start_jobs(self, stack: AsyncExitStack) -> None:
        """Last: every part has registered its job handlers, so the runner starts
        now and the node reports ready; on stop, jobs stop first (they may use
        any part)."""

        async def stop_jobs() -> None:
            self.state.ready = False
            self.state.shutting_down = True
            await _stop(self.jobs, self.settings.shutdown_timeout_s)
            await self.tasks.close(grace_s=self.settings.shutdown_timeout_s)

        await self.jobs.start()
        stack.push_async_callback(stop_jobs)
        self.state.ready = True

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Node]:
        """``async with node.running():`` start, and stop on the way out."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop(service: Any, grace_s: float) -> None:
    """`await service.stop(timeout_s=grace_s)`, logging instead of raising."""
    try:
        await service.stop(timeout_s=grace_s)
    except Exception:
        log.exception("stopping %s failed", type(service).__name__)


def store_poll_s(settings: Settings) -> float:
    """How often the webhook and job loops look in the store for work they were
    not woken for. Every local commit wakes them at once; polling finds what
    other nodes committed. With SQLite the other nodes are this machine's
    workers, whose commits wake this one through the local bus, so the poll is
    a safety net and need not wake an idle server five times a second."""
    return 0.5 if settings.shared_store else 2.0


def build_node(
    settings: Settings,
    *,
    store: Store | None = None,
    media: bool = True,
    live_control: LiveControl | None = None,
    extras: Iterable[Extra] = (),
) -> Node:
    """Construct a node (no I/O). `store`: an opened store to use instead of
    the configured one (not closed by the node). `media=False`: the control
    plane alone, kicking live publishers through `live_control`."""
    metrics = Registry()
    tasks = BackgroundTasks()
    notifier = EventNotifier()
    state = NodeState(
        request_slots=asyncio.Semaphore(max(1, settings.max_concurrent_requests)),
        conn_limits=ConnectionLimits(total=settings.max_connections or default_max_connections()),
    )
    owns_store = store is None
    the_store = store if store is not None else store_for(settings)
    state.health_checks["store"] = lambda: the_store.ping()
    outbox = Outbox(the_store, notifier)
    outbox.stampers.append(timeline_ops)
    api_keys = ApiKeyCache(the_store, settings.api_key_cache_s)
    live_streams = LiveStreamService(the_store, settings, outbox)
    webhooks = WebhookService.from_settings(
        the_store,
        settings,
        outbox=outbox,
        policy=RetryPolicy(
            base_s=settings.webhook_backoff_base_s,
            max_s=settings.webhook_backoff_max_s,
            jitter=settings.webhook_backoff_jitter,
            retry_for_s=settings.webhook_retry_for_s,
        ),
        poll_interval_s=store_poll_s(settings),
    )
    outbox.listeners.append(lambda _events: webhooks.notify())
    bus = EventBus(settings.node_id, _bus_transport(the_store, settings))
    # what this node commits wakes the others at once; what they commit wakes it
    outbox.listeners.append(lambda _events: bus.publish(EVENTS))
    bus.on(EVENTS, notifier.notify)
    bus.on(EVENTS, webhooks.notify)

    def revoke_api_keys(ops: Sequence[Op]) -> None:
        if any(not isinstance(op, Enqueue) and op.collection == API_KEY_RECORDS.name for op in ops):
            bus.publish(API_KEYS)

    outbox.op_listeners.append(revoke_api_keys)
    bus.on(API_KEYS, api_keys.clear)
    state.queue_depths["webhooks"] = webhooks.backlog
    jobs = JobRunner(
        the_store,
        DEFAULT_QUEUE,
        {},
        owner=f"{settings.node_id}:jobs",
        poll_interval_s=store_poll_s(settings),
    )
    state.queue_depths["jobs"] = lambda: the_store.queue_depth(jobs.queue)
    retention = Retention(the_store, outbox, settings, owner=f"{settings.node_id}:retention")
    media_part = (
        _build_media(settings, the_store, outbox, bus, live_streams, jobs, tasks, state, metrics)
        if media
        else None
    )
    kick: LiveControl = (
        KickEverywhere(media_part.lifecycle, bus)
        if media_part is not None
        else live_control or NoLiveControl()
    )
    registry = NodeRegistry(
        the_store,
        node_id=settings.node_id,
        url=settings.node_address,
        public_url=settings.base_url,
        load=lambda cpu: _load(cpu, media_part, state),
    )
    return Node(
        settings=settings,
        metrics=metrics,
        tasks=tasks,
        notifier=notifier,
        state=state,
        store=the_store,
        owns_store=owns_store,
        outbox=outbox,
        bus=bus,
        api_keys=api_keys,
        live_streams=live_streams,
        live_admin=LiveStreamAdmin(live_streams, kick),
        webhooks=webhooks,
        webhook_endpoints=WebhookEndpoints(
            outbox,
            new_secret=new_webhook_secret,
            check_destination=None if settings.webhook_allow_private else check_url,
        ),
        jobs=jobs,
        retention=retention,
        registry=registry,
        media=media_part,
        extras=list(extras),
    )


class KickEverywhere:
    """`LiveControl` for a node among others: the publisher is dropped here if
    this node holds it, and the others are told at once through the bus (the
    API request may have reached any node; the one holding the publisher also
    sees the change in the store within a heartbeat)."""

    def __init__(self, lifecycle: LiveLifecycle, bus: EventBus) -> None:
        self.lifecycle = lifecycle
        self.bus = bus
        bus.on_argument(KICK, self._heard)

    def kick(self, live_stream_id: str, reason: str, /) -> object:
        self.lifecycle.kick(live_stream_id, reason)
        self.bus.publish(f"{KICK}:{live_stream_id}:{reason}")
        return None

    def _heard(self, argument: str) -> None:
        live_stream_id, _, reason = argument.partition(":")
        if reason in KICK_REASONS and live_stream_id:
            self.lifecycle.kick(live_stream_id, reason)


def _bus_transport(store: Store, settings: Settings) -> BusTransport | None:
    """Redis pub/sub on Redis; on SQLite, datagrams between the processes that
    share the database file (the workers of one machine)."""
    if isinstance(store, BusTransport):
        return store
    if isinstance(store, SqliteStore) and store.path != ":memory:":
        return UnixBus(bus_dir(store.path), settings.node_id)
    return None


def _load(cpu: float, media: Media | None, state: NodeState) -> Load:
    if media is None:
        return Load(cpu=cpu, streams=0, viewers=0, rooms=0)
    rtmp_connections = media.rtmp.connection_count
    return Load(
        cpu=cpu,
        streams=sum(1 for s in media.hub.streams if s.live),
        viewers=len(media.webrtc.whep.sessions) + max(0, len(state.conn_limits) - rtmp_connections),
        rooms=len(media.rooms.service.rooms),
    )


def _build_media(
    settings: Settings,
    store: Store,
    outbox: Outbox,
    bus: EventBus,
    live_streams: LiveStreamService,
    jobs: JobRunner,
    tasks: BackgroundTasks,
    state: NodeState,
    metrics: Registry,
) -> Media:
    def spawn(coro: Awaitable[Any]) -> Any:
        return tasks.spawn(cast(Coroutine[Any, Any, Any], coro))

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
    assets = AssetService(store, outbox)
    asset_jobs = AssetJobs(store, assets, vod, jobs)
    asset_jobs.register()

    def ready_jobs(asset_id: str) -> Sequence[Op]:
        return [asset_jobs.op(MP4, {"asset_id": asset_id})]

    hls = LiveHlsManager()
    lifecycle = LiveLifecycle(
        store=store,
        live_streams=live_streams,
        assets=assets,
        hls=hls,
        blobs=blobs,
        node_id=settings.node_id,
        spawn=spawn,
        ready_jobs=ready_jobs,
        jobs_queued=asset_jobs.notify,
        final_retry_s=settings.recording_final_retry_s,
        windows=DiskWindows(settings.data_path / "live-cache"),
    )
    room_broadcasts = RoomBroadcasts(
        store=store,
        outbox=outbox,
        assets=assets,
        hls=hls,
        blobs=blobs,
        spawn=spawn,
        ready_jobs=ready_jobs,
        jobs_queued=asset_jobs.notify,
    )
    hub = Hub(HubDispatch(lifecycle, room_broadcasts))

    def live_manifest(asset_id: str) -> Manifest | None:
        return lifecycle.recording_manifest(asset_id) or room_broadcasts.recording_manifest(
            asset_id
        )

    relay = LiveRelay(store, node_id=settings.node_id, node_url=lambda node: node_url(store, node))
    playback = Playback(
        store=store,
        blobs=blobs,
        hls=hls,
        vod=vod,
        live_manifest=live_manifest,
        presign_s=settings.s3_presign_s,
        max_token_ttl_s=settings.playback_token_max_ttl_s,
        thumbnail_concurrency=settings.thumbnail_concurrency,
        relay=relay,
    )
    # a deleted live stream, room, asset, playback id or signing key stops edge
    # playback at once, on this node and (through the bus) on every other

    def revoke_grants(ops: Sequence[Op]) -> None:
        if Playback.may_revoke(ops):
            playback.forget_grants()
            bus.publish(GRANTS)

    outbox.op_listeners.append(revoke_grants)
    bus.on(GRANTS, playback.forget_grants)
    rtmp = RtmpServer(
        hub,
        lifecycle,
        host=settings.host,
        port=settings.rtmp_port,
        limits=RtmpLimits(
            read_coalesce=settings.rtmp_read_coalesce_s,
            max_connections_per_client=settings.rtmp_max_connections_per_ip,
        ),
        conn_limits=state.conn_limits,
        tls=rtmps_context(settings),
        tls_port=settings.rtmps_port if settings.rtmps_enabled else None,
        reuse_port=settings.worker_index is not None,
    )
    reconciler = Reconciler(
        store,
        settings,
        assets=assets,
        jobs=asset_jobs,
        blobs=blobs,
        owner=f"{settings.node_id}:reconciler",
    )
    siblings = (
        Siblings(
            store,
            node_id=settings.node_id,
            public_url=settings.base_url,
            private_url=settings.node_url,
        )
        if settings.worker_index is not None
        else None
    )
    rtc = webrtc_config(settings)
    whip = WhipService(hub, lifecycle, rtc)
    whep = WhepService(
        hub,
        rtc,
        playback.resolve_live,
        keyframe_request=whip.request_keyframe,
        locate=relay.origin_url,
    )
    directory = StoreRooms(store, outbox)
    room_service = RoomService(
        JoinTokens(None), directory, directory, hub=hub, rtc=RtcSettings(rtc)
    )
    rooms = Rooms(
        store,
        room_service,
        directory,
        RoomKeeper(store, room_service, directory, settings.node_id, room_broadcasts),
        node_id=settings.node_id,
    )
    return Media(
        blobs=blobs,
        pool=pool,
        vod=vod,
        assets=assets,
        asset_jobs=asset_jobs,
        hls=hls,
        lifecycle=lifecycle,
        room_broadcasts=room_broadcasts,
        hub=hub,
        playback=playback,
        rtmp=rtmp,
        srt=srt_server(settings, hub, lifecycle),
        reconciler=reconciler,
        webrtc=WebRtcRoutes(whip, whep, siblings),
        rooms=rooms,
        uploads=Uploads(outbox, assets, asset_jobs, blobs, settings),
        clips=Clips(assets, asset_jobs, settings),
        relay=relay,
        views=ViewTracker(
            store,
            node_id=settings.node_id,
            outbox=outbox,
            metrics=metrics,
            idle_s=settings.view_idle_s,
            read_cmcd=settings.cmcd,
            flush_s=settings.view_flush_s,
            max_views=settings.max_views,
        ),
        siblings=siblings,
    )


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
