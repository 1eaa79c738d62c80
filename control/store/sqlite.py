"""SqliteStore: the default, single-machine implementation of the Store protocol.

One `sqlite3` connection in WAL mode (synchronous=NORMAL) is owned by one
dedicated worker thread; every coroutine hands its work to that thread through
a single-thread executor, so the event loop never blocks on disk and SQLite
never sees two threads. Writes are group-committed: every write queued while
the thread is busy runs in the next single `BEGIN IMMEDIATE` transaction, each
inside its own SAVEPOINT, so a `commit()` batch of puts, deletes and events is
applied entirely or not at all and a Conflict rolls back only its own batch,
while N concurrent writers cost one executor hop and one transaction.

Tables: records (+ uniques, tags), events (+ per-resource sequences), tasks
(leased queues; `due_at` is run_at while free and lease_until while leased, so
an expired lease is simply due again), kv (TTL), buckets (token buckets),
leases (named leases).
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from control.ids import new_id
from control.store._common import bucket_result, dumps, loads, refill
from control.store.base import (
    Conflict,
    Delete,
    Enqueue,
    Event,
    EventDraft,
    Op,
    Page,
    Put,
    Record,
    StoreError,
    Task,
    TokenBucketResult,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    data TEXT NOT NULL,
    uniques TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_time ON records (collection, created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS uniques (
    collection TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (collection, name, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    collection TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at REAL NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (collection, field, value, created_at, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_id ON tags (collection, field, value, id);
CREATE TABLE IF NOT EXISTS events (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    created_at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resource_sequences (
    resource_id TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tasks (
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    due_at REAL NOT NULL,
    PRIMARY KEY (queue, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (queue, due_at, id);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    ts REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until REAL NOT NULL
) WITHOUT ROWID;
"""

_MAX_GROUP = 200
"""At most this many writes per group commit (bounds how long reads wait)."""

_SWEEP_EVERY = 1000
"""Delete expired kv rows and leases every this many writes to them (between the
sweeper's rounds, which also remove idle token buckets)."""

_TRIMMED_KEY = "store:events_trimmed_through"


class SqliteStore:
    """The Store protocol on one SQLite file. `path` may be ":memory:" in tests."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._sweep_counter = 0
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # -- plumbing ---------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is not open")
        return self._conn

    def _connect(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=512
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-32000")
        conn.executescript(_SCHEMA)
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._conn.close()
            self._conn = None

    async def _write(self, fn: Callable[[], T]) -> T:
        """Run a write in the next group commit (see `_apply_batch`)."""
        if self._executor is None:
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((fn, fut))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:_MAX_GROUP]
                del self._pending[:_MAX_GROUP]
                try:
                    results = await self._run(self._apply_batch, [fn for fn, _ in batch])
                except BaseException as e:  # executor gone, loop closing...
                    results = [(False, e)] * len(batch)
                for (_, fut), (ok, value) in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if ok:
                        fut.set_result(value)
                    elif isinstance(value, asyncio.CancelledError):
                        fut.cancel()
                    else:
                        fut.set_exception(value)
        finally:
            self._flusher = None

    def _apply_batch(self, fns: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Group commit: every write queued meanwhile runs in ONE transaction,
        each inside its own SAVEPOINT so a failing write (Conflict) is rolled
        back alone and reported to its caller only."""
        db = self._db
        out: list[tuple[bool, Any]] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for fn in fns:
                db.execute("SAVEPOINT w")
                try:
                    value = fn()
                except Exception as e:
                    db.execute("ROLLBACK TO w")
                    db.execute("RELEASE w")
                    out.append((False, e))
                    continue
                db.execute("RELEASE w")
                out.append((True, value))
            db.execute("COMMIT")
        except BaseException as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            return [(False, e)] * len(fns)
        return out

    def __await__(self) -> Generator[Any, None, SqliteStore]:
        """`store = await open_store(...)` opens the store and returns it."""

        async def _open() -> SqliteStore:
            await self.open()
            return self

        return _open().__await__()

    # -- lifecycle ------------------------------------------------------------
    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            await self._run(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        try:
            await self._run(self._disconnect)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def ping(self) -> bool:
        try:
            return await self._run(lambda: self._db.execute("SELECT 1").fetchone() == (1,))
        except (StoreError, sqlite3.Error):
            return False

    # -- records ----------------------------------------------------------------
    async def commit(self, ops: Sequence[Op], events: Sequence[EventDraft] = ()) -> list[Event]:
        now = self._clock()
        prepared = [(d, new_id("ev"), dumps(d.data)) for d in events]
        encoded = self._encode(ops)
        return await self._write(lambda: self._commit(self._db, encoded, prepared, now))

    @staticmethod
    def _encode(ops: Sequence[Op]) -> list[tuple[Op, str, str, str]]:
        return [
            (op, dumps(op.data), dumps(dict(op.unique)), dumps(dict(op.tags)))
            if isinstance(op, Put)
            else (op, dumps(op.payload), "", "")
            if isinstance(op, Enqueue)
            else (op, "", "", "")
            for op in ops
        ]

    def _commit(
        self,
        db: sqlite3.Connection,
        ops: Sequence[tuple[Op, str, str, str]],
        events: list[tuple[EventDraft, str, str]],
        now: float,
    ) -> list[Event]:
        for op, data, uniques, tags in ops:
            if isinstance(op, Enqueue):
                run_at = now if op.run_at is None else op.run_at
                db.execute(
                    "INSERT OR IGNORE INTO tasks (queue, id, payload, run_at, due_at)"
                    " VALUES (?,?,?,?,?)",
                    (op.queue, op.id, data, run_at, run_at),
                )
                continue
            row = db.execute(
                "SELECT version, created_at, uniques, tags FROM records"
                " WHERE collection=? AND id=?",
                (op.collection, op.id),
            ).fetchone()
            current = row[0] if row else 0
            if op.expect_version is not None and op.expect_version != current:
                raise Conflict(
                    f"{op.collection}/{op.id}: expected version {op.expect_version}, is {current}"
                )
            if row is not None:
                self._drop_indexes(db, op.collection, op.id, row[1], row[2], row[3])
            if isinstance(op, Delete):
                if row is not None:
                    db.execute(
                        "DELETE FROM records WHERE collection=? AND id=?", (op.collection, op.id)
                    )
                continue
            created_at = row[1] if row else now
            for name, value in op.unique.items():
                try:
                    db.execute(
                        "INSERT INTO uniques (collection, name, value, id) VALUES (?,?,?,?)",
                        (op.collection, name, value, op.id),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(f"{op.collection}: {name}={value!r} is taken") from None
            db.executemany(
                "INSERT INTO tags (collection, field, value, created_at, id) VALUES (?,?,?,?,?)",
                [(op.collection, f, v, created_at, op.id) for f, v in op.tags.items()],
            )
            db.execute(
                "INSERT OR REPLACE INTO records"
                " (collection, id, version, created_at, data, uniques, tags)"
                " VALUES (?,?,?,?,?,?,?)",
                (op.collection, op.id, current + 1, created_at, data, uniques, tags),
            )
        out: list[Event] = []
        for draft, event_id, data in events:
            row = db.execute(
                "INSERT INTO resource_sequences (resource_id, sequence) VALUES (?, 1)"
                " ON CONFLICT (resource_id) DO UPDATE SET sequence = sequence + 1"
                " RETURNING sequence",
                (draft.resource_id,),
            ).fetchone()
            sequence = int(row[0])
            cur = db.execute(
                "INSERT INTO events (id, type, resource_id, sequence, created_at, data)"
                " VALUES (?,?,?,?,?,?)",
                (event_id, draft.type, draft.resource_id, sequence, now, data),
            )
            out.append(
                Event(
                    cursor=int(cur.lastrowid or 0),
                    id=event_id,
                    type=draft.type,
                    resource_id=draft.resource_id,
                    sequence=sequence,
                    created_at=now,
                    data=loads(data),
                )
            )
        return out

    @staticmethod
    def _drop_indexes(
        db: sqlite3.Connection,
        collection: str,
        id: str,
        created_at: float,
        uniques: str,
        tags: str,
    ) -> None:
        old_uniques: dict[str, str] = loads(uniques)
        if old_uniques:
            db.executemany(
                "DELETE FROM uniques WHERE collection=? AND name=? AND value=? AND id=?",
                [(collection, n, v, id) for n, v in old_uniques.items()],
            )
        old_tags: dict[str, str] = loads(tags)
        if old_tags:
            db.executemany(
                "DELETE FROM tags WHERE collection=? AND field=? AND value=? AND created_at=?"
                " AND id=?",
                [(collection, f, v, created_at, id) for f, v in old_tags.items()],
            )

    async def delete_created_before(self, collection: str, before: float, limit: int = 500) -> int:
        def q() -> int:
            db = self._db
            rows = db.execute(
                "SELECT id, created_at, uniques, tags FROM records"
                " WHERE collection=? AND created_at < ? ORDER BY created_at, id LIMIT ?",
                (collection, before, max(0, int(limit))),
            ).fetchall()
            for id_, created_at, uniques, tags in rows:
                self._drop_indexes(db, collection, id_, created_at, uniques, tags)
            db.executemany(
                "DELETE FROM records WHERE collection=? AND id=?",
                [(collection, r[0]) for r in rows],
            )
            return len(rows)

        return await self._write(q)

    @staticmethod
    def _record(collection: str, row: tuple[Any, ...]) -> Record:
        return Record(
            collection=collection, id=row[0], version=row[1], created_at=row[2], data=loads(row[3])
        )

    async def get(self, collection: str, id: str) -> Record | None:
        def q() -> Record | None:
            row = self._db.execute(
                "SELECT id, version, created_at, data FROM records WHERE collection=? AND id=?",
                (collection, id),
            ).fetchone()
            return self._record(collection, row) if row else None

        return await self._run(q)

    async def get_many(self, collection: str, ids: Sequence[str]) -> builtins.list[Record | None]:
        wanted = list(ids)

        def q() -> builtins.list[Record | None]:
            found: dict[str, Record] = {}
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                rows = self._db.execute(
                    "SELECT id, version, created_at, data FROM records WHERE collection=? AND id IN"
                    f" ({','.join('?' * len(chunk))})",
                    [collection, *chunk],
                ).fetchall()
                for r in rows:
                    found[r[0]] = self._record(collection, r)
            return [found.get(i) for i in wanted]

        return await self._run(q)

    async def get_by(self, collection: str, index: str, value: str) -> Record | None:
        def q() -> Record | None:
            row = self._db.execute(
                "SELECT r.id, r.version, r.created_at, r.data FROM uniques u JOIN records r"
                " ON r.collection=u.collection AND r.id=u.id"
                " WHERE u.collection=? AND u.name=? AND u.value=?",
                (collection, index, value),
            ).fetchone()
            return self._record(collection, row) if row else None

        return await self._run(q)

    async def list(
        self,
        collection: str,
        *,
        limit: int = 25,
        starting_after: str | None = None,
        where: tuple[str, str] | None = None,
    ) -> Page:
        limit = max(0, int(limit))

        def q() -> Page:
            db = self._db
            if where is None:
                base = "SELECT id, version, created_at, data FROM records WHERE collection=?"
                args: list[Any] = [collection]
                anchor_sql = "SELECT created_at FROM records WHERE collection=? AND id=?"
                anchor_args: list[Any] = [collection, starting_after]
                col_t, col_i = "created_at", "id"
            else:
                base = (
                    "SELECT r.id, r.version, r.created_at, r.data FROM tags t JOIN records r"
                    " ON r.collection=t.collection AND r.id=t.id"
                    " WHERE t.collection=? AND t.field=? AND t.value=?"
                )
                args = [collection, where[0], where[1]]
                anchor_sql = (
                    "SELECT created_at FROM tags WHERE collection=? AND field=? AND value=?"
                    " AND id=?"
                )
                anchor_args = [collection, where[0], where[1], starting_after]
                col_t, col_i = "t.created_at", "t.id"
            if starting_after is not None:
                anchor = db.execute(anchor_sql, anchor_args).fetchone()
                if anchor is None:
                    return Page(data=[], has_more=False)
                base += f" AND ({col_t} < ? OR ({col_t} = ? AND {col_i} < ?))"
                args += [anchor[0], anchor[0], starting_after]
            base += f" ORDER BY {col_t} DESC, {col_i} DESC LIMIT ?"
            args.append(limit + 1)
            rows = db.execute(base, args).fetchall()
            return Page(
                data=[self._record(collection, r) for r in rows[:limit]],
                has_more=len(rows) > limit,
            )

        return await self._run(q)

    # -- events -----------------------------------------------------------------
    async def events_after(self, cursor: int, limit: int = 100) -> builtins.list[Event]:
        def q() -> builtins.list[Event]:
            rows = self._db.execute(
                "SELECT cursor, id, type, resource_id, sequence, created_at, data FROM events"
                " WHERE cursor > ? ORDER BY cursor LIMIT ?",
                (int(cursor), max(0, int(limit))),
            ).fetchall()
            return [
                Event(
                    cursor=r[0],
                    id=r[1],
                    type=r[2],
                    resource_id=r[3],
                    sequence=r[4],
                    created_at=r[5],
                    data=loads(r[6]),
                )
                for r in rows
            ]

        return await self._run(q)

    async def last_event_cursor(self) -> int:
        def q() -> int:
            # AUTOINCREMENT's high-water mark survives retention deleting every row
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
            return int(row[0]) if row else 0

        return await self._run(q)

    async def trim_events(self, before: float, limit: int = 1000) -> int:
        def q() -> int:
            db = self._db
            row = db.execute(
                "SELECT MAX(cursor), COUNT(*) FROM (SELECT cursor FROM events"
                " WHERE cursor <= (SELECT IFNULL(MAX(cursor), 0) FROM events WHERE created_at < ?)"
                " ORDER BY cursor LIMIT ?)",
                (before, max(0, int(limit))),
            ).fetchone()
            through, count = int(row[0] or 0), int(row[1])
            if not count:
                return 0
            db.execute("DELETE FROM events WHERE cursor <= ?", (through,))
            db.execute(
                "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, NULL)"
                " ON CONFLICT (key) DO UPDATE SET value=excluded.value"
                " WHERE CAST(kv.value AS INTEGER) < CAST(excluded.value AS INTEGER)",
                (_TRIMMED_KEY, str(through)),
            )
            return count

        return await self._write(q)

    async def events_trimmed_through(self) -> int:
        value = await self.kv_get(_TRIMMED_KEY)
        return int(value) if value else 0

    async def rewrite_events(self, transform: Callable[[Event], dict[str, Any] | None]) -> int:
        changed = 0
        cursor = 0
        while True:
            batch = await self.events_after(cursor, 500)
            if not batch:
                return changed
            updates = [
                (dumps(data), e.cursor)
                for e in batch
                if (data := transform(e)) is not None and data != e.data
            ]
            if updates:
                await self._write(
                    lambda u=updates: self._db.executemany(  # type: ignore[misc]
                        "UPDATE events SET data=? WHERE cursor=?", u
                    )
                )
                changed += len(updates)
            cursor = batch[-1].cursor

    # -- queues -----------------------------------------------------------------
    async def enqueue(
        self, queue: str, id: str, payload: dict[str, Any], *, run_at: float | None = None
    ) -> bool:
        when = self._clock() if run_at is None else float(run_at)
        data = dumps(payload)

        def q() -> bool:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO tasks (queue, id, payload, run_at, due_at)"
                " VALUES (?,?,?,?,?)",
                (queue, id, data, when, when),
            )
            return cur.rowcount == 1

        return await self._write(q)

    async def lease(
        self, queue: str, owner: str, lease_s: float, limit: int = 10
    ) -> builtins.list[Task]:
        now = self._clock()
        until = now + lease_s

        def q(db: sqlite3.Connection) -> builtins.list[Task]:
            rows = db.execute(
                "SELECT id, payload, attempts, run_at FROM tasks WHERE queue=? AND due_at<=?"
                " ORDER BY due_at, id LIMIT ?",
                (queue, now, max(0, int(limit))),
            ).fetchall()
            if not rows:
                return []
            db.executemany(
                "UPDATE tasks SET lease_owner=?, lease_until=?, due_at=?, attempts=attempts+1"
                " WHERE queue=? AND id=?",
                [(owner, until, until, queue, r[0]) for r in rows],
            )
            return [
                Task(
                    queue=queue,
                    id=r[0],
                    payload=loads(r[1]),
                    attempts=r[2],
                    run_at=r[3],
                    lease_owner=owner,
                    lease_until=until,
                )
                for r in rows
            ]

        return await self._write(lambda: q(self._db))

    async def extend_lease(self, queue: str, id: str, owner: str, lease_s: float) -> bool:
        until = self._clock() + lease_s

        def q() -> bool:
            cur = self._db.execute(
                "UPDATE tasks SET lease_until=?, due_at=? WHERE queue=? AND id=? AND lease_owner=?",
                (until, until, queue, id, owner),
            )
            return cur.rowcount == 1

        return await self._write(q)

    async def complete(self, queue: str, id: str, owner: str) -> bool:
        def q() -> bool:
            cur = self._db.execute(
                "DELETE FROM tasks WHERE queue=? AND id=? AND lease_owner=?", (queue, id, owner)
            )
            return cur.rowcount == 1

        return await self._write(q)

    async def retry_at(self, queue: str, id: str, owner: str, run_at: float) -> bool:
        def q() -> bool:
            cur = self._db.execute(
                "UPDATE tasks SET run_at=?, due_at=?, lease_owner=NULL, lease_until=0"
                " WHERE queue=? AND id=? AND lease_owner=?",
                (run_at, run_at, queue, id, owner),
            )
            return cur.rowcount == 1

        return await self._write(q)

    async def settle(
        self,
        queue: str,
        id: str,
        owner: str,
        ops: Sequence[Op],
        *,
        run_at: float | None = None,
    ) -> bool:
        now = self._clock()
        encoded = self._encode(ops)

        def q(db: sqlite3.Connection) -> bool:
            self._commit(db, encoded, [], now)
            if run_at is None:
                cur = db.execute(
                    "DELETE FROM tasks WHERE queue=? AND id=? AND lease_owner=?", (queue, id, owner)
                )
            else:
                cur = db.execute(
                    "UPDATE tasks SET run_at=?, due_at=?, lease_owner=NULL, lease_until=0"
                    " WHERE queue=? AND id=? AND lease_owner=?",
                    (run_at, run_at, queue, id, owner),
                )
            return cur.rowcount == 1

        return await self._write(lambda: q(self._db))

    async def queue_depth(self, queue: str) -> int:
        def q() -> int:
            return int(
                self._db.execute("SELECT COUNT(*) FROM tasks WHERE queue=?", (queue,)).fetchone()[0]
            )

        return await self._run(q)

    async def next_due(self, queue: str) -> float | None:
        def q() -> float | None:
            row = self._db.execute(
                "SELECT due_at FROM tasks WHERE queue=? ORDER BY due_at LIMIT 1", (queue,)
            ).fetchone()
            return float(row[0]) if row else None

        return await self._run(q)

    # -- kv with TTL --------------------------------------------------------------
    def _maybe_sweep(self, db: sqlite3.Connection, now: float) -> None:
        self._sweep_counter += 1
        if self._sweep_counter % _SWEEP_EVERY == 0:
            db.execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            db.execute("DELETE FROM leases WHERE until <= ?", (now,))

    async def kv_get(self, key: str) -> str | None:
        now = self._clock()

        def q() -> str | None:
            row = self._db.execute(
                "SELECT value FROM kv WHERE key=? AND (expires_at IS NULL OR expires_at > ?)",
                (key, now),
            ).fetchone()
            return str(row[0]) if row else None

        return await self._run(q)

    async def kv_set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        now = self._clock()
        expires = None if ttl_s is None else now + ttl_s

        def q() -> None:
            db = self._db
            db.execute(
                "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?,?,?)",
                (key, value, expires),
            )
            self._maybe_sweep(db, now)

        await self._write(q)

    async def kv_set_if_absent(self, key: str, value: str, ttl_s: float | None = None) -> bool:
        now = self._clock()
        expires = None if ttl_s is None else now + ttl_s

        def q() -> bool:
            db = self._db
            cur = db.execute(
                "INSERT INTO kv (key, value, expires_at) VALUES (?,?,?)"
                " ON CONFLICT (key) DO UPDATE SET value=excluded.value,"
                " expires_at=excluded.expires_at"
                " WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?",
                (key, value, expires, now),
            )
            self._maybe_sweep(db, now)
            return cur.rowcount == 1

        return await self._write(q)

    async def kv_replace(
        self, key: str, expected: str, value: str, ttl_s: float | None = None
    ) -> bool:
        now = self._clock()
        expires = None if ttl_s is None else now + ttl_s

        def q() -> bool:
            cur = self._db.execute(
                "UPDATE kv SET value=?, expires_at=? WHERE key=? AND value=?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (value, expires, key, expected, now),
            )
            return cur.rowcount == 1

        return await self._write(q)

    async def kv_delete(self, key: str) -> None:
        await self._write(lambda: self._db.execute("DELETE FROM kv WHERE key=?", (key,)))

    # -- rate limits and singleton leases ----------------------------------------------
    async def take_token(self, bucket: str, rate_per_s: float, burst: int) -> TokenBucketResult:
        now = self._clock()

        def q() -> tuple[bool, float]:
            db = self._db
            row = db.execute("SELECT tokens, ts FROM buckets WHERE name=?", (bucket,)).fetchone()
            tokens = float(burst) if row is None else refill(row[0], row[1], now, rate_per_s, burst)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            db.execute(
                "INSERT OR REPLACE INTO buckets (name, tokens, ts) VALUES (?,?,?)",
                (bucket, tokens, now),
            )
            return allowed, tokens

        allowed, tokens = await self._write(q)
        return bucket_result(allowed, tokens, rate_per_s, burst)

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        now = self._clock()

        def q() -> bool:
            db = self._db
            cur = db.execute(
                "INSERT INTO leases (name, owner, until) VALUES (?,?,?)"
                " ON CONFLICT (name) DO UPDATE SET owner=excluded.owner, until=excluded.until"
                " WHERE leases.owner=excluded.owner OR leases.until <= ?",
                (name, owner, now + ttl_s, now),
            )
            self._maybe_sweep(db, now)
            return cur.rowcount == 1

        return await self._write(q)

    async def sweep_expired(self, idle_bucket_s: float) -> int:
        now = self._clock()

        def q() -> int:
            db = self._db
            n = db.execute(
                "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            ).rowcount
            n += db.execute("DELETE FROM leases WHERE until <= ?", (now,)).rowcount
            n += db.execute("DELETE FROM buckets WHERE ts <= ?", (now - idle_bucket_s,)).rowcount
            return int(n)

        return await self._write(q)

    async def release_lease(self, name: str, owner: str) -> None:
        await self._write(
            lambda: self._db.execute("DELETE FROM leases WHERE name=? AND owner=?", (name, owner))
        )
