"""The composition root: `create_app(settings)` builds the aiohttp application.

Resources live in ``app.cleanup_ctx`` in this order: core (metrics, task
owner, event notifier) → store (+ outbox, API key cache) → services (live
streams, webhook delivery started, job runner built) → extra subsystems passed
in by the caller (RTMP, HLS, VOD, WebRTC, rooms...) → ready (job runner
started, health turns ready). aiohttp runs them in order on startup and in
reverse on cleanup, so a subsystem may use the store and services in both its
setup and teardown, and register job handlers
(``app[appkeys.JOBS].handlers["vod.package"] = fn``) before jobs start.

Adding a subsystem::

    async def rtmp_ctx(app: web.Application) -> AsyncIterator[None]:
        server = RtmpServer(app[appkeys.SETTINGS], authority=StoreAuthority(app[appkeys.STORE]))
        await server.start()
        yield
        await server.stop()

    app = create_app(settings, subsystems=[rtmp_ctx])

Adding an API module: write ``control/api/<resource>.py`` with
``add_routes(app)`` and ``OPENAPI = {"paths": ..., "components": {"schemas": ...}}``
and add the module to ``control.api.default_modules()`` (or pass
``api_modules=[...]`` to `create_app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from aiohttp import web

from control import appkeys
from control.auth import ApiKeyCache
from control.live_streams import LiveControl, LiveStreamService, NoLiveControl
from control.metrics import Registry
from control.middleware import gate_middleware, on_response_prepare, request_middleware
from control.retention import Retention
from control.settings import Settings
from control.store.base import Event, EventDraft, Op, Store
from ingest.conn_limits import ConnectionLimits, default_max_connections

log = logging.getLogger(__name__)

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


class BackgroundTasks:
    """Owns long-running tasks; `close()` cancels and awaits every one of them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        if self.closed:
            coro.close()
            raise RuntimeError("the application is shutting down")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, grace_s: float = 5.0) -> None:
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)


class EventNotifier:
    """Wakes SSE streams and the webhook worker right after a local commit.
    Waiters also poll, which covers events committed by other nodes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, max_wait_s: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max_wait_s)

    def close(self) -> None:
        self.closed = True
        self.notify()


class Outbox:
    """`commit(ops, events)`: the state change and its events in one store
    transaction, then wake whoever delivers events (webhooks, SSE)."""

    def __init__(self, store: Store, notifier: EventNotifier) -> None:
        self.store = store
        self.notifier = notifier
        self.listeners: list[Callable[[list[Event]], None]] = []
        self.op_listeners: list[Callable[[Sequence[Op]], None]] = []
        """Called with the ops of every commit on this node, events or not."""

    async def commit(self, ops: Sequence[Op], events: Sequence[EventDraft] = ()) -> list[Event]:
        committed = await self.store.commit(ops, events)
        for op_listener in self.op_listeners:
            try:
                op_listener(ops)
            except Exception:
                log.exception("outbox op listener failed")
        if committed:
            self.notifier.notify()
            for listener in self.listeners:
                try:
                    listener(committed)
                except Exception:
                    log.exception("outbox listener failed")
        return committed


@dataclass
class AppState:
    ready: bool = False
    shutting_down: bool = False
    health_checks: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    """name → async check; GET /v1/health is 503 when one returns False."""
    queue_depths: dict[str, Callable[[], Awaitable[int]]] = field(default_factory=dict)
    """name → async depth; /v1/health and /metrics report them."""
    sse_responses: set[web.StreamResponse] = field(default_factory=set)
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


def _core_ctx(app: web.Application) -> CleanupCtx:
    async def core(app: web.Application) -> AsyncIterator[None]:
        tasks = app[appkeys.TASKS]
        yield
        app[appkeys.STATE].shutting_down = True
        app[appkeys.EVENTS].close()
        await tasks.close(grace_s=app[appkeys.SETTINGS].shutdown_timeout_s)

    return core


def _store_ctx(store: Store | None) -> CleanupCtx:
    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[appkeys.SETTINGS]
        owned = store is None
        if store is None:
            from control.store import open_store

            if not settings.redis_url:
                settings.data_path.mkdir(parents=True, exist_ok=True)
            opened = open_store(settings.redis_url, settings.data_path)
            await opened.open()
        else:
            opened = store
        app[appkeys.STORE] = opened
        outbox = Outbox(opened, app[appkeys.EVENTS])
        app[appkeys.OUTBOX] = outbox
        app[appkeys.API_KEYS] = ApiKeyCache(opened, settings.api_key_cache_s)
        app[appkeys.STATE].health_checks["store"] = lambda: opened.ping()
        try:
            yield
        finally:
            if owned:
                await opened.close()

    return store_ctx


def _services_ctx(live_control: LiveControl) -> CleanupCtx:
    async def services(app: web.Application) -> AsyncIterator[None]:
        settings = app[appkeys.SETTINGS]
        store = app[appkeys.STORE]
        outbox = app[appkeys.OUTBOX]
        state = app[appkeys.STATE]
        app[appkeys.LIVE_STREAMS] = LiveStreamService(store, settings, outbox.commit, live_control)
        webhooks = _build_webhooks(store, settings, app[appkeys.METRICS])
        app[appkeys.WEBHOOKS] = webhooks
        app[appkeys.JOBS] = _build_jobs(store, settings, app[appkeys.METRICS])
        outbox.listeners.append(lambda _events: webhooks.notify())
        state.queue_depths["webhooks"] = webhooks.backlog
        retention = Retention(store, settings, owner=f"{settings.node_id}:retention")
        app[appkeys.RETENTION] = retention
        # before any delivery goes out: stored payloads of older versions held stream keys
        await retention.scrub()
        await webhooks.start()
        retention.start()
        try:
            yield
        finally:
            state.ready = False
            state.shutting_down = True
            await retention.stop()
            await _stop(webhooks, settings.shutdown_timeout_s)

    return services


async def _ready_ctx(app: web.Application) -> AsyncIterator[None]:
    """Last context: every subsystem has registered its job handlers, so the
    job runner starts now and the node reports ready; on shutdown jobs stop
    first (they may use any subsystem)."""
    settings = app[appkeys.SETTINGS]
    store = app[appkeys.STORE]
    state = app[appkeys.STATE]
    jobs = app[appkeys.JOBS]
    state.queue_depths["jobs"] = lambda: store.queue_depth(jobs.queue)
    await jobs.start()
    state.ready = True
    try:
        yield
    finally:
        state.ready = False
        state.shutting_down = True
        await _stop(jobs, settings.shutdown_timeout_s)
        await app[appkeys.TASKS].close(grace_s=settings.shutdown_timeout_s)


async def _stop(service: Any, grace_s: float) -> None:
    """`await service.stop(timeout_s=grace_s)`, logging instead of raising."""
    try:
        await service.stop(timeout_s=grace_s)
    except Exception:
        log.exception("stopping %s failed", type(service).__name__)


def store_poll_s(settings: Settings) -> float:
    """How often the webhook and job loops look in the store for work they were
    not woken for. Every local commit wakes them at once; polling finds what
    other nodes committed. With SQLite there is only this node, so the poll is
    a safety net and need not wake an idle server five times a second."""
    return 0.5 if settings.redis_url else 2.0


def _build_webhooks(store: Store, settings: Settings, metrics: Registry) -> Any:
    from control.webhooks import RetryPolicy, WebhookService

    policy = RetryPolicy(
        base_s=settings.webhook_backoff_base_s,
        max_s=settings.webhook_backoff_max_s,
        jitter=settings.webhook_backoff_jitter,
        retry_for_s=settings.webhook_retry_for_s,
    )
    return WebhookService.from_settings(
        store, settings, policy=policy, poll_interval_s=store_poll_s(settings)
    )


def _build_jobs(store: Store, settings: Settings, metrics: Registry) -> Any:
    """The durable job runner; subsystems register handlers with
    ``app[appkeys.JOBS].handlers["vod.package"] = handler`` in their cleanup_ctx."""
    from control.jobs import DEFAULT_QUEUE, JobRunner

    return JobRunner(
        store,
        DEFAULT_QUEUE,
        {},
        owner=f"{settings.node_id}:jobs",
        poll_interval_s=store_poll_s(settings),
    )


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    live_control: LiveControl | None = None,
    subsystems: Iterable[CleanupCtx] = (),
    api_modules: Iterable[ModuleType] | None = None,
) -> web.Application:
    """Build the onair application.

    `store`: use this opened store instead of opening one from settings (tests).
    `live_control`: kicks live publishers (wired to the ingest hub); default no-op.
    `subsystems`: extra cleanup contexts, run after the store and services.
    `api_modules`: modules with `add_routes(app)` and `OPENAPI`; default
    `control.api.default_modules()`.
    """
    from control import api as api_pkg
    from control import openapi

    app = web.Application(
        middlewares=[request_middleware, gate_middleware],
        client_max_size=settings.body_limit_bytes,
        handler_args={"max_field_size": 16384},
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.METRICS] = Registry()
    app[appkeys.TASKS] = BackgroundTasks()
    app[appkeys.EVENTS] = EventNotifier()
    app[appkeys.STATE] = AppState(
        request_slots=asyncio.Semaphore(max(1, settings.max_concurrent_requests)),
        conn_limits=ConnectionLimits(total=settings.max_connections or default_max_connections()),
    )
    app[appkeys.LIVE_CONTROL] = live_control or NoLiveControl()
    app.on_response_prepare.append(on_response_prepare)
    app.on_shutdown.append(_on_shutdown)

    app.cleanup_ctx.append(_core_ctx(app))
    app.cleanup_ctx.append(_store_ctx(store))
    app.cleanup_ctx.append(_services_ctx(app[appkeys.LIVE_CONTROL]))
    for ctx in subsystems:
        app.cleanup_ctx.append(ctx)
    app.cleanup_ctx.append(_ready_ctx)

    modules = list(api_pkg.default_modules() if api_modules is None else api_modules)
    for module in modules:
        module.add_routes(app)
    openapi.add_routes(app, modules)
    return app


async def _on_shutdown(app: web.Application) -> None:
    """Stop accepting long-lived work: end SSE streams so in-flight requests finish."""
    state = app[appkeys.STATE]
    state.shutting_down = True
    state.ready = False
    app[appkeys.EVENTS].close()


STATIC_DIR = Path(__file__).parent / "static"


def service_app(settings: Settings) -> web.Application:
    """The whole service as `onair serve` runs it: the control plane plus the
    media subsystems (RTMP ingest, LL-HLS, recording, VOD, playback, pages)."""
    from control import playback
    from control.api import rooms
    from control.media import (
        LazyAuthority,
        MediaKick,
        media_ctx,
        playback_resolver,
        webrtc_config,
    )
    from ingest.hub import Hub
    from realtime.pages import add_page_routes
    from realtime.rooms.rtc import RtcSettings
    from realtime.webrtc.routes import add_webrtc_routes

    hub = Hub()
    rtc = webrtc_config(settings)
    modules = service_api_modules()
    app = create_app(
        settings,
        live_control=MediaKick(),
        subsystems=[media_ctx, rooms.rooms_ctx(hub=hub, rtc=RtcSettings(rtc))],
        api_modules=modules,
    )
    app[appkeys.HUB] = hub
    playback.add_routes(app)
    add_page_routes(app)
    app[appkeys.WEBRTC] = add_webrtc_routes(
        app,
        hub=hub,
        authority=LazyAuthority(app),
        resolve_playback=playback_resolver(app),
        config=rtc,
    )
    return app


def service_api_modules() -> list[ModuleType]:
    """The API modules of the whole service (control plane, assets, rooms, WebRTC)."""
    from control import api as api_pkg
    from control.api import assets, rooms, webrtc

    return [*api_pkg.default_modules(), assets, rooms, webrtc]
