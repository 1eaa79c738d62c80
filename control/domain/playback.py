"""Playback policy: what a playback id plays, and whether this caller may.

A playback id (record ``playback_ids/<id>``, see `control.domain.live_streams`)
names a live stream, a room (its recorded composite plays like a live stream)
or an asset, with a policy: ``public``, or ``signed`` — then every request
carries an RS256 JWT (``?token=``, header ``kid`` naming a signing key)
whose claims say ``sub`` = the playback id, ``aud`` (``v`` video, ``t``
thumbnail, ``d`` download) and ``exp`` (capped at ``max_token_ttl_s`` from
now). `PlaybackPolicy.resolve` answers with a `Target` or raises
`NotFoundError` / `Forbidden`; the reason a token was refused goes to the log
only (telling the caller which check failed helps whoever forges tokens).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import jwt

from control.domain.assets import COLLECTION as ASSETS
from control.domain.errors import Forbidden, NotFoundError
from control.domain.live_streams import COLLECTION as LIVE_STREAMS
from control.domain.live_streams import PLAYBACK_IDS
from control.domain.rooms import ROOMS_COLLECTION
from control.domain.signing_keys import SIGNING_KEYS
from control.store.base import Record, Store
from vod.tokens import InvalidToken, verify_playback_token

log = logging.getLogger(__name__)

PLAYBACK_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
"""What a playback id looks like: anything else is not looked up at all."""


@dataclass(frozen=True, slots=True)
class Target:
    playback_id: str
    policy: str
    live_stream: Record | None
    """The live stream (or room) record whose hub stream plays live; None for assets."""
    asset: Record | None
    expires: float = math.inf
    """When the playback token that granted this runs out (Unix time; inf: public)."""


class PlaybackPolicy:
    def __init__(self, store: Store, *, max_token_ttl_s: float | None = None) -> None:
        self.store = store
        self.max_token_ttl_s = max_token_ttl_s
        """The longest remaining lifetime a playback token may claim."""

    async def resolve(self, playback_id: str, token: str, aud: str) -> Target:
        """What `playback_id` plays for a request of audience `aud` carrying `token`."""
        rec = await self._playback_id(playback_id)
        policy = rec.data.get("policy", "public")
        expires = math.inf
        if policy == "signed":
            expires = await self.check_token(token, playback_id, aud)
        obj_type, obj_id = rec.data.get("object_type"), rec.data.get("object_id", "")
        if obj_type in ("live_stream", "room"):
            # a room's playback id plays its recorded composite like a live stream
            ls = await self.store.get(
                LIVE_STREAMS if obj_type == "live_stream" else ROOMS_COLLECTION, obj_id
            )
            if ls is None:
                raise NotFoundError("playback id")
            return Target(playback_id, policy, ls, None, expires)
        asset = await self.store.get(ASSETS, obj_id)
        if asset is None:
            raise NotFoundError("playback id")
        return Target(playback_id, policy, None, asset, expires)

    async def live_stream_id(self, playback_id: str, token: str | None) -> str:
        """The hub stream a playback id plays live (WHEP), after the token check."""
        rec = await self._playback_id(playback_id)
        obj_type = rec.data.get("object_type")
        if obj_type not in ("live_stream", "room"):
            raise NotFoundError("live stream playback id")
        if rec.data.get("policy") == "signed":
            await self.check_token(token or "", playback_id, "v")
        if obj_type == "room":
            # a recorded room's composite is in the hub under its broadcast stream id
            room = await self.store.get(ROOMS_COLLECTION, str(rec.data["object_id"]))
            if room is None:
                raise NotFoundError("live stream playback id")
            return str(room.data.get("broadcast_stream_id") or room.id)
        return str(rec.data["object_id"])

    async def check_token(self, token: str, playback_id: str, aud: str) -> float:
        """The token's expiry (Unix time), or `Forbidden`."""
        kid = ""
        try:
            kid = str(jwt.get_unverified_header(token).get("kid", "")) if token else ""
        except jwt.PyJWTError:
            pass
        key = await self.store.get(SIGNING_KEYS, kid) if kid and len(kid) < 128 else None
        public = key.data.get("public_key") if key is not None else None
        try:
            claims = verify_playback_token(
                token,
                playback_id=playback_id,
                aud=aud,
                public_keys=lambda k: public if k == kid else None,
                max_ttl_s=self.max_token_ttl_s,
            )
        except InvalidToken as exc:
            log.info(
                "playback token refused",
                extra={"playback_id": playback_id, "aud": aud, "reason": exc.reason},
            )
            raise Forbidden() from None
        return float(claims["exp"])

    async def _playback_id(self, playback_id: str) -> Record:
        if not PLAYBACK_ID.match(playback_id):
            raise NotFoundError("playback id")
        rec = await self.store.get(PLAYBACK_IDS, playback_id)
        if rec is None:
            raise NotFoundError("playback id")
        return rec
