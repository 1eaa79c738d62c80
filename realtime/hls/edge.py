"""The playback edge: live LL-HLS requests answered without a task per request.

Every viewer of a low-latency stream asks for a playlist and a part five
times a second, and at each new part every blocked viewer is answered at
once. Through aiohttp that costs ~150 µs per answer, so 1,000 viewers queue
for 150 ms behind each other. The edge is an `asyncio.Protocol` in front of
aiohttp on the same port: it serves `GET /play/{playback_id}.m3u8` and
`GET /play/{playback_id}/{name}` of live streams itself (a blocked request is
a done-callback on the stream's shared future, not a task), with the answers
`realtime.hls.responder` decides, so they are byte for byte those of the
aiohttp handlers.

Anything else on the connection (API calls, VOD, downloads, HEAD, bodies,
heads it does not understand, unknown or refused playback ids) is handed
to aiohttp: the transport is switched to a fresh aiohttp `RequestHandler`,
which gets every byte not yet consumed and keeps the connection from then on.

A live stream another node ingests (origin-edge) is served the same way: its
route carries an `Upstream` instead of a `LiveHls`, which answers a playback
URL from a cache or with the one shared future of the request on its way to
the origin; every viewer waiting for it is a done-callback on that future, and
the origin's bytes and caching headers are written as they came.

The composition root supplies `resolve(playback_id, token)`, which checks the
playback policy and returns an `EdgeRoute` (synchronously when cached, else an
awaitable) or None to hand the request over, and `observe` for metrics and
access logs. `EdgeSite` is the aiohttp site that listens with the edge.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import socket
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

from aiohttp import web

from ingest.conn_limits import ConnectionLimits
from realtime.hls import responder
from realtime.hls.http import reply_headers
from realtime.hls.live import LiveHls
from realtime.hls.playlist import media_playlist_uri
from realtime.hls.responder import Pending, Reply, Step
from realtime.http_head import (
    NotSimple,
    RequestHead,
    header_lines,
    parse_request_head,
    response_head,
)

log = logging.getLogger("onair.realtime.edge")

MULTIVARIANT_ROUTE = "/play/{playback_id}.m3u8"
CHILD_ROUTE = "/play/{playback_id}/{name}"
"""Route labels, as aiohttp names the same routes (metrics)."""

_PREFIX = "/play/"
_MAX_BUFFERED = 64 * 1024
_REFUSED = {
    reason: (
        f"HTTP/1.1 {status}\r\nRetry-After: {retry}\r\nConnection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    for reason, status, retry, body in (
        (
            "client",
            "429 Too Many Requests",
            10,
            '{"error":{"type":"rate_limited","message":"too many connections from this address"}}',
        ),
        (
            "full",
            "503 Service Unavailable",
            5,
            '{"error":{"type":"service_unavailable","message":"too many connections"}}',
        ),
    )
}
"""What a refused connection is told before it is closed."""
"""Unconsumed request bytes held before reading pauses (pipelined requests)."""
_SAFE_ID = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SAFE_NAME = _SAFE_ID | {"."}
_FIELDS: dict[tuple[str, str, str | None], str] = {}
"""Rendered header fields by (content type, cache control, retry-after): a handful."""
_RELAYED_FIELDS: dict[tuple[tuple[str, str], ...], str] = {}
"""The same for relayed answers, by the origin's header fields."""
_SPLIT_WRITE = 16 * 1024
"""Bodies above this are written apart from the head (no copy into one buffer)."""


RELAY_HEADER = "X-Onair-Relay"
"""Set on requests an edge sends the origin: the origin answers them, never relays."""
_RELAY_FIELD = RELAY_HEADER.lower()


@dataclass(frozen=True, slots=True)
class Relayed:
    """The origin's answer to a playback URL, passed on as it came."""

    status: int
    headers: dict[str, str]
    body: bytes


Upstream = Callable[[str], "Relayed | asyncio.Future[Relayed | None]"]
"""path and query → the origin's answer, now (cached) or the shared future of
the request on its way; a future's None: no other node serves the stream."""


@dataclass(slots=True, frozen=True)
class EdgeRoute:
    """A live stream the edge may serve for a playback id, and the child-URI suffix:
    from this node (`live`), or relayed from its origin (`upstream`)."""

    live: LiveHls | None
    playback_id: str
    suffix: str = ""
    upstream: Upstream | None = None


@dataclass(slots=True)
class EdgeRequest:
    """One answered request, for metrics and access logs."""

    method: str
    path: str
    query: str
    route: str
    status: int
    duration_s: float
    remote: str
    request_id: str
    answered_at: float
    """time.time() when the answer was written (observers run a little later)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """The request's header fields (names lowercased)."""


Resolve = Callable[[str, str | None], "EdgeRoute | Awaitable[EdgeRoute | None] | None"]


def _new_request_id(incoming: str | None) -> str:
    return "req_" + uuid.uuid4().hex


class PlaybackEdge:
    """The protocol factory: one `_Connection` per accepted socket."""

    def __init__(
        self,
        fallback: Callable[[], asyncio.BaseProtocol],
        resolve: Resolve,
        *,
        observe: Callable[[EdgeRequest], None] | None = None,
        request_id: Callable[[str | None], str] = _new_request_id,
        keepalive_s: float = 75.0,
        head_timeout_s: float = 15.0,
        limits: ConnectionLimits | None = None,
        max_per_client: int = 256,
    ) -> None:
        self.fallback = fallback
        self.limits = limits
        """The node's caps on accepted sockets (None: none)."""
        self.max_per_client = max_per_client
        """Connections one address (IPv6: /64) may hold on this listener."""
        self.resolve = resolve
        self.observe = observe
        self.request_id = request_id
        self.keepalive_s = keepalive_s
        self.head_timeout_s = head_timeout_s
        """A request head must be complete this long after its first byte: an
        absolute deadline, so dripping a byte now and then holds nothing."""
        self._sweep_s = min(5.0, head_timeout_s / 2)
        self.connections: set[_Connection] = set()
        self.served = 0
        self.handed_over = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing = False
        self._deadlines: dict[float, list[tuple[_Connection, Pending]]] = {}
        self._observed: list[EdgeRequest] = []

    def expire_at(self, deadline: float, conn: _Connection, step: Pending) -> None:
        """Time `step` out at about `deadline` (loop time). Deadlines share 100 ms
        buckets, one timer each, instead of a timer per waiting request."""
        bucket = math.ceil(deadline * 10) / 10
        waiting = self._deadlines.get(bucket)
        if waiting is None:
            waiting = self._deadlines[bucket] = []
            asyncio.get_running_loop().call_at(bucket, self._expire_bucket, bucket)
        waiting.append((conn, step))

    def _expire_bucket(self, bucket: float) -> None:
        for conn, step in self._deadlines.pop(bucket, ()):
            conn.timed_out(step)

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self)

    def record(self, request: EdgeRequest) -> None:
        """Pass an answered request to `observe` soon, not now: when a part lands,
        the held answers go out first and the bookkeeping follows the burst."""
        self._observed.append(request)
        if len(self._observed) == 1:
            asyncio.get_running_loop().call_soon(self._flush_observed)

    def _flush_observed(self) -> None:
        observed, self._observed = self._observed, []
        observe = self.observe
        if observe is None:
            return
        for request in observed:
            try:
                observe(request)
            except Exception:  # metrics must never break playback
                log.exception("observing an edge request failed")

    def _track(self, conn: _Connection) -> None:
        self.connections.add(conn)
        if self._sweeper is None and not self._closing:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_s, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle past the keep-alive, or stuck in a partial head."""
        self._sweeper = None
        now = time.monotonic()
        for conn in list(self.connections):
            conn.expire(now)
        if self.limits is not None:
            self.limits.sweep()
        if self.connections and not self._closing:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_s, self._sweep)

    def close(self) -> None:
        """Close every connection the edge still serves (shutdown)."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.connections):
            conn.abort()


_IDLE, _RESOLVING, _WAITING = 0, 1, 2


class _Connection(asyncio.Protocol):
    """One client connection while the edge serves it."""

    def __init__(self, edge: PlaybackEdge) -> None:
        self.edge = edge
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = _IDLE
        self.closed = False
        self.eof = False
        self.write_paused = False
        self.read_paused = False
        self.remote = ""
        self.last_activity = time.monotonic()
        self.head_started = 0.0
        """When the first byte of the head now in the buffer arrived."""
        self.head: RequestHead | None = None
        self.route_label = ""
        self.request_id = ""
        self.started = 0.0
        self.pending: Pending | None = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so cast, not assert
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) else ""
        limits = self.edge.limits
        refused = (
            limits.admit(
                transport, self.remote, listener="http", per_client=self.edge.max_per_client
            )
            if limits is not None
            else None
        )
        if refused is not None:
            # answered before reading anything: this costs one write and one close
            self.closed = True
            self.transport.write(_REFUSED[refused])
            self.transport.close()
            return
        self.edge._track(self)

    def data_received(self, data: bytes) -> None:
        if self.closed and self.transport is not None and self.transport.is_closing():
            return
        now = time.monotonic()
        if not self.buf:
            self.head_started = now
        self.buf += data
        self.last_activity = now
        if len(self.buf) > _MAX_BUFFERED and not self.read_paused and self.transport:
            self.read_paused = True
            self.transport.pause_reading()
        if self.state == _IDLE:
            self._serve_buffered()

    def eof_received(self) -> bool:
        self.eof = True
        # keep the write side open to finish an answer in progress, then close
        return self.state != _IDLE

    def connection_lost(self, exc: Exception | None) -> None:
        if self.edge.limits is not None and self.transport is not None:
            self.edge.limits.release(self.transport, self.remote, listener="http")
        self._forget()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.state == _IDLE and not self.closed:
            self._serve_buffered()

    # -- housekeeping --------------------------------------------------------------

    def _forget(self) -> None:
        self.closed = True
        self.pending = None
        self.edge.connections.discard(self)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self._forget()

    def expire(self, now: float) -> None:
        if self.state != _IDLE or self.closed:
            return
        if self.buf:
            expired = now - self.head_started > self.edge.head_timeout_s
        else:
            expired = now - self.last_activity > self.edge.keepalive_s
        if expired:
            if self.transport is not None:
                self.transport.close()
            self._forget()

    # -- requests --------------------------------------------------------------------

    def _serve_buffered(self) -> None:
        """Answer the requests in the buffer until one must wait or is not ours."""
        while self.state == _IDLE and not self.closed and not self.write_paused and self.buf:
            try:
                head = parse_request_head(self.buf)
            except NotSimple:
                self._hand_over()
                return
            if head is None:
                break
            if not self._begin(head):
                return
        if self.read_paused and len(self.buf) <= _MAX_BUFFERED and self.transport:
            self.read_paused = False
            self.transport.resume_reading()
        if self.state == _IDLE and self.eof and not self.closed and self.transport:
            self.transport.close()
            self._forget()

    def _begin(self, head: RequestHead) -> bool:
        """Start answering `head`; False when the connection left the loop (handed
        over, waiting, resolving)."""
        if head.method != "GET":
            self._hand_over()
            return False
        parsed = _parse_target(head)
        if parsed is None:
            self._hand_over()
            return False
        pid, name, query = parsed
        self.head = head
        self.started = time.perf_counter()
        found = self.edge.resolve(pid, query.get("token"))
        if found is not None and type(found) is not EdgeRoute and inspect.isawaitable(found):
            self.state = _RESOLVING
            task = asyncio.ensure_future(found)
            task.add_done_callback(functools.partial(self._resolved, head, name, query))
            return False
        return self._start(cast("EdgeRoute | None", found), head, name, query)

    def _resolved(
        self,
        head: RequestHead,
        name: str | None,
        query: dict[str, str],
        task: asyncio.Future[EdgeRoute | None],
    ) -> None:
        if self.closed:
            return
        self.state = _IDLE
        route: EdgeRoute | None = None
        if not task.cancelled() and task.exception() is None:
            route = task.result()
        elif not task.cancelled():
            log.warning("playback resolve failed: %r", task.exception())
        if self._start(route, head, name, query):
            self._serve_buffered()

    def _start(
        self, route: EdgeRoute | None, head: RequestHead, name: str | None, query: dict[str, str]
    ) -> bool:
        if route is None or name == "download.mp4":
            self._hand_over()
            return False
        self.route_label = MULTIVARIANT_ROUTE if name is None else CHILD_ROUTE
        live = route.live
        if live is None:
            return self._relay(route, head)
        del self.buf[: head.size]
        self.request_id = self.edge.request_id(head.headers.get("x-request-id"))
        if name is None:
            step = responder.multivariant(live, media_playlist_uri(route.playback_id), route.suffix)
        else:
            step = responder.child(live, name, query, route.suffix)
        return self._advance(step)

    def _relay(self, route: EdgeRoute, head: RequestHead) -> bool:
        """Answer with the origin's reply: now when it is cached, else when the
        shared upstream request completes. The head stays buffered until then,
        so a stream no other node serves is handed to aiohttp whole."""
        # an edge's own request reaching a node that lost the stream is never
        # relayed again: aiohttp answers it (404), and the edge looks again
        if route.upstream is None or _RELAY_FIELD in head.headers:
            self._hand_over()
            return False
        got = route.upstream(head.target)
        if isinstance(got, Relayed):
            return self._pass_on(head, got)
        self.state = _WAITING
        got.add_done_callback(functools.partial(self._relay_done, head))
        return False

    def _relay_done(self, head: RequestHead, future: asyncio.Future[Relayed | None]) -> None:
        if self.closed or self.head is not head:
            return
        self.state = _IDLE
        reply: Relayed | None = None
        if not future.cancelled() and future.exception() is None:
            reply = future.result()
        elif not future.cancelled():
            log.warning("relaying from the origin failed: %r", future.exception())
        if reply is None:
            self._hand_over()
            return
        if self._pass_on(head, reply):
            self._serve_buffered()

    def _pass_on(self, head: RequestHead, reply: Relayed) -> bool:
        del self.buf[: head.size]
        self.request_id = self.edge.request_id(head.headers.get("x-request-id"))
        key = tuple(reply.headers.items())
        fields = _RELAYED_FIELDS.get(key)
        if fields is None:
            if len(_RELAYED_FIELDS) > 256:
                _RELAYED_FIELDS.clear()
            fields = _RELAYED_FIELDS[key] = header_lines(list(key))
        self._write(reply.status, fields, reply.body)
        return not self.closed

    def _advance(self, step: Step) -> bool:
        """Send a reply (True: ready for the next request) or wait (False)."""
        if isinstance(step, Reply):
            self._send(step)
            return not self.closed
        self.state = _WAITING
        self.pending = step
        step.future.add_done_callback(functools.partial(self._woken, step))
        self.edge.expire_at(step.deadline, self, step)
        return False

    def _woken(self, step: Pending, _: asyncio.Future[None]) -> None:
        if self.pending is step:
            self._resume(step, False)

    def timed_out(self, step: Pending) -> None:
        if self.pending is step:
            self._resume(step, True)

    def _resume(self, step: Pending, timed_out: bool) -> None:
        self.pending = None
        self.state = _IDLE
        if self._advance(step.resume(timed_out)):
            self._serve_buffered()

    def _send(self, reply: Reply) -> None:
        key = (reply.content_type, reply.cache_control, reply.retry_after)
        fields = _FIELDS.get(key)
        if fields is None:
            fields = _FIELDS[key] = header_lines(list(reply_headers(reply).items()))
        self._write(reply.status, fields, reply.body)

    def _write(self, status: int, fields: str, body: bytes) -> None:
        head = self.head
        transport = self.transport
        assert head is not None and transport is not None
        keep_alive = head.keep_alive and not self.eof
        first = response_head(
            status,
            f"{fields}X-Request-Id: {self.request_id}\r\n",
            len(body),
            keep_alive=keep_alive,
        )
        if len(body) > _SPLIT_WRITE:
            transport.write(first)
            transport.write(body)
        else:
            transport.write(first + body)
        self.last_activity = time.monotonic()
        self.edge.served += 1
        if self.edge.observe is not None:
            self.edge.record(
                EdgeRequest(
                    "GET",
                    head.path,
                    head.query_string,
                    self.route_label,
                    status,
                    time.perf_counter() - self.started,
                    self.remote,
                    self.request_id,
                    time.time(),
                    head.headers,
                )
            )
        self.head = None
        if not keep_alive:
            transport.close()
            self._forget()

    def _hand_over(self) -> None:
        """Give the connection, and every unconsumed byte, to aiohttp."""
        transport = self.transport
        if transport is None or self.closed:
            return
        self._forget()
        self.edge.handed_over += 1
        protocol = cast(asyncio.Protocol, self.edge.fallback())
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.read_paused:
            transport.resume_reading()
        if self.buf:
            protocol.data_received(bytes(self.buf))
            self.buf.clear()
        if self.eof and not protocol.eof_received():
            transport.close()


def _parse_target(head: RequestHead) -> tuple[str, str | None, dict[str, str]] | None:
    """(playback id, child name or None for the multivariant playlist, query) of a
    plain /play/ path; None for any other path (aiohttp's routes decide those)."""
    path = head.path
    if not path.startswith(_PREFIX):
        return None
    rest = path[len(_PREFIX) :]
    pid, slash, name = rest.partition("/")
    if slash:
        if not name or not _SAFE_NAME.issuperset(name) or not pid:
            return None
        child: str | None = name
    elif pid.endswith(".m3u8"):
        pid, child = pid[: -len(".m3u8")], None
    else:
        return None
    if not pid or not _SAFE_ID.issuperset(pid):
        return None
    return pid, child, _parse_query(head.query_string)


def _parse_query(qs: str) -> dict[str, str]:
    """The query as aiohttp's `request.query.get` sees it (first value of a name
    wins), but for ``CMCD``: players' data the edge never reads stays encoded
    (the view tracker decodes it), since every request of a player sending it
    carries ~150 escaped bytes."""
    query: dict[str, str] = {}
    if not qs:
        return query
    unquote = urllib.parse.unquote_plus
    for pair in qs.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if "%" in key or "+" in key:
            key = unquote(key)
        if key in query:
            continue
        if key != "CMCD" and ("%" in value or "+" in value):
            value = unquote(value)
        query[key] = value
    return query


class EdgeSite(web.BaseSite):
    """An aiohttp site on a TCP port whose connections the playback edge sees
    first (it hands aiohttp what is not live playback)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int | None,
        *,
        resolve: Resolve,
        observe: Callable[[EdgeRequest], None] | None = None,
        request_id: Callable[[str | None], str] = _new_request_id,
        limits: ConnectionLimits | None = None,
        max_per_client: int = 256,
        head_timeout_s: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        """`sock`: an already bound socket to listen on instead of `host`:`port`."""
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        server = runner.server
        assert server is not None, "call runner.setup() first"
        self.host = host
        self.requested_port = port if port is not None else (8443 if ssl_context else 8080)
        self.ssl_context = ssl_context
        self.backlog = backlog
        self.reuse_address = reuse_address
        self.reuse_port = reuse_port
        self.sock = sock
        self.bound_port: int | None = None
        self.edge = PlaybackEdge(
            server,
            resolve,
            observe=observe,
            request_id=request_id,
            limits=limits,
            max_per_client=max_per_client,
            head_timeout_s=head_timeout_s,
        )

    @property
    def port(self) -> int:
        """The port listened on (once started; the requested one before)."""
        return self.bound_port if self.bound_port is not None else self.requested_port

    @property
    def name(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host or '0.0.0.0'}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            server = await loop.create_server(
                self.edge, sock=self.sock, ssl=self.ssl_context, backlog=self.backlog
            )
        else:
            server = await loop.create_server(
                self.edge,
                self.host,
                self.requested_port,
                ssl=self.ssl_context,
                backlog=self.backlog,
                reuse_address=self.reuse_address,
                reuse_port=self.reuse_port,
            )
        self._server = server  # BaseSite.stop() closes it
        if server.sockets:
            self.bound_port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.edge.close()
        await super().stop()
