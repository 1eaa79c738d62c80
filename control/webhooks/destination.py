"""Where webhooks may go: public addresses only, unless the operator allows more.

A webhook URL is chosen by whoever holds a write key; without this guard the
delivery log would make onair a port scanner into the operator's network.
Refused: whatever `ingest.addresses.is_public` says is not public (loopback,
private, CGNAT, link-local and the metadata address, ULA, multicast, ...).

The check runs on the address actually connected to: `PublicOnlyResolver`
filters what aiohttp will connect to after each lookup, so a name that
resolves to a public address at creation and to 127.0.0.1 at delivery (DNS
rebinding) is still refused. aiohttp skips its resolver for IP literals, so
`refuse_literal` covers those before the request.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from ingest.addresses import IPAddress, is_public


class DestinationRefused(aiohttp.ClientConnectionError):
    """The destination is not a public address (and private ones are not allowed)."""


def literal_host(url: str) -> IPAddress | None:
    host = urlsplit(url).hostname
    if host is None:
        return None
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def refuse_literal(url: str) -> None:
    ip = literal_host(url)
    if ip is not None and not is_public(ip):
        raise DestinationRefused(f"{ip} is not a public address")


async def check_url(url: str, resolver: AbstractResolver | None = None) -> str | None:
    """Why `url` may not receive webhooks (None: fine). A name that does not
    resolve now is accepted (its receiver may not exist yet); every delivery
    attempt checks again."""
    ip = literal_host(url)
    if ip is not None:
        return None if is_public(ip) else f"{ip} is not a public address"
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    inner = resolver or ThreadedResolver()
    try:
        infos = await inner.resolve(host, port, socket.AF_UNSPEC)
    except OSError:
        return None
    finally:
        if resolver is None:
            await inner.close()
    private = [i["host"] for i in infos if not is_public(ipaddress.ip_address(i["host"]))]
    if private:
        return f"{host} resolves to {private[0]}, which is not a public address"
    return None


class PublicOnlyResolver(AbstractResolver):
    """Resolves with aiohttp's threaded resolver and keeps only public addresses."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await self._inner.resolve(host, port, family)
        public = [i for i in infos if is_public(ipaddress.ip_address(i["host"]))]
        if not public:
            shown = infos[0]["host"] if infos else "nothing"
            raise DestinationRefused(f"{host} resolves to {shown}, which is not a public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


def error_class(exc: BaseException) -> str:
    """The coarse class kept in the delivery log: never exception text, which
    would tell a prober what answered inside the network."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, DestinationRefused):
        return "destination_refused"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns"
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ClientConnectorCertificateError):
        return "tls"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error: Any = exc.os_error
        if isinstance(os_error, DestinationRefused):
            return "destination_refused"
        if isinstance(os_error, socket.gaierror):
            return "dns"
        if isinstance(os_error, ConnectionRefusedError):
            return "connection_refused"
        return "connection_failed"
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return "connection_failed"
    return "request_failed"
