"""Signing keys without HTTP: the private half leaves once and is kept nowhere."""

from __future__ import annotations

import pytest

from control.domain.errors import NotFoundError
from control.domain.signing_keys import SigningKeys, signing_key_view
from control.outbox import Outbox
from control.store.base import Store


async def test_the_private_key_is_returned_once_and_never_stored(
    store: Store, outbox: Outbox
) -> None:
    keys = SigningKeys(outbox)
    rec, private = await keys.create()
    assert private.startswith("-----BEGIN PRIVATE KEY-----")
    stored = await keys.get(rec.id)
    assert private not in str(stored.data) and "PRIVATE" not in str(stored.data)
    view = signing_key_view(stored)
    assert view["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert "private_key" not in view
    await keys.delete(rec.id)
    with pytest.raises(NotFoundError):
        await keys.get(rec.id)
    with pytest.raises(NotFoundError):
        await keys.delete(rec.id)
