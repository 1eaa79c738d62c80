"""Service settings: one frozen dataclass, loaded from ``ONAIR_*`` environment
variables and an optional ``onair.toml``.

Precedence: environment > TOML file > defaults. In the TOML file the names are
the field names (the environment names lowercased without ``ONAIR_``). The file
is ``$ONAIR_CONFIG`` when set, otherwise ``./onair.toml`` when it exists.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "ONAIR_"


class SettingsError(ValueError):
    """A setting has a value of the wrong type or out of range."""


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Settings:
    # --- fixed names (API.md "Running") ---
    data_dir: str = "./data"
    host: str = "0.0.0.0"
    http_port: int = 8080
    rtmp_port: int = 1935
    rtmp_read_coalesce_s: float = 0.1
    """While an RTMP publisher streams, wake for its bytes about this often
    (SO_RCVLOWAT): CPU per stream against added latency; 0 reads every packet."""
    public_url: str | None = None
    redis_url: str | None = None
    redis_sentinels: str | None = None
    """``host:port,host:port...`` of Redis Sentinels: the store follows their
    master (`redis_sentinel_master`) through a failover."""
    redis_sentinel_master: str = "mymaster"
    redis_replicas_acked: int | None = None
    """Replicas that must hold a write before it counts (Redis ``WAIT``):
    default 1 with Sentinel (a failover loses no acknowledged write), else 0."""
    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_region: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    # --- HTTP hardening ---
    body_limit_bytes: int = 1024 * 1024
    """Largest JSON request body accepted (413 above)."""
    rate_limit_per_s: float = 100.0
    """Token refill rate per API key."""
    rate_limit_burst: int = 200
    """Bucket size per API key."""
    idempotency_ttl_s: float = 24 * 3600.0
    api_key_cache_s: float = 1.0
    """How long a node trusts a validated API key before asking the store again
    (a revoke on another node takes effect within this time)."""
    max_concurrent_requests: int = 48
    """API requests handled at once per node; more wait their turn (back-pressure)."""
    shutdown_timeout_s: float = 10.0
    """How long graceful shutdown waits for in-flight requests and webhook attempts."""
    log_level: str = "info"
    log_json: bool = True
    access_log: bool = True
    access_log_playback: bool = False
    """Also log every /play/ request (LL-HLS viewers make five a second each)."""
    # --- webhooks ---
    webhook_backoff_base_s: float = 5.0
    """First retry delay; doubles per attempt (with jitter) up to the max."""
    webhook_backoff_max_s: float = 3600.0
    webhook_backoff_jitter: float = 1.0
    """1 = full jitter (uniform in (0, cap]); 0 = the exact exponential schedule."""
    webhook_retry_for_s: float = 3 * 24 * 3600.0
    """Keep retrying a delivery for this long (≥ 24 h)."""
    webhook_timeout_s: float = 10.0
    webhook_concurrency: int = 64
    webhook_allow_private: bool = False
    """Deliver to endpoints on loopback, private, link-local and other non-public
    addresses (on-premises receivers, tests). Off: refused at creation and at
    every attempt, on the address actually connected to."""
    recording_final_retry_s: float = 120.0
    """How long the end of a recording retries its final manifest on failing
    storage before the asset is `errored` (never `ready` without it)."""
    reconcile_after_s: float = 900.0
    """A multi-step flow (upload, clip, a broadcast's end, an MP4) that has not
    moved for this long is repaired by the reconciler."""
    reconcile_every_s: float = 60.0
    # --- connections ---
    max_connections: int = 0
    """Client connections (HTTP + RTMP) a node holds before it sheds new ones with
    503; 0: 80 % of the descriptor limit (raised to the hard limit at start)."""
    http_max_connections_per_ip: int = 256
    """HTTP connections one address (IPv6: /64) may hold (429 beyond)."""
    rtmp_max_connections_per_ip: int = 50
    http_head_timeout_s: float = 15.0
    """A request head must be complete this long after its first byte."""
    # --- retention ---
    event_retention_s: float = 30 * 24 * 3600.0
    """Events, webhook deliveries and failed jobs are kept this long; an
    `/v1/events?after=` cursor older than that answers 410 cursor_expired."""
    retention_sweep_s: float = 60.0
    """How often the node holding the sweeper lease removes what retention expired."""
    view_retention_s: float = 90 * 24 * 3600.0
    """Views and the ingest bitrate minutes are kept this long."""
    # --- viewer analytics ---
    cmcd: bool = True
    """Read players' CMCD (false: their requests count as unmeasured views)."""
    view_idle_s: float = 30.0
    """A view with no request or beacon for this long has ended."""
    view_flush_s: float = 5.0
    """How often a node stores the views it saw change."""
    max_views: int = 50_000
    """Views one node tracks at once; beyond it new ones are not counted."""
    # --- public routes that cost work ---
    public_rate_limit_per_s: float = 5.0
    """Token refill per client address for public routes that do work
    (thumbnails, WHIP/WHEP offers, beacons)."""
    public_rate_limit_burst: int = 30
    thumbnail_concurrency: int = 2
    """Thumbnails rendered at once per node; beyond it 503 + Retry-After."""
    playback_token_max_ttl_s: float = 7 * 24 * 3600.0
    """The longest lifetime (exp - iat, or exp - now) a playback token may claim."""
    # --- operations ---
    metrics_token: str | None = None
    """When set, GET /metrics needs `Authorization: Bearer <token>`."""
    metrics_port: int | None = None
    """When set, /metrics is served on this port only (not on the HTTP port)."""
    # --- media (used by later subsystems) ---
    webrtc_public_ip: str | None = None
    rtmps_port: int | None = None
    srt_port: int | None = 9000
    """SRT ingest (MPEG-TS, the stream key as streamid); empty: no SRT listener."""
    srt_passphrase: str | None = None
    """When set, SRT publishers must encrypt with it (10..79 characters)."""
    srt_latency_ms: int = 120
    """The SRT receiver latency: time for lost packets to be sent again."""
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # --- cluster ---
    node_id: str = field(default_factory=_default_node_id)
    node_url: str | None = None
    """This node's address for other nodes (default: the public base URL).
    With several workers each worker listens for other nodes on a port of its
    own on this address's host (default 127.0.0.1)."""
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Worker processes of one `onair serve` (each a node sharing the HTTP and
    RTMP ports); 1: one process, no supervisor."""
    worker_index: int | None = None
    """Set by the supervisor in the environment of the worker it starts."""
    # --- SSE ---
    # --- media ---
    media_workers: int = 1
    """Processes for CPU-heavy VOD work (MP4, thumbnails, transcodes, clips)."""
    upload_max_bytes: int = 4 * 1024**3
    """Largest file accepted at an upload URL (413 above)."""
    max_queued_jobs: int = 1000
    """Jobs waiting beyond this make new uploads/clips answer 503 + Retry-After."""
    s3_create_bucket: bool = False
    """Create ONAIR_S3_BUCKET at start if it is missing (MinIO/dev setups)."""
    s3_presign_s: int = 0
    """>0: asset media on S3 is served as a presigned redirect of this lifetime (s);
    0: proxied through the service."""
    webrtc_ice_servers: str = ""
    """Comma-separated STUN/TURN URLs (``turn:user:pass@host:port``); none by default."""
    webrtc_hosts: str = ""
    """Comma-separated addresses to offer as host candidates (empty: every interface)."""
    webrtc_interfaces: str = ""
    """Comma-separated interface names to gather host candidates on."""
    webrtc_udp_ports: str = ""
    """"min-max" UDP port range for WebRTC media (empty: the OS picks)."""
    webrtc_loopback: bool | None = None
    """Offer 127.0.0.1 as a candidate; default: when the service binds to loopback."""
    webrtc_allow_private_candidates: bool | None = None
    """Probe peers' candidates on private/loopback addresses; default: as webrtc_loopback."""
    webrtc_connect_timeout_s: float = 10.0
    """A WHIP/WHEP session not connected by then is dropped."""
    webrtc_max_sessions: int = 1000
    """WHIP sessions, and WHEP sessions, at once per node (503 beyond)."""
    webrtc_max_sessions_per_stream: int = 500
    webrtc_max_sessions_per_ip: int = 20
    """Per client address, IPv6 per /64 (429 beyond)."""
    webrtc_turn_urls: str = ""
    """Comma-separated TURN URLs whose server shares `webrtc_turn_secret`."""
    webrtc_turn_secret: str | None = None
    """TURN REST API shared secret: clients get credentials valid for webrtc_turn_ttl_s."""
    webrtc_turn_ttl_s: int = 3600
    sse_heartbeat_s: float = 15.0
    event_poll_s: float = 0.5
    """How often the SSE tailer polls the store for events committed by other nodes."""

    # ---------------------------------------------------------------- derived
    @property
    def base_url(self) -> str:
        """Public base URL without a trailing slash (links in API responses)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"

    @property
    def shared_store(self) -> bool:
        """The store is Redis (many nodes), not this machine's SQLite."""
        return bool(self.redis_url or self.redis_sentinels)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        out = []
        for item in (self.redis_sentinels or "").split(","):
            host, _, port = item.strip().rpartition(":")
            if host and port.isdigit():
                out.append((host.strip("[]"), int(port)))
        return out

    @property
    def node_address(self) -> str:
        """Where other nodes reach this one (`node_url`, else the base URL)."""
        return (self.node_url or self.base_url).rstrip("/")

    @property
    def public_host(self) -> str:
        """Host name part of the public URL (for rtmp:// links)."""
        from urllib.parse import urlsplit

        return urlsplit(self.base_url).hostname or "127.0.0.1"

    @property
    def rtmp_url(self) -> str:
        host = self.public_host
        if ":" in host:
            host = f"[{host}]"
        return f"rtmp://{host}:{self.rtmp_port}/live"

    @property
    def rtmps_enabled(self) -> bool:
        return bool(self.rtmps_port and self.tls_cert_file and self.tls_key_file)

    @property
    def rtmps_url(self) -> str | None:
        """rtmps://HOST:PORT/live when RTMPS is configured (port and certificate)."""
        if not self.rtmps_enabled:
            return None
        host = self.public_host
        if ":" in host:
            host = f"[{host}]"
        return f"rtmps://{host}:{self.rtmps_port}/live"

    @property
    def srt_url(self) -> str | None:
        """srt://HOST:PORT (the stream key goes in `streamid`), when SRT is on."""
        if self.srt_port is None:
            return None
        host = self.public_host
        if ":" in host:
            host = f"[{host}]"
        return f"srt://{host}:{self.srt_port}"

    @property
    def whip_url(self) -> str:
        return f"{self.base_url}/v1/whip"

    @property
    def dashboard_url(self) -> str:
        return f"{self.base_url}/dashboard"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in fields(Settings)}


def _coerce(name: str, tp: Any, raw: Any) -> Any:
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
    if raw is None:
        if optional:
            return None
        raise SettingsError(f"{name} may not be empty")
    if isinstance(raw, str):
        raw = raw.strip()
        if raw == "" and optional:
            return None
    try:
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            low = str(raw).lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if tp is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if tp is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        return str(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: cannot read {raw!r} as {tp.__name__}") from exc


def load_settings(
    env: Mapping[str, str] | None = None,
    toml_path: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings from defaults < TOML < environment < explicit overrides."""
    env = os.environ if env is None else env
    types_ = _field_types()
    values: dict[str, Any] = {}

    path: Path | None
    if toml_path is not None:
        path = Path(toml_path)
    elif env.get(ENV_PREFIX + "CONFIG"):
        path = Path(env[ENV_PREFIX + "CONFIG"])
    else:
        path = Path("onair.toml") if Path("onair.toml").is_file() else None
    if path is not None:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
        section = doc.get("onair", doc) if isinstance(doc.get("onair"), dict) else doc
        for key, raw in section.items():
            if key not in types_:
                raise SettingsError(f"{path}: unknown setting {key!r}")
            values[key] = _coerce(key, types_[key], raw)

    for name, tp in types_.items():
        env_name = ENV_PREFIX + name.upper()
        if env_name in env:
            values[name] = _coerce(env_name, tp, env[env_name])

    for name, raw in overrides.items():
        if name not in types_:
            raise SettingsError(f"unknown setting {name!r}")
        values[name] = raw

    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    for name in ("http_port", "rtmp_port"):
        port = getattr(s, name)
        if not 0 <= port <= 65535:
            raise SettingsError(f"{name} out of range: {port}")
    if s.body_limit_bytes <= 0:
        raise SettingsError("body_limit_bytes must be positive")
    if s.rate_limit_per_s <= 0 or s.rate_limit_burst <= 0:
        raise SettingsError("rate limits must be positive")
    if not 0 < s.webrtc_connect_timeout_s <= 60:
        raise SettingsError("webrtc_connect_timeout_s must be within 0..60 seconds")
    if not 0 < s.http_head_timeout_s <= 30:
        raise SettingsError("http_head_timeout_s must be within 0..30 seconds")
    if s.event_retention_s < 3600:
        raise SettingsError("event_retention_s must be at least 3600 (one hour)")
    if s.view_retention_s < 3600:
        raise SettingsError("view_retention_s must be at least 3600 (one hour)")
    if not 1 <= s.view_idle_s <= 3600 or not 0.1 <= s.view_flush_s <= 60:
        raise SettingsError("view_idle_s must be within 1..3600 s, view_flush_s within 0.1..60 s")
    if s.max_views < 1:
        raise SettingsError("max_views must be positive")
    if s.playback_token_max_ttl_s <= 0:
        raise SettingsError("playback_token_max_ttl_s must be positive")
    if s.public_rate_limit_per_s <= 0 or s.public_rate_limit_burst <= 0:
        raise SettingsError("public rate limits must be positive")
    if not 1 <= s.workers <= 256:
        raise SettingsError("workers must be within 1..256")
    if s.srt_port is not None and not 0 <= s.srt_port <= 65535:
        raise SettingsError(f"srt_port out of range: {s.srt_port}")
    if s.srt_passphrase is not None and not 10 <= len(s.srt_passphrase) <= 79:
        raise SettingsError("srt_passphrase must be 10 to 79 characters (SRT's rule)")
    if not 20 <= s.srt_latency_ms <= 10000:
        raise SettingsError("srt_latency_ms must be within 20..10000")
    if not 0 <= s.rtmp_read_coalesce_s <= 1:
        raise SettingsError("rtmp_read_coalesce_s must be within 0..1 seconds")
