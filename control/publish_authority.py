"""`StoreAuthority`: ingest's PublishAuthority answered from the Store.

A stream key maps to a live stream through the unique index ``stream_key``;
an unknown key is denied with "bad_key", a disabled stream with "disabled".
"""

from __future__ import annotations

import logging

from control.domain.live_streams import (
    COLLECTION,
    STREAM_KEY_INDEX,
    STREAM_KEY_PREFIX,
    LiveStreamStatus,
)
from control.store.base import Store
from ingest.ports import PublishDenied, PublishGrant

log = logging.getLogger(__name__)


class StoreAuthority:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def authorize_publish(
        self, stream_key: str, *, protocol: str, remote: str
    ) -> PublishGrant:
        if not stream_key.startswith(STREAM_KEY_PREFIX) or len(stream_key) > 200:
            raise PublishDenied("bad_key", "unknown stream key")
        record = await self.store.get_by(COLLECTION, STREAM_KEY_INDEX, stream_key)
        if record is None:
            log.info("publish denied: bad key", extra={"protocol": protocol, "remote": remote})
            raise PublishDenied("bad_key", "unknown stream key")
        if record.data.get("status") == LiveStreamStatus.DISABLED.value:
            log.info(
                "publish denied: disabled",
                extra={"protocol": protocol, "remote": remote, "live_stream_id": record.id},
            )
            raise PublishDenied("disabled", "this live stream is disabled")
        return PublishGrant(live_stream_id=record.id)
