"""Every typed `web.AppKey` of the onair application, in one place.

Subsystems read what they need from the app with these keys, e.g.
``store = app[appkeys.STORE]``. Types are imported only for type checking so
this module never creates an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from control.app import AppState, BackgroundTasks, EventNotifier, Outbox
    from control.assets import AssetService
    from control.auth import ApiKeyCache
    from control.live import LiveLifecycle
    from control.live_streams import LiveControl, LiveStreamService
    from control.metrics import Registry
    from control.playback import Playback
    from control.retention import Retention
    from control.settings import Settings
    from control.store.base import Store
    from control.vod_jobs import AssetJobs
    from ingest.hub import Hub
    from ingest.rtmp.server import RtmpServer
    from realtime.hls.manager import LiveHlsManager
    from realtime.webrtc.routes import WebRtcRoutes
    from vod.blobstore import BlobStore

SETTINGS: web.AppKey[Settings] = web.AppKey("onair.settings")
STORE: web.AppKey[Store] = web.AppKey("onair.store")
"""The opened Store (SQLite or Redis); available inside cleanup_ctx after the store context."""
OUTBOX: web.AppKey[Outbox] = web.AppKey("onair.outbox")
"""`await app[OUTBOX].commit(ops, events)`: the one way to change state and emit events."""
METRICS: web.AppKey[Registry] = web.AppKey("onair.metrics")
TASKS: web.AppKey[BackgroundTasks] = web.AppKey("onair.tasks")
"""Owner of background tasks; everything spawned here is cancelled on shutdown."""
EVENTS: web.AppKey[EventNotifier] = web.AppKey("onair.event_notifier")
STATE: web.AppKey[AppState] = web.AppKey("onair.state")
WEBHOOKS: web.AppKey[Any] = web.AppKey("onair.webhooks")
"""control.webhooks.WebhookService (or None before the store is open)."""
JOBS: web.AppKey[Any] = web.AppKey("onair.jobs")
"""control.jobs runner."""
LIVE_CONTROL: web.AppKey[LiveControl] = web.AppKey("onair.live_control")
LIVE_STREAMS: web.AppKey[LiveStreamService] = web.AppKey("onair.live_streams")
API_KEYS: web.AppKey[ApiKeyCache] = web.AppKey("onair.api_key_cache")
RETENTION: web.AppKey[Retention] = web.AppKey("onair.retention")

# -- media (control.media) ----------------------------------------------------------
HUB: web.AppKey[Hub] = web.AppKey("onair.hub")
LIVE: web.AppKey[LiveLifecycle] = web.AppKey("onair.live_lifecycle")
HLS: web.AppKey[LiveHlsManager] = web.AppKey("onair.hls")
BLOBS: web.AppKey[BlobStore] = web.AppKey("onair.blobs")
ASSETS: web.AppKey[AssetService] = web.AppKey("onair.assets")
ASSET_JOBS: web.AppKey[AssetJobs] = web.AppKey("onair.asset_jobs")
PLAYBACK: web.AppKey[Playback] = web.AppKey("onair.playback")
RTMP: web.AppKey[RtmpServer] = web.AppKey("onair.rtmp")
WEBRTC: web.AppKey[WebRtcRoutes] = web.AppKey("onair.webrtc")
