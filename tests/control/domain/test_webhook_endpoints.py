"""Webhook endpoints without HTTP: URLs checked for form and destination, the
secret rotated with a grace period for the previous one."""

from __future__ import annotations

import pytest

from control.domain.errors import InvalidInput, NotFoundError
from control.domain.webhook_endpoints import (
    ROTATION_GRACE_S,
    DestinationRefused,
    WebhookEndpoints,
    endpoint_view,
)
from control.outbox import Outbox
from control.store.base import Store

secrets = iter(f"whsec_{n}" for n in range(100))


async def private_refused(url: str) -> str | None:
    return "it resolves to 10.0.0.7, a private address" if "internal" in url else None


@pytest.fixture
def endpoints(outbox: Outbox) -> WebhookEndpoints:
    return WebhookEndpoints(
        outbox, new_secret=lambda: next(secrets), check_destination=private_refused
    )


async def test_create_shows_the_secret_once(endpoints: WebhookEndpoints) -> None:
    rec = await endpoints.create(
        url="https://hooks.example.com/in", events=["asset.*"], description=None, status="enabled"
    )
    assert endpoint_view(rec, secret=True)["secret"].startswith("whsec_")
    assert "secret" not in endpoint_view(await endpoints.get(rec.id))


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "https://", "http://host:0/", "http://[::1/", "/relative"]
)
async def test_malformed_urls_are_invalid_input(endpoints: WebhookEndpoints, url: str) -> None:
    with pytest.raises(InvalidInput) as err:
        await endpoints.create(url=url, events=[], description=None, status="enabled")
    assert err.value.param == "url"


async def test_refused_destinations_at_creation_and_on_update(
    endpoints: WebhookEndpoints,
) -> None:
    with pytest.raises(DestinationRefused) as err:
        await endpoints.create(
            url="http://internal.corp/hook", events=[], description=None, status="enabled"
        )
    assert err.value.error_type == "destination_refused" and "10.0.0.7" in err.value.message
    rec = await endpoints.create(
        url="https://ok.example.com/", events=[], description=None, status="enabled"
    )
    with pytest.raises(DestinationRefused):
        await endpoints.update(rec.id, {"url": "http://internal.corp/hook"})
    assert (await endpoints.get(rec.id)).data["url"] == "https://ok.example.com/"


async def test_allowing_private_receivers_skips_the_destination_check(outbox: Outbox) -> None:
    open_endpoints = WebhookEndpoints(outbox, new_secret=lambda: "whsec_x", check_destination=None)
    rec = await open_endpoints.create(
        url="http://internal.corp/hook", events=[], description=None, status="enabled"
    )
    assert rec.data["url"] == "http://internal.corp/hook"


async def test_rotation_keeps_the_previous_secret_for_the_grace_period(
    endpoints: WebhookEndpoints, store: Store
) -> None:
    rec = await endpoints.create(
        url="https://hooks.example.com/in", events=[], description=None, status="enabled"
    )
    old = rec.data["secret"]
    rotated = await endpoints.rotate_secret(rec.id)
    assert rotated.data["secret"] != old and rotated.data["previous_secret"] == old
    grace = rotated.data["previous_secret_expires_at"] - rotated.data["secret_rotated_at"]
    assert grace == pytest.approx(ROTATION_GRACE_S)
    await endpoints.delete(rec.id)
    with pytest.raises(NotFoundError):
        await endpoints.rotate_secret(rec.id)
