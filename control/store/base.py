"""The Store contract: every piece of durable state goes through this protocol.

Two implementations honour it (SQLite by default, Redis when configured) and
one contract test suite runs against both. The model is deliberately small:

* **Records**: JSON documents in named collections, with a version for
  compare-and-set, optional unique indexes (stream key → live stream, key hash
  → API key) and optional tags for filtered listing (assets of a live stream).
* **commit()**: a batch of puts/deletes plus the events they cause, applied
  atomically — the transactional outbox. A state change and its event are
  never separated.
* **Events**: a durable, totally ordered log with a global cursor and a
  per-resource `sequence`.
* **Queues**: leased tasks (webhook deliveries, jobs) so that two nodes never
  run the same one; an expired lease makes the task due again (watchdog).
* **KV with TTL** (idempotency records), **token buckets** (rate limits) and
  named **leases** (singleton work such as a stream's reconnect timer).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class StoreError(Exception):
    pass


class Conflict(StoreError):
    """A compare-and-set failed (version moved) or a unique value is taken."""


class NotFound(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class Record:
    collection: str
    id: str
    version: int
    created_at: float
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Put:
    """Create (expect_version=0) or replace (expect_version=current) a record.
    expect_version=None writes unconditionally."""

    collection: str
    id: str
    data: dict[str, Any]
    expect_version: int | None = 0
    unique: Mapping[str, str] = field(default_factory=dict)
    """index name → value; the value must not be held by another record. The
    record's unique values are replaced by exactly these on every put."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """field → value pairs that `list(where=...)` can filter on."""


@dataclass(frozen=True, slots=True)
class Delete:
    collection: str
    id: str
    expect_version: int | None = None


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Add a task to a queue in the same transaction as the rest of a commit (a
    record and the job that processes it never part). Like `Store.enqueue`, a
    task with that id already queued is left as it is."""

    queue: str
    id: str
    payload: dict[str, Any]
    run_at: float | None = None
    """None: due now (the commit's time)."""


Op = Put | Delete | Enqueue


@dataclass(frozen=True, slots=True)
class EventDraft:
    type: str
    """e.g. "live_stream.connected"."""
    resource_id: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    cursor: int
    """Global position in the log, strictly increasing; `events_after(cursor)`."""
    id: str
    type: str
    resource_id: str
    sequence: int
    """Increasing per resource_id, from 1."""
    created_at: float
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    data: list[Record]
    has_more: bool


@dataclass(frozen=True, slots=True)
class Task:
    queue: str
    id: str
    payload: dict[str, Any]
    attempts: int
    """How many times it was leased before this lease (0 on the first run)."""
    run_at: float
    lease_owner: str | None
    lease_until: float


@dataclass(frozen=True, slots=True)
class TokenBucketResult:
    allowed: bool
    remaining: int
    reset_s: float
    """Seconds until the bucket is full again."""
    retry_after_s: float
    """Seconds until one token is available (0 when allowed)."""


class Store(Protocol):
    # -- lifecycle ------------------------------------------------------------
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool: ...

    # -- records ----------------------------------------------------------------
    async def commit(self, ops: Sequence[Op], events: Sequence[EventDraft] = ()) -> list[Event]:
        """Apply every op (puts, deletes, enqueues) and append every event
        atomically, or nothing. Raises `Conflict` on a version mismatch or a taken
        unique value."""
        ...

    async def get(self, collection: str, id: str) -> Record | None: ...

    async def get_many(self, collection: str, ids: Sequence[str]) -> builtins.list[Record | None]:
        """`get` for several ids in one round trip (same order, None where missing)."""
        ...

    async def delete_created_before(self, collection: str, before: float, limit: int = 500) -> int:
        """Delete up to `limit` records of `collection` created before `before`,
        oldest first, with their unique values and tags (retention)."""
        ...

    async def get_by(self, collection: str, index: str, value: str) -> Record | None:
        """The record holding `value` in unique index `index`."""
        ...

    async def list(
        self,
        collection: str,
        *,
        limit: int = 25,
        starting_after: str | None = None,
        where: tuple[str, str] | None = None,
    ) -> Page:
        """Newest first (by created_at, then id). `where` filters on a tag."""
        ...

    # -- events -----------------------------------------------------------------
    async def events_after(self, cursor: int, limit: int = 100) -> builtins.list[Event]: ...

    async def last_event_cursor(self) -> int: ...

    async def trim_events(self, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` of the oldest events created before `before`
        (retention); returns how many. The cursor of the newest deleted event is
        kept (`events_trimmed_through`) so a poller behind it can be told."""
        ...

    async def events_trimmed_through(self) -> int:
        """The highest cursor retention has deleted (0: nothing deleted yet)."""
        ...

    async def rewrite_events(self, transform: Callable[[Event], dict[str, Any] | None]) -> int:
        """Replace the data of stored events (upgrades that scrub what events must
        no longer carry): `transform(event)` returns new data, or None to keep it.
        Cursors, ids and sequences are unchanged. Returns how many changed."""
        ...

    # -- queues -----------------------------------------------------------------
    async def enqueue(
        self, queue: str, id: str, payload: dict[str, Any], *, run_at: float | None = None
    ) -> bool:
        """Add a task; False (and no change) if a task with that id exists."""
        ...

    async def lease(
        self, queue: str, owner: str, lease_s: float, limit: int = 10
    ) -> builtins.list[Task]:
        """Due tasks (run_at ≤ now, not leased or lease expired), now leased to owner."""
        ...

    async def extend_lease(self, queue: str, id: str, owner: str, lease_s: float) -> bool: ...

    async def complete(self, queue: str, id: str, owner: str) -> bool:
        """Remove a task this owner holds. False if the lease was lost."""
        ...

    async def retry_at(self, queue: str, id: str, owner: str, run_at: float) -> bool:
        """Release the lease and make the task due again at run_at."""
        ...

    async def settle(
        self,
        queue: str,
        id: str,
        owner: str,
        ops: Sequence[Op],
        *,
        run_at: float | None = None,
    ) -> bool:
        """Apply `ops` (as `commit`, without events) and, in the same transaction,
        `complete` the task (run_at None) or `retry_at` it (run_at given). The ops
        are applied even if the lease was lost; returns whether this owner still
        held the task. Raises `Conflict` (and changes nothing) if an op conflicts."""
        ...

    async def queue_depth(self, queue: str) -> int: ...

    async def next_due(self, queue: str) -> float | None:
        """The earliest time a task becomes leasable (for sleeping workers): the
        run_at of unleased tasks and the lease expiry of leased ones (an expired
        lease makes its task due again)."""
        ...

    # -- kv with TTL --------------------------------------------------------------
    async def kv_get(self, key: str) -> str | None: ...

    async def kv_set(self, key: str, value: str, ttl_s: float | None = None) -> None: ...

    async def kv_set_if_absent(self, key: str, value: str, ttl_s: float | None = None) -> bool: ...

    async def kv_replace(
        self, key: str, expected: str, value: str, ttl_s: float | None = None
    ) -> bool:
        """Set `key` to `value` only while it holds `expected` (not expired): of
        several nodes replacing the same value, one wins."""
        ...

    async def kv_delete(self, key: str) -> None: ...

    # -- rate limits and singleton leases ----------------------------------------------
    async def take_token(self, bucket: str, rate_per_s: float, burst: int) -> TokenBucketResult: ...

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew the named lease; False if another owner holds it."""
        ...

    async def release_lease(self, name: str, owner: str) -> None: ...

    async def sweep_expired(self, idle_bucket_s: float) -> int:
        """Delete expired kv entries and leases, and token buckets untouched for
        `idle_bucket_s` (full again by then; a bucket per client address must not
        grow without end). Returns how many rows or keys went."""
        ...


async def list_all(
    store: Store, collection: str, *, where: tuple[str, str] | None = None
) -> builtins.list[Record]:
    """Every record of `collection` (with the tag `where`), page by page."""
    out: builtins.list[Record] = []
    after: str | None = None
    while True:
        page = await store.list(collection, limit=100, starting_after=after, where=where)
        out += page.data
        if not page.has_more or not page.data:
            return out
        after = page.data[-1].id
