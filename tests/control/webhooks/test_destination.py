"""Webhook destinations: public addresses only, at creation and at every
attempt, on the address actually connected to; the delivery log keeps a coarse
error class, never exception text."""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from control.webhooks.destination import (
    DestinationRefused,
    PublicOnlyResolver,
    check_url,
    error_class,
    is_public,
)
from control.webhooks.worker import post_once

REFUSED = [
    "127.0.0.1",
    "127.9.9.9",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "fe80::1",
    "fc00::1",
    "fd12::1",
    "224.0.0.1",
    "ff02::1",
    "0.0.0.0",
    "::",
    "::ffff:127.0.0.1",
    "64:ff9b::a00:1",
    "2002:7f00:1::1",
    "192.0.2.1",
    "255.255.255.255",
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1", "1.1.1.1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


class FixedResolver(AbstractResolver):
    """Answers every name with the given addresses (a rebinding DNS server)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_check_url_resolves_names() -> None:
    assert await check_url("http://localhost:9/h") is not None
    assert await check_url("http://[::1]/h") is not None
    assert await check_url("http://169.254.169.254/latest/meta-data") is not None
    assert await check_url("http://hooks.example/h", FixedResolver("10.0.0.5")) is not None
    assert await check_url("http://hooks.example/h", FixedResolver("93.184.216.34")) is None
    # a name that does not resolve yet is accepted; each attempt checks again
    assert await check_url("https://no-such-host.invalid/h") is None


async def test_rebinding_is_refused_on_the_address_connected_to() -> None:
    """The name resolved to a public address when the endpoint was created; at
    delivery it answers 127.0.0.1, where a receiver really listens."""
    from tests.support.webhook_receiver import WebhookReceiver

    async with WebhookReceiver() as rx:
        port = int(rx.url("/h").rsplit(":", 1)[1].split("/")[0])
        resolver = PublicOnlyResolver(FixedResolver("127.0.0.1"))
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=resolver)
        ) as session:
            outcome = await post_once(
                session, f"http://rebind.example:{port}/h", b"{}", {}, 2.0, lambda: 0.0
            )
        assert rx.received == [], "nothing reached the private address"
    assert outcome.status_code is None and outcome.error == "destination_refused"


async def test_ip_literals_are_refused_before_connecting() -> None:
    from tests.support.webhook_receiver import WebhookReceiver

    async with WebhookReceiver() as rx:
        url = rx.url("/h")
        async with aiohttp.ClientSession() as session:
            refused = await post_once(session, url, b"{}", {}, 2.0, lambda: 0.0)
            assert rx.received == []
            allowed = await post_once(session, url, b"{}", {}, 2.0, lambda: 0.0, allow_private=True)
    assert refused.error == "destination_refused"
    assert allowed.status_code == 200 and len(rx.received) == 1


async def test_errors_are_logged_as_classes_not_text() -> None:
    async with aiohttp.ClientSession() as session:
        # nothing listens on port 9 of loopback
        refused = await post_once(
            session, "http://127.0.0.1:9/h", b"{}", {}, 2.0, lambda: 0.0, allow_private=True
        )
        dns = await post_once(session, "http://no-such-host.invalid/h", b"{}", {}, 2.0, lambda: 0.0)
    assert refused.error == "connection_refused"
    assert dns.error == "dns"
    assert error_class(TimeoutError()) == "timeout"
    assert error_class(DestinationRefused("x")) == "destination_refused"
    assert error_class(aiohttp.ClientSSLError.__new__(aiohttp.ClientSSLError)) == "tls"
