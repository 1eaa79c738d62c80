"""How many sockets one process accepts: per client address and in all.

One address opening thousands of idle connections must not take the file
descriptors that HTTP, RTMP and the store share, and the process must refuse
new work *before* `accept()` and SQLite start failing at the descriptor limit.
`ConnectionLimits` is shared by the HTTP listener (the playback edge) and the
RTMP server; each accepted transport is admitted or refused here and counted
until it closes (counted by the transports themselves, so a connection handed
from one protocol to another is still counted once).

`raise_fd_limit()` lifts the soft RLIMIT_NOFILE to the hard limit at start
(often 1024 → 1M), and `default_max_connections()` leaves room under it for
files, the store and outgoing connections.
"""

from __future__ import annotations

import asyncio
import resource
from collections import defaultdict

from ingest.addresses import client_subject

_FD_RESERVE = 256
"""Descriptors kept for what is not a client connection (files, store, peers)."""


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(64, int(soft * 0.8) - _FD_RESERVE)


class ConnectionLimits:
    """Admission of accepted sockets, shared by a node's listeners:
    `admit(transport, remote, listener=, per_client=)` says None (in) or why not:
    ``"client"`` (this address holds its share of that listener) or ``"full"``
    (the process is near its descriptor limit: shed)."""

    def __init__(self, *, total: int) -> None:
        self.total = total
        self._held: defaultdict[tuple[str, str], set[asyncio.BaseTransport]] = defaultdict(set)
        self._count = 0
        self.refused = {"client": 0, "full": 0}

    def _prune(self, key: tuple[str, str]) -> None:
        held = self._held.get(key)
        if held is None:
            return
        closed = {t for t in held if t.is_closing()}
        if closed:
            held -= closed
            self._count -= len(closed)
        if not held:
            del self._held[key]

    def sweep(self) -> None:
        """Forget closed transports (a connection handed to another protocol is
        counted until its transport closes)."""
        for key in list(self._held):
            self._prune(key)

    def admit(
        self, transport: asyncio.BaseTransport, remote: str, *, listener: str, per_client: int
    ) -> str | None:
        key = (listener, client_subject(remote))
        self._prune(key)
        if self._count >= self.total:
            self.sweep()
        if self._count >= self.total:
            self.refused["full"] += 1
            return "full"
        held = self._held[key]
        if len(held) >= per_client:
            self.refused["client"] += 1
            return "client"
        held.add(transport)
        self._count += 1
        return None

    def release(self, transport: asyncio.BaseTransport, remote: str, *, listener: str) -> None:
        key = (listener, client_subject(remote))
        held = self._held.get(key)
        if held is not None and transport in held:
            held.discard(transport)
            self._count -= 1
            if not held:
                del self._held[key]

    def __len__(self) -> int:
        return self._count
