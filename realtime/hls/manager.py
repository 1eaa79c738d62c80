"""Starts and keeps one Segmenter + LiveHls per live stream.

Owns `LiveHlsManager`. Whoever owns a broadcast (the control plane's live
lifecycle, or a room's recording) calls `serve(stream, output)` when a
publication starts, with the stream's `LiveOutput`: its latency mode, the extra
sinks (the recorder) and who to tell when a generation becomes playable. Used
alone (tests, benchmarks) the manager is the hub's observer itself, and
`publication_started` serves every stream with the output built from its
constructor arguments.

On the first publication of a stream it subscribes a reader, builds a
`LiveHls` and runs a `Segmenter` task. Reconnects and takeovers reach the same
segmenter through the same reader (new generation -> discontinuity), so the
playlist and its media sequence numbers continue. The broadcast is over only
when the owner calls `finish(stream_id)` (the lifecycle's reconnect window
expired, or the stream was completed): the reader closes, the segmenter
flushes, the sinks get `on_end()`, the playlist gets EXT-X-ENDLIST and is kept
for `linger_s` so players see the end, then forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ingest.hub import HubObserver, Publication, Stream, StreamReader
from realtime.hls.live import LiveHls
from realtime.segmenter import LATENCY_MODES, Segmenter
from realtime.segments import Continuation, Part, SegmentSink, SegmentSource

log = logging.getLogger(__name__)

READER_MAX_UNITS = 2048


@dataclass(frozen=True, slots=True)
class LiveOutput:
    """How one stream's LL-HLS is served, given by the broadcast's owner."""

    latency_mode: str = "low"
    sinks: Sequence[SegmentSink] = ()
    """Extra segment sinks beside the playlist (the recorder)."""
    on_playable: Callable[[int], None] | None = None
    """Called with the generation when its first part exists."""
    resume: Continuation | None = None
    """Continue the playlist another node was serving (a failover)."""
    cold: SegmentSource | None = None
    """Where segments past the live edge are read back from (the recording, or
    a `DiskWindow` among `sinks`); None keeps the whole window in memory."""


@dataclass(slots=True)
class _Entry:
    live: LiveHls
    reader: StreamReader
    segmenter: Segmenter
    task: asyncio.Task[None]
    forget: asyncio.TimerHandle | None = None


class LiveHlsManager(HubObserver):
    """One LiveHls per live stream id, alive across reconnects until `finish()`."""

    def __init__(
        self,
        *,
        sink_factory: Callable[[str], Sequence[SegmentSink]] | None = None,
        on_playable: Callable[[str, int], None] | None = None,
        linger_s: float = 30.0,
    ) -> None:
        """`sink_factory` and `on_playable` serve the manager as a hub observer of
        its own (`publication_started`); an owner calling `serve` passes them per
        stream instead."""
        self._sink_factory = sink_factory
        self._on_playable = on_playable
        self.linger_s = linger_s
        self._entries: dict[str, _Entry] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    # -- hub observer hooks (the manager used alone) ------------------------------

    def publication_started(self, stream: Stream, publication: Publication) -> None:
        if self._serving(stream.id):
            return  # reconnect/takeover: the running segmenter sees the new generation
        sinks: Sequence[SegmentSink] = ()
        if self._sink_factory is not None:
            try:
                sinks = tuple(self._sink_factory(stream.id))
            except Exception:
                log.exception("sink_factory failed for %s", stream.id)
        on_playable = self._on_playable
        self.serve(
            stream,
            LiveOutput(
                sinks=sinks,
                on_playable=(lambda g: on_playable(stream.id, g)) if on_playable else None,
            ),
        )

    def publication_ended(self, stream: Stream, publication: Publication, reason: str) -> None:
        # The segmenter flushes on PublicationEnded; the playlist stays up for
        # viewers until finish() (reconnect window).
        pass

    # -- control ------------------------------------------------------------------

    def serve(self, stream: Stream, output: LiveOutput) -> LiveHls:
        """A publication of `stream` started: keep serving it through a running
        segmenter (reconnect, takeover: it sees the new generation), or start one
        with `output`."""
        entry = self._entries.get(stream.id)
        if entry is not None and self._serving(stream.id):
            return entry.live
        if entry is not None:
            self._drop(stream.id)  # a finished broadcast: a new one starts from FIRST_MSN
        mode = output.latency_mode if output.latency_mode in LATENCY_MODES else "low"
        live = LiveHls(
            stream.id,
            latency_mode=mode,
            extra_sinks=tuple(output.sinks),
            resume=output.resume,
            cold=output.cold,
        )
        if output.on_playable is not None:
            live.listeners.append(self._playable_listener(stream.id, output.on_playable))
        reader = stream.subscribe("hls", READER_MAX_UNITS, from_keyframe=True)
        part_s, seg_s = LATENCY_MODES[mode]
        segmenter = Segmenter(
            reader,
            live,
            part_target_s=part_s,
            segment_target_s=seg_s,
            start_msn=output.resume.next_msn if output.resume is not None else None,
        )
        task = asyncio.get_running_loop().create_task(
            segmenter.run(), name=f"segmenter:{stream.id}"
        )
        self._entries[stream.id] = _Entry(live, reader, segmenter, task)
        return live

    def _serving(self, stream_id: str) -> bool:
        """A segmenter runs for the stream and its broadcast is not over."""
        entry = self._entries.get(stream_id)
        return (
            entry is not None
            and entry.forget is None
            and not entry.task.done()
            and not entry.live.ended
        )

    @staticmethod
    def _playable_listener(
        stream_id: str, on_playable: Callable[[int], None]
    ) -> Callable[[Part], None]:
        seen: set[int] = set()

        def listener(part: Part) -> None:
            if part.generation in seen:
                return
            seen.add(part.generation)
            try:
                on_playable(part.generation)
            except Exception:
                log.exception("on_playable failed for %s", stream_id)

        return listener

    def get(self, stream_id: str) -> LiveHls | None:
        entry = self._entries.get(stream_id)
        return entry.live if entry is not None else None

    def finish(self, stream_id: str) -> None:
        """The broadcast is over: flush, end the playlist (ENDLIST), forget it after linger_s."""
        entry = self._entries.get(stream_id)
        if entry is None or entry.forget is not None:
            return
        entry.reader.close()  # the segmenter drains, flushes and calls on_end()
        if entry.task.done():
            entry.segmenter.close()
        loop = asyncio.get_running_loop()
        entry.forget = loop.call_later(self.linger_s, self._forget, stream_id, entry)

    def _forget(self, stream_id: str, entry: _Entry) -> None:
        if self._entries.get(stream_id) is entry:
            del self._entries[stream_id]

    def _drop(self, stream_id: str) -> None:
        entry = self._entries.pop(stream_id, None)
        if entry is None:
            return
        if entry.forget is not None:
            entry.forget.cancel()
        # Closing the reader lets the segmenter drain, flush and end its sinks
        # (the recorder must see on_end); it is awaited on close().
        entry.reader.close()
        if not entry.task.done():
            self._retiring.add(entry.task)
            entry.task.add_done_callback(self._retiring.discard)

    @property
    def stream_ids(self) -> tuple[str, ...]:
        return tuple(self._entries)

    async def close(self) -> None:
        """Stop every segmenter (shutdown): sinks get on_end()."""
        entries = list(self._entries.values())
        self._entries.clear()
        for e in entries:
            if e.forget is not None:
                e.forget.cancel()
            e.reader.close()
        for task in [e.task for e in entries] + list(self._retiring):
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 2.0)
