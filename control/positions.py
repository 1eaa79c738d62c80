"""Where each live playlist is, shared through the store, so that a node taking
a stream over (its origin was SIGKILLed, the encoder reconnected elsewhere)
continues the same playlist: the next media sequence number after the last
segment any viewer saw (or saw parts of), with a discontinuity, and the
discontinuity sequence going on from there. Players watching through the failover see one
discontinuity, not a playlist that went back to 0.

``hls_position:<stream id>`` = ``"<next msn> <discontinuity sequence of the
last segment>"``, written by `PositionKeeper` (a segment sink beside the
playlist) as every segment opens (its first part), kept for `POSITION_TTL_S` after the last one
and forgotten when the broadcast ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from control.store.base import Store
from realtime.segments import FIRST_MSN, Continuation, InitSegment, Part, Segment

log = logging.getLogger(__name__)

POSITION_TTL_S = 300.0
"""How long a position outlives its last segment (longer than any reconnect window
a failover has to fit in)."""


def position_key(stream_id: str) -> str:
    return f"hls_position:{stream_id}"


async def load_position(store: Store, stream_id: str) -> Continuation | None:
    value = await store.kv_get(position_key(stream_id))
    if not value:
        return None
    try:
        msn, dseq = (int(v) for v in value.split())
    except ValueError:
        return None
    return Continuation(next_msn=msn, discontinuity_sequence=dseq)


async def forget_position(store: Store, stream_id: str) -> None:
    await store.kv_delete(position_key(stream_id))


class PositionKeeper:
    """A `SegmentSink` that writes the playlist's position after each segment
    (the latest only: one write in flight, the newest position after it)."""

    def __init__(
        self,
        store: Store,
        stream_id: str,
        start: Continuation | None,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self.store = store
        self.stream_id = stream_id
        self.next_msn = start.next_msn if start is not None else FIRST_MSN
        self.discontinuity_sequence = start.discontinuity_sequence if start is not None else 0
        self._spawn = spawn
        self._writing = False
        self._dirty = False

    def on_init(self, init: InitSegment) -> None:
        pass

    def on_part(self, part: Part) -> None:
        # Written as a segment opens, not when it closes: viewers fetch its parts
        # from the first one on, so a node that takes over after a SIGKILL
        # mid-segment must not number a segment of other media the same.
        if part.index != 0:
            return
        if part.discontinuity:
            self.discontinuity_sequence += 1
        self.next_msn = part.msn + 1
        self._save()

    def on_segment(self, segment: Segment) -> None:
        pass

    def _save(self) -> None:
        if self._writing:
            self._dirty = True
            return
        self._writing = True
        self._spawn(self._write())

    def on_end(self) -> None:
        pass

    async def _write(self) -> None:
        try:
            while True:
                self._dirty = False
                value = f"{self.next_msn} {self.discontinuity_sequence}"
                try:
                    await self.store.kv_set(
                        position_key(self.stream_id), value, ttl_s=POSITION_TTL_S
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the next segment writes it again
                    log.warning("playlist position of %s not saved (%r)", self.stream_id, exc)
                if not self._dirty:
                    return
        finally:
            self._writing = False
