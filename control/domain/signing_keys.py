"""Signing keys for signed playback: RSA-2048 pairs whose private half (PEM) is
handed out once, at creation; the store keeps only the public half
(collection ``signing_keys``, data ``{public_key, algorithm}``). Playback
verifies tokens with ``kid`` = the signing key id (`control.domain.playback`)."""

from __future__ import annotations

import asyncio
from typing import Any

from control.domain.api_keys import rfc3339
from control.domain.errors import NotFoundError
from control.domain.records import Collection
from control.ids import new_id
from control.outbox import Outbox
from control.store.base import Record
from vod.tokens import generate_signing_key

SIGNING_KEY_RECORDS = Collection("signing_keys")
SIGNING_KEYS = SIGNING_KEY_RECORDS.name


def signing_key_view(r: Record) -> dict[str, Any]:
    return {
        "id": r.id,
        "object": "signing_key",
        "algorithm": r.data.get("algorithm", "RS256"),
        "public_key": r.data["public_key"],
        "created_at": rfc3339(r.created_at),
    }


class SigningKeys:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.store = outbox.store

    async def create(self) -> tuple[Record, str]:
        """A new key: its record, and the private key PEM (not kept anywhere)."""
        private, public = await asyncio.to_thread(generate_signing_key)
        key_id = new_id("sigk")
        data = {"public_key": public, "algorithm": "RS256"}
        await self.outbox.commit([SIGNING_KEY_RECORDS.put(key_id, data)])
        return await self.get(key_id), private

    async def get(self, key_id: str) -> Record:
        rec = await self.store.get(SIGNING_KEYS, key_id)
        if rec is None:
            raise NotFoundError("signing key", key_id)
        return rec

    async def delete(self, key_id: str) -> None:
        await self.get(key_id)
        await self.outbox.commit([SIGNING_KEY_RECORDS.delete(key_id)])
