"""The other workers of this machine, and forwarding WebRTC requests to them.

The workers of one `onair serve` share its public address, so an answer that
sends a client to another node (a WHEP offer for a stream another node
ingests: 307 to that node) would send it back to the shared port, to any
worker. Between workers the request is forwarded instead, to the worker's own
node address: a WHEP offer to the stream's origin, and a WHIP or WHEP
session's DELETE or PATCH to whichever worker holds the session (its URL
names no worker). Nodes of other machines still get the redirect.

A forwarded request carries `FORWARD_HEADER` (never forwarded again) and the
client's address in `CLIENT_HEADER`, which a worker believes only on its
private listener (`on_private`), so per-address limits count the client, not
the worker that forwarded it.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from control.registry import alive
from control.store.base import Store

log = logging.getLogger(__name__)

FORWARD_HEADER = "X-Onair-Forwarded"
CLIENT_HEADER = "X-Onair-Client"
FORWARDED = web.RequestKey("onair.forwarded", bool)
"""Set on a request another worker forwarded here (its limits were checked there)."""
SIBLINGS_TTL_S = 1.0
TIMEOUT_S = 15.0
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date", "server"}
)


def _port(url: str | None) -> int | None:
    return urlsplit(url).port if url else None


class Siblings:
    """`ingest.webrtc.http.Forwarder` over the node registry: the living nodes
    with this node's public URL and another id are its sibling workers."""

    def __init__(
        self, store: Store, *, node_id: str, public_url: str, private_url: str | None
    ) -> None:
        """`private_url`: this worker's own listener for other nodes (None: not a worker)."""
        self.store = store
        self.node_id = node_id
        self.public_url = public_url.rstrip("/")
        self.private_port = _port(private_url)
        self._cached: tuple[float, list[str]] = (0.0, [])
        self._session: aiohttp.ClientSession | None = None

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def addresses(self) -> list[str]:
        """Node addresses of this machine's other living workers (cached briefly)."""
        at, urls = self._cached
        if time.monotonic() - at < SIBLINGS_TTL_S:
            return urls
        urls = [
            str(n.data["url"]).rstrip("/")
            for n in await alive(self.store)
            if n.id != self.node_id
            and n.data.get("url")
            and str(n.data.get("public_url") or "").rstrip("/") == self.public_url
        ]
        self._cached = (time.monotonic(), urls)
        return urls

    def on_private(self, request: web.Request) -> bool:
        """The request came in on this worker's listener for other nodes."""
        if self.private_port is None or request.transport is None:
            return False
        sockname = request.transport.get_extra_info("sockname")
        return bool(sockname) and sockname[1] == self.private_port

    # -- Forwarder -------------------------------------------------------------------

    def forwarded(self, request: web.Request) -> bool:
        return FORWARD_HEADER in request.headers

    async def to_node(
        self, request: web.Request, base_url: str, body: bytes
    ) -> web.StreamResponse | None:
        if base_url.rstrip("/") not in await self.addresses():
            return None
        return await self._send(request, base_url, body)

    async def to_holder(self, request: web.Request) -> web.StreamResponse | None:
        body = await request.read()
        for base_url in await self.addresses():
            answer = await self._send(request, base_url, body)
            if answer is not None and answer.status != 404:
                return answer
        return None

    async def _send(
        self, request: web.Request, base_url: str, body: bytes
    ) -> web.StreamResponse | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers[FORWARD_HEADER] = self.node_id
        headers[CLIENT_HEADER] = request.remote or ""
        try:
            async with self._session.request(
                request.method,
                base_url.rstrip("/") + str(request.rel_url),
                data=body or None,
                headers=headers,
                allow_redirects=False,
            ) as r:
                payload = await r.read()
                answer = web.Response(status=r.status, body=payload)
                for k, v in r.headers.items():
                    if k.lower() not in _HOP_BY_HOP:
                        answer.headers.add(k, v)
                return answer
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.info(
                "forwarding %s %s to %s failed (%r)", request.method, request.path, base_url, exc
            )
            return None
