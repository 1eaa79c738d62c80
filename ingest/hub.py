"""The live hub: where publishers write media and outputs read it.

Owns the write side (`Publication`), the per-live-stream fan-out point (`Stream`)
and the read side (`StreamReader`), after mediamtx's publisher → stream → readers.

Rules that everything else relies on:

* `Publication.write()` is synchronous and never waits for a reader.
* Every `StreamReader` has a bounded buffer (unless its consumer takes items
  inline, `StreamReader.consume_inline`, and so never lags). A reader that falls behind drops
  media until the next video keyframe (or the next audio unit for audio-only
  streams) and counts what it dropped; control items are never dropped.
* A `Stream` outlives its publishers: a reconnect (or a takeover by a second
  publisher on the same key) starts a new *generation* on the same stream, so
  readers such as the segmenter continue one playlist with a discontinuity.
* Publishers may batch their input (the RTMP driver reads ~0.1 s at a time)
  unless a reader subscribed as `prompt` (WebRTC viewers, for whom every
  frame is due at once): `Stream.wants_prompt` says so.
* All methods are called on the event loop thread. Code that produces media in
  a worker thread (decoders) hands it over with `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ingest.health import IngestHealth
from ingest.media import MediaUnit, TrackInfo, TrackKind, describe_tracks

__all__ = [
    "Hub",
    "HubObserver",
    "MediaUnit",
    "Publication",
    "PublicationEnded",
    "PublicationStarted",
    "ReaderClosed",
    "Stream",
    "StreamReader",
    "TrackInfo",
    "TrackKind",
    "describe_tracks",
]


@dataclass(frozen=True, slots=True)
class PublicationStarted:
    """A publisher (new, reconnected or taking over) begins a generation."""

    generation: int
    tracks: tuple[TrackInfo, ...]
    source: str
    """"rtmp" | "whip" | "room" | ..."""
    started_at: float


@dataclass(frozen=True, slots=True)
class PublicationEnded:
    generation: int
    reason: str


ReaderItem = MediaUnit | PublicationStarted | PublicationEnded


class StreamReader:
    """A bounded, lossy-at-keyframes view of one stream, read with `async for`."""

    def __init__(self, stream: Stream, max_units: int, name: str, prompt: bool = False) -> None:
        self._stream = stream
        self._max_units = max_units
        self.name = name
        self.prompt = prompt
        """This reader needs every unit as soon as it arrives (see `Stream.wants_prompt`)."""
        self._items: deque[ReaderItem] = deque()
        self._media_count = 0
        self._waiting_keyframe = False
        # One future per waiting get(), resolved by _push/close. Cheaper than an
        # asyncio.Event, whose set() is a method call on every unit pushed.
        self._waiters: list[asyncio.Future[None]] = []
        self._inline: Callable[[ReaderItem], None] | None = None
        self._closed = False
        self.dropped = 0
        """Media units this reader lost because it fell behind."""

    # -- write side, called by Stream -------------------------------------

    def _push(self, item: ReaderItem) -> None:
        if self._closed:
            return
        inline = self._inline
        if inline is not None and not self._items:
            inline(item)
            return
        if isinstance(item, MediaUnit):
            if self._waiting_keyframe:
                if not self._resumes_at(item):
                    self.dropped += 1
                    return
                self._waiting_keyframe = False
            if self._media_count >= self._max_units:
                self._drop_media()
                if not self._resumes_at(item):
                    self._waiting_keyframe = True
                    self.dropped += 1
                    return
            self._media_count += 1
        self._items.append(item)
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        self._waiters = []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def consume_inline(self, consumer: Callable[[ReaderItem], None] | None) -> None:
        """Hand items to ``consumer`` synchronously as they are written, instead of
        queueing them for ``get()`` (``None`` goes back to queueing).

        For a consumer whose work is cheap inline work, such as the CMAF
        segmenter (remux): it saves a task wake-up per read. Items queued
        before stay queued, and items keep queueing until the queue is drained,
        so the order holds. ``consumer`` must not raise: it runs inside
        ``Publication.write()``, in the publisher's driver.
        """
        self._inline = consumer

    def _resumes_at(self, unit: MediaUnit) -> bool:
        if self._stream.has_video:
            return unit.kind is TrackKind.VIDEO and unit.keyframe
        return True

    def _drop_media(self) -> None:
        kept: deque[ReaderItem] = deque()
        for it in self._items:
            if isinstance(it, MediaUnit):
                self.dropped += 1
            else:
                kept.append(it)
        self._items = kept
        self._media_count = 0

    # -- read side ----------------------------------------------------------

    def get_nowait(self) -> ReaderItem | None:
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, MediaUnit):
            self._media_count -= 1
        return item

    async def get(self) -> ReaderItem:
        """The next item; raises `ReaderClosed` once closed and drained."""
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            if self._closed:
                raise ReaderClosed(self.name)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:  # cancelled before it was woken
                    self._waiters.remove(fut)

    def __aiter__(self) -> AsyncIterator[ReaderItem]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ReaderItem]:
        while True:
            try:
                yield await self.get()
            except ReaderClosed:
                return

    @property
    def pending(self) -> int:
        return self._media_count

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        self._stream._remove_reader(self)


class ReaderClosed(Exception):
    pass


class Publication:
    """The write side of one publisher's generation on a stream."""

    def __init__(
        self,
        stream: Stream,
        generation: int,
        tracks: tuple[TrackInfo, ...],
        source: str,
        on_close: Callable[[str], None] | None,
    ) -> None:
        self.stream = stream
        self.generation = generation
        self.tracks = tracks
        self.source = source
        self._on_close = on_close
        self.closed = False
        self.close_reason = ""
        self.units_written = 0
        self.bytes_written = 0
        self.started_at = time.time()
        self.last_write_at = self.started_at
        self.health = IngestHealth(tracks, self.started_at)
        """What the publisher sends, measured (`ingest.health`)."""

    def write(self, unit: MediaUnit) -> None:
        """Fan the unit out to every reader. Never blocks, never awaits."""
        if self.closed:
            return
        self.units_written += 1
        self.bytes_written += len(unit.data)
        self.last_write_at = unit.wallclock
        self.health.observe(unit)
        self.stream._fan_out(unit)

    def close(self, reason: str = "ended") -> None:
        """End this generation. Called by the publisher's driver, or by the hub
        on takeover/kick (then `on_close` tells the driver to drop its peer)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.stream._publication_closed(self, reason)
        if self._on_close is not None:
            self._on_close(reason)


class HubObserver:
    """Receives publish start/stop for every stream (control's lifecycle)."""

    def publication_started(self, stream: Stream, publication: Publication) -> None:
        pass

    def publication_ended(self, stream: Stream, publication: Publication, reason: str) -> None:
        pass


class Stream:
    """One live stream's fan-out point; exists while it has a publisher or readers."""

    def __init__(self, hub: Hub, stream_id: str) -> None:
        self.hub = hub
        self.id = stream_id
        self.publication: Publication | None = None
        self.generation = 0
        self._readers: list[StreamReader] = []
        self._gop: list[MediaUnit] = []
        self._gop_bytes = 0

    @property
    def tracks(self) -> tuple[TrackInfo, ...]:
        return self.publication.tracks if self.publication else ()

    @property
    def has_video(self) -> bool:
        return any(t.kind is TrackKind.VIDEO for t in self.tracks)

    @property
    def live(self) -> bool:
        return self.publication is not None

    @property
    def readers(self) -> tuple[StreamReader, ...]:
        return tuple(self._readers)

    @property
    def wants_prompt(self) -> bool:
        """A `prompt` reader is subscribed: publishers should not hold input back."""
        return any(r.prompt for r in self._readers)

    def subscribe(
        self, name: str, max_units: int = 512, *, from_keyframe: bool = False, prompt: bool = False
    ) -> StreamReader:
        """A new reader. With `from_keyframe`, it starts with the cached current GOP
        (so a new viewer decodes at once) instead of waiting for the next keyframe.
        A `prompt` reader (real-time viewers) asks publishers not to batch input
        while it is subscribed; segmenters and recorders do not mind a batch."""
        reader = StreamReader(self, max_units, name, prompt)
        self._readers.append(reader)
        if self.publication is not None:
            reader._push(
                PublicationStarted(
                    self.generation,
                    self.publication.tracks,
                    self.publication.source,
                    self.publication.started_at,
                )
            )
            if from_keyframe:
                for unit in self._gop:
                    reader._push(unit)
        return reader

    def latest_gop(self) -> tuple[MediaUnit, ...]:
        return tuple(self._gop)

    def _remove_reader(self, reader: StreamReader) -> None:
        if reader in self._readers:
            self._readers.remove(reader)
        self.hub._maybe_forget(self)

    def _fan_out(self, unit: MediaUnit) -> None:
        self._cache_gop(unit)
        for reader in self._readers:
            reader._push(unit)

    # The GOP cache is bounded: a publisher that never sends a keyframe must not
    # grow it without end.
    _GOP_MAX_BYTES = 32 * 1024 * 1024

    def _cache_gop(self, unit: MediaUnit) -> None:
        if unit.kind is TrackKind.VIDEO and unit.keyframe:
            self._gop.clear()
            self._gop_bytes = 0
        elif not self._gop and self.has_video:
            return
        if self._gop_bytes + len(unit.data) > self._GOP_MAX_BYTES:
            self._gop.clear()
            self._gop_bytes = 0
            return
        self._gop.append(unit)
        self._gop_bytes += len(unit.data)

    def _start(self, publication: Publication) -> None:
        self.publication = publication
        self._gop.clear()
        self._gop_bytes = 0
        started = PublicationStarted(
            publication.generation,
            publication.tracks,
            publication.source,
            publication.started_at,
        )
        for reader in self._readers:
            reader._push(started)

    def _publication_closed(self, publication: Publication, reason: str) -> None:
        if self.publication is not publication:
            return
        self.publication = None
        self._gop.clear()
        self._gop_bytes = 0
        ended = PublicationEnded(publication.generation, reason)
        for reader in self._readers:
            reader._push(ended)
        self.hub._publication_ended(self, publication, reason)


class Hub:
    """All live streams of this process, by live stream id."""

    def __init__(self, observer: HubObserver | None = None) -> None:
        self.observer = observer or HubObserver()
        self._streams: dict[str, Stream] = {}

    def get(self, stream_id: str) -> Stream | None:
        return self._streams.get(stream_id)

    def stream(self, stream_id: str) -> Stream:
        """The stream, created empty if nobody publishes or reads it yet."""
        s = self._streams.get(stream_id)
        if s is None:
            s = self._streams[stream_id] = Stream(self, stream_id)
        return s

    @property
    def streams(self) -> tuple[Stream, ...]:
        return tuple(self._streams.values())

    def publish(
        self,
        stream_id: str,
        tracks: tuple[TrackInfo, ...],
        *,
        source: str,
        on_close: Callable[[str], None] | None = None,
    ) -> Publication:
        """Start a generation. A live publisher on the same stream is taken over:
        its publication is closed with reason "takeover" (its driver drops it)."""
        stream = self.stream(stream_id)
        if stream.publication is not None:
            stream.publication.close("takeover")
        stream.generation += 1
        pub = Publication(stream, stream.generation, tracks, source, on_close)
        stream._start(pub)
        self.observer.publication_started(stream, pub)
        return pub

    def kick(self, stream_id: str, reason: str = "kicked") -> bool:
        """Close the live publication (stream key reset, disable, complete)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.publication is None:
            return False
        stream.publication.close(reason)
        return True

    def _publication_ended(self, stream: Stream, pub: Publication, reason: str) -> None:
        self.observer.publication_ended(stream, pub, reason)
        self._maybe_forget(stream)

    def _maybe_forget(self, stream: Stream) -> None:
        if stream.publication is None and not stream._readers:
            self._streams.pop(stream.id, None)
