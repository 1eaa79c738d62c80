"""RedisStore: the Store protocol on Redis (redis.asyncio), for many nodes.

Every multi-key operation is one Lua script, so it is atomic on the server:

* `commit()` validates the whole batch first (versions and unique values, with
  a local overlay so later ops see earlier ones, exactly like SQLite's
  sequential execution inside a transaction) and only then writes; a failed
  batch writes nothing and appends no event. Conflict semantics match
  SqliteStore.
* Events: `INCR` global cursor, `HINCRBY` per-resource sequence, the log is a
  stream whose entry ids are `<cursor>-1`.
* Records: a hash per record; a sorted set per collection (and per tag value)
  scored by created_at, so newest-first with ties broken by id descending,
  identical to SQLite's `ORDER BY created_at DESC, id DESC`.
* Queues: a sorted set of due times (run_at while free, lease_until while
  leased) plus a hash per task.
* Token buckets and named leases: Lua, so limits are global across nodes.

Key layout (all under `prefix`): r:<coll>:<id>, c:<coll>, t:<coll>:<field>:<value>,
u:<coll>:<name>, ev:cursor, ev:seq, ev:log, q:<queue>, q:<queue>:<id>, kv:<key>,
b:<bucket>, l:<name>. Scripts touch keys they compute, so this targets a single
Redis (or a primary with replicas), not Redis Cluster.

Times come from the caller's clock (`clock=time.time`), like SqliteStore, so
nodes are expected to be NTP-synchronised; kv TTLs and named leases use
Redis's own expiry.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from control.ids import new_id
from control.store._common import bucket_result, dumps, loads
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

_COMMIT = r"""
local P = ARGV[1]
local now = ARGV[2]
local ops = cjson.decode(ARGV[3])
local events = cjson.decode(ARGV[4])

local ver = {}      -- rkey -> version (0 = absent)
local uniq = {}     -- rkey -> uniques table
local owner = {}    -- ukey..'\0'..value -> id or false

local function rkey(c, id) return P .. 'r:' .. c .. ':' .. id end
local function load(c, id)
  local k = rkey(c, id)
  if ver[k] == nil then
    local h = redis.call('HMGET', k, 'v', 'u')
    if h[1] then
      ver[k] = tonumber(h[1]); uniq[k] = cjson.decode(h[2])
    else
      ver[k] = 0; uniq[k] = {}
    end
  end
  return k
end
local function holder(c, name, value)
  local k = P .. 'u:' .. c .. ':' .. name .. '\0' .. value
  local h = owner[k]
  if h == nil then
    h = redis.call('HGET', P .. 'u:' .. c .. ':' .. name, value)
    owner[k] = h
  end
  return k, h
end

-- phase 1: validate against an overlay (enqueues cannot conflict)
for i, op in ipairs(ops) do
  if op.k ~= 'enq' then
  local k = load(op.c, op.id)
  local cur = ver[k]
  if op.ev ~= cjson.null and op.ev ~= cur then
    return {'conflict', op.c .. '/' .. op.id .. ': expected version ' .. tostring(op.ev) ..
            ', is ' .. tostring(cur)}
  end
  for name, value in pairs(uniq[k]) do
    local uk, h = holder(op.c, name, value)
    if h == op.id then owner[uk] = false end
  end
  if op.k == 'put' then
    for name, value in pairs(op.u) do
      local uk, h = holder(op.c, name, value)
      if h and h ~= op.id then
        return {'conflict', op.c .. ': ' .. name .. '=' .. value .. ' is taken'}
      end
      owner[uk] = op.id
    end
    ver[k] = cur + 1; uniq[k] = op.u
  else
    ver[k] = 0; uniq[k] = {}
  end
  end
end

-- phase 2: apply
for i, op in ipairs(ops) do
  if op.k == 'enq' then
    local q = P .. 'q:' .. op.q
    local h = q .. ':' .. op.id
    if redis.call('EXISTS', h) == 0 then
      local run = op.r
      if run == cjson.null then run = now end
      redis.call('HSET', h, 'p', op.p, 'a', 0, 'r', run)
      redis.call('ZADD', q, run, op.id)
    end
  else
  local k = rkey(op.c, op.id)
  local h = redis.call('HMGET', k, 'v', 'c', 'u', 't')
  local created = now
  if h[1] then
    created = h[2]
    for name, value in pairs(cjson.decode(h[3])) do
      local uk = P .. 'u:' .. op.c .. ':' .. name
      if redis.call('HGET', uk, value) == op.id then redis.call('HDEL', uk, value) end
    end
    for field, value in pairs(cjson.decode(h[4])) do
      redis.call('ZREM', P .. 't:' .. op.c .. ':' .. field .. ':' .. value, op.id)
    end
  end
  if op.k == 'put' then
    local v = (tonumber(h[1]) or 0) + 1
    for name, value in pairs(op.u) do
      redis.call('HSET', P .. 'u:' .. op.c .. ':' .. name, value, op.id)
    end
    for field, value in pairs(op.t) do
      redis.call('ZADD', P .. 't:' .. op.c .. ':' .. field .. ':' .. value, created, op.id)
    end
    redis.call('HSET', k, 'v', v, 'c', created, 'd', op.d, 'u', op.uj, 't', op.tj)
    redis.call('ZADD', P .. 'c:' .. op.c, created, op.id)
  else
    redis.call('DEL', k)
    redis.call('ZREM', P .. 'c:' .. op.c, op.id)
  end
  end
end

if ARGV[5] and ARGV[5] ~= '' then
  local q = ARGV[5]
  local th = q .. ':' .. ARGV[6]
  if redis.call('HGET', th, 'o') ~= ARGV[7] then return {'ok', 0} end
  if ARGV[8] == '' then
    redis.call('DEL', th)
    redis.call('ZREM', q, ARGV[6])
  else
    redis.call('HDEL', th, 'o', 'u')
    redis.call('HSET', th, 'r', ARGV[8])
    redis.call('ZADD', q, ARGV[8], ARGV[6])
  end
  return {'ok', 1}
end

local out = {'ok'}
for i, e in ipairs(events) do
  local cursor = redis.call('INCR', P .. 'ev:cursor')
  local seq = redis.call('HINCRBY', P .. 'ev:seq', e.r, 1)
  redis.call('XADD', P .. 'ev:log', tostring(cursor) .. '-1',
    'i', e.id, 'y', e.y, 'r', e.r, 's', seq, 'c', now, 'd', e.d)
  out[#out + 1] = cursor
  out[#out + 1] = seq
end
return out
"""

_PAGE = r"""
local P = ARGV[1]
local zkey = ARGV[2]
local coll = ARGV[3]
local after = ARGV[4]
local limit = tonumber(ARGV[5])
local start = 0
if after ~= '' then
  local rank = redis.call('ZREVRANK', zkey, after)
  if not rank then return {} end
  start = rank + 1
end
local ids = redis.call('ZREVRANGE', zkey, start, start + limit)
local out = {}
for i, id in ipairs(ids) do
  local h = redis.call('HMGET', P .. 'r:' .. coll .. ':' .. id, 'v', 'c', 'd')
  if h[1] then
    out[#out + 1] = id; out[#out + 1] = h[1]; out[#out + 1] = h[2]; out[#out + 1] = h[3]
  end
end
return out
"""

_GET_BY = r"""
local id = redis.call('HGET', ARGV[1] .. 'u:' .. ARGV[2] .. ':' .. ARGV[3], ARGV[4])
if not id then return false end
local h = redis.call('HMGET', ARGV[1] .. 'r:' .. ARGV[2] .. ':' .. id, 'v', 'c', 'd')
if not h[1] then return false end
return {id, h[1], h[2], h[3]}
"""

_ENQUEUE = r"""
local q = ARGV[1]
local h = q .. ':' .. ARGV[2]
if redis.call('EXISTS', h) == 1 then return 0 end
redis.call('HSET', h, 'p', ARGV[3], 'a', 0, 'r', ARGV[4])
redis.call('ZADD', q, ARGV[4], ARGV[2])
return 1
"""

_LEASE = r"""
local q = ARGV[1]
local now = ARGV[2]
local untilv = ARGV[3]
local ownerv = ARGV[4]
local ids = redis.call('ZRANGEBYSCORE', q, '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
local out = {}
for i, id in ipairs(ids) do
  local h = q .. ':' .. id
  local f = redis.call('HMGET', h, 'p', 'a', 'r')
  redis.call('HSET', h, 'o', ownerv, 'u', untilv, 'a', (tonumber(f[2]) or 0) + 1)
  redis.call('ZADD', q, untilv, id)
  out[#out + 1] = id; out[#out + 1] = f[1]; out[#out + 1] = f[2]; out[#out + 1] = f[3]
end
return out
"""

_EXTEND = r"""
local q = ARGV[1]
local h = q .. ':' .. ARGV[2]
if redis.call('HGET', h, 'o') ~= ARGV[3] then return 0 end
redis.call('HSET', h, 'u', ARGV[4])
redis.call('ZADD', q, ARGV[4], ARGV[2])
return 1
"""

_COMPLETE = r"""
local q = ARGV[1]
local h = q .. ':' .. ARGV[2]
if redis.call('HGET', h, 'o') ~= ARGV[3] then return 0 end
redis.call('DEL', h)
redis.call('ZREM', q, ARGV[2])
return 1
"""

_RETRY_AT = r"""
local q = ARGV[1]
local h = q .. ':' .. ARGV[2]
if redis.call('HGET', h, 'o') ~= ARGV[3] then return 0 end
redis.call('HDEL', h, 'o', 'u')
redis.call('HSET', h, 'r', ARGV[4])
redis.call('ZADD', q, ARGV[4], ARGV[2])
return 1
"""

_TAKE_TOKEN = r"""
local k = ARGV[1]
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local st = redis.call('HMGET', k, 'tk', 'ts')
local tokens = burst
if st[1] then
  local last = tonumber(st[2])
  local dt = now - last
  if dt < 0 then dt = 0 end
  tokens = math.min(burst, tonumber(st[1]) + dt * rate)
end
local allowed = 0
if tokens >= 1 then allowed = 1; tokens = tokens - 1 end
local tk = string.format('%.17g', tokens)
redis.call('HSET', k, 'tk', tk, 'ts', ARGV[4])
local ttl = 1000
if rate > 0 then ttl = math.ceil((burst / rate) * 1000) + 1000 else ttl = 86400000 end
redis.call('PEXPIRE', k, ttl)
return {allowed, tk}
"""

_ACQUIRE = r"""
local v = redis.call('GET', ARGV[1])
if v and v ~= ARGV[2] then return 0 end
redis.call('SET', ARGV[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

_REPLACE = r"""
if redis.call('GET', ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[4] == '' then
  redis.call('SET', ARGV[1], ARGV[3])
else
  redis.call('SET', ARGV[1], ARGV[3], 'PX', ARGV[4])
end
return 1
"""

_RELEASE = r"""
if redis.call('GET', ARGV[1]) == ARGV[2] then redis.call('DEL', ARGV[1]) end
return 1
"""


_TRIM_EVENTS = r"""
local P = ARGV[1]
local before = tonumber(ARGV[2])
local log = P .. 'ev:log'
local entries = redis.call('XRANGE', log, '-', '+', 'COUNT', tonumber(ARGV[3]))
local last = nil
local n = 0
for i, e in ipairs(entries) do
  local f = e[2]
  local c = nil
  for j = 1, #f, 2 do if f[j] == 'c' then c = tonumber(f[j + 1]) end end
  if c == nil or c >= before then break end
  last = e[1]
  n = n + 1
end
if last == nil then return 0 end
local through = tonumber(string.match(last, '^(%d+)'))
redis.call('XTRIM', log, 'MINID', tostring(through + 1) .. '-0')
local prev = tonumber(redis.call('GET', P .. 'ev:trimmed') or '0')
if through > prev then redis.call('SET', P .. 'ev:trimmed', through) end
return n
"""

_SWAP_LOG = r"""
local top = redis.call('XREVRANGE', ARGV[1], '+', '-', 'COUNT', 1)
if #top == 0 or top[1][1] ~= ARGV[3] then return 0 end
redis.call('RENAME', ARGV[2], ARGV[1])
return 1
"""

_DELETE_BEFORE = r"""
local P = ARGV[1]
local c = ARGV[2]
local ids = redis.call('ZRANGEBYSCORE', P .. 'c:' .. c, '-inf', '(' .. ARGV[3],
  'LIMIT', 0, tonumber(ARGV[4]))
for i, id in ipairs(ids) do
  local k = P .. 'r:' .. c .. ':' .. id
  local h = redis.call('HMGET', k, 'u', 't')
  if h[1] then
    for name, value in pairs(cjson.decode(h[1])) do
      local uk = P .. 'u:' .. c .. ':' .. name
      if redis.call('HGET', uk, value) == id then redis.call('HDEL', uk, value) end
    end
  end
  if h[2] then
    for field, value in pairs(cjson.decode(h[2])) do
      redis.call('ZREM', P .. 't:' .. c .. ':' .. field .. ':' .. value, id)
    end
  end
  redis.call('DEL', k)
  redis.call('ZREM', P .. 'c:' .. c, id)
end
return #ids
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _f(value: float) -> str:
    return repr(float(value))


REPLICAS_CHECK_S = 1.0
"""How long the count of connected replicas is trusted."""
_DURABLE_SCRIPTS = frozenset(
    {"commit", "enqueue", "complete", "retry_at", "trim_events", "swap_log", "delete_before"}
)
"""Scripts whose writes must survive a failover (state, events, jobs)."""


class RedisStore:
    """The Store protocol on one Redis. `prefix` namespaces every key (tests use
    a fresh prefix per test; production uses the default)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        sentinels: Sequence[tuple[str, int]] = (),
        master: str = "mymaster",
        replicas_acked: int = 0,
        replica_timeout_s: float = 1.0,
        prefix: str = "onair:",
        clock: Callable[[], float] = time.time,
        max_connections: int = 64,
    ) -> None:
        """`url` for one Redis, or `sentinels` (host, port) watching `master`
        (Redis Sentinel: connections follow a failover to the new master).
        `replicas_acked` > 0: a write (commit, queue) counts only once that many
        replicas hold it (``WAIT``; fewer while fewer are connected), so a
        failover loses no acknowledged write; one they do not take in
        `replica_timeout_s` is a `StoreError`."""
        if not url and not sentinels:
            raise ValueError("a Redis URL or Sentinel addresses are needed")
        self.url = url
        self.sentinels = tuple(sentinels)
        self.master = master
        self.replicas_acked = replicas_acked
        self.replica_timeout_s = replica_timeout_s
        self._replicas_connected = 0
        self._replicas_checked = 0.0
        self.prefix = prefix
        self._clock = clock
        self._max_connections = max_connections
        self._redis: aioredis.Redis | None = None
        self._pool: aioredis.BlockingConnectionPool | None = None
        self._sentinel: Sentinel | None = None
        self._scripts: dict[str, Any] = {}

    @property
    def _r(self) -> aioredis.Redis:
        if self._redis is None:
            raise StoreError("store is not open")
        return self._redis

    async def _call(self, name: str, *args: Any) -> Any:
        script = self._scripts[name]
        wanted = await self._replicas_wanted() if name in _DURABLE_SCRIPTS else 0
        if not wanted:
            return await script(args=list(args))
        # WAIT counts the writes of its own connection: script and WAIT share one
        async with self._r.pipeline(transaction=False) as pipe:
            await script(args=list(args), client=pipe)
            pipe.wait(wanted, int(self.replica_timeout_s * 1000))
            result, acked = await pipe.execute()
        if int(acked) < wanted:
            self._replicas_checked = 0.0  # look again: a replica may have gone
            raise StoreError(f"a write reached {acked} of {wanted} replica(s) in time")
        return result

    async def _replicas_wanted(self) -> int:
        """`replicas_acked`, or fewer while fewer replicas are connected (after a
        failover until the old master returns as a replica): a write is then as
        safe as the replicas there are, as Redis's own min-replicas-to-write
        would have it, rather than refused until one comes back."""
        if not self.replicas_acked:
            return 0
        now = time.monotonic()
        if now - self._replicas_checked > REPLICAS_CHECK_S:
            info = await self._r.info("replication")
            self._replicas_connected = int(info.get("connected_slaves", 0))
            self._replicas_checked = now
        return min(self.replicas_acked, self._replicas_connected)

    def __await__(self) -> Generator[Any, None, RedisStore]:
        """`store = await open_store(...)` opens the store and returns it."""

        async def _open() -> RedisStore:
            await self.open()
            return self

        return _open().__await__()

    # -- lifecycle ------------------------------------------------------------
    async def open(self) -> None:
        if self._redis is not None:
            return
        if self.sentinels:
            sentinel = self._sentinel = Sentinel(
                list(self.sentinels),
                sentinel_kwargs={"socket_timeout": 1.0},
                socket_timeout=5.0,
                socket_connect_timeout=2.0,
            )
            r = sentinel.master_for(
                self.master, decode_responses=True, max_connections=self._max_connections
            )
        else:
            assert self.url is not None
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, decode_responses=True, max_connections=self._max_connections, timeout=30
            )
            r = aioredis.Redis(connection_pool=pool)
            self._pool = pool
        await r.ping()
        self._redis = r
        for name, src in {
            "commit": _COMMIT,
            "page": _PAGE,
            "get_by": _GET_BY,
            "enqueue": _ENQUEUE,
            "lease": _LEASE,
            "extend": _EXTEND,
            "complete": _COMPLETE,
            "retry_at": _RETRY_AT,
            "take_token": _TAKE_TOKEN,
            "acquire": _ACQUIRE,
            "release": _RELEASE,
            "replace": _REPLACE,
            "trim_events": _TRIM_EVENTS,
            "swap_log": _SWAP_LOG,
            "delete_before": _DELETE_BEFORE,
        }.items():
            self._scripts[name] = r.register_script(src)

    # -- pub/sub (control.eventbus's transport) -----------------------------------
    async def publish(self, channel: str, message: str) -> None:
        await self._r.publish(self.prefix + channel, message)

    async def subscribe(self, channel: str) -> RedisSubscription:
        pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.prefix + channel)
        return RedisSubscription(pubsub)

    async def close(self) -> None:
        if self._redis is not None:
            r, self._redis = self._redis, None
            await r.aclose(close_connection_pool=self._pool is None)
            if self._pool is not None:
                await self._pool.disconnect()
                self._pool = None
        sentinel, self._sentinel = self._sentinel, None
        if sentinel is not None:
            for client in sentinel.sentinels:
                await client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._r.ping())
        except Exception:
            return False

    # -- records ----------------------------------------------------------------
    async def commit(self, ops: Sequence[Op], events: Sequence[EventDraft] = ()) -> list[Event]:
        now = self._clock()
        wire_ops = self._encode(ops)
        drafts = [(d, new_id("ev"), dumps(d.data)) for d in events]
        wire_events = [
            {"id": eid, "y": d.type, "r": d.resource_id, "d": data} for d, eid, data in drafts
        ]
        res = await self._call("commit", self.prefix, _f(now), dumps(wire_ops), dumps(wire_events))
        if res[0] == "conflict":
            raise Conflict(res[1])
        out: builtins.list[Event] = []
        for i, (draft, eid, data) in enumerate(drafts):
            out.append(
                Event(
                    cursor=int(res[1 + 2 * i]),
                    id=eid,
                    type=draft.type,
                    resource_id=draft.resource_id,
                    sequence=int(res[2 + 2 * i]),
                    created_at=now,
                    data=loads(data),
                )
            )
        return out

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
        res = await self._call(
            "commit",
            self.prefix,
            _f(now),
            dumps(self._encode(ops)),
            "[]",
            self._q(queue),
            id,
            owner,
            "" if run_at is None else _f(run_at),
        )
        if res[0] == "conflict":
            raise Conflict(res[1])
        return bool(int(res[1]))

    @staticmethod
    def _encode(ops: Sequence[Op]) -> builtins.list[dict[str, Any]]:
        wire_ops: builtins.list[dict[str, Any]] = []
        for op in ops:
            if isinstance(op, Put):
                wire_ops.append(
                    {
                        "k": "put",
                        "c": op.collection,
                        "id": op.id,
                        "ev": op.expect_version,
                        "d": dumps(op.data),
                        "u": dict(op.unique) or {},
                        "uj": dumps(dict(op.unique)),
                        "t": dict(op.tags),
                        "tj": dumps(dict(op.tags)),
                    }
                )
            elif isinstance(op, Delete):
                wire_ops.append(
                    {"k": "del", "c": op.collection, "id": op.id, "ev": op.expect_version}
                )
            elif isinstance(op, Enqueue):
                wire_ops.append(
                    {
                        "k": "enq",
                        "q": op.queue,
                        "id": op.id,
                        "p": dumps(op.payload),
                        "r": None if op.run_at is None else _f(op.run_at),
                    }
                )
            else:  # pragma: no cover - defensive
                raise TypeError(f"not an op: {op!r}")
        return wire_ops

    async def get(self, collection: str, id: str) -> Record | None:
        h: Any = await self._r.hmget(f"{self.prefix}r:{collection}:{id}", ["v", "c", "d"])
        if h[0] is None:
            return None
        return Record(collection, id, int(h[0]), float(h[1]), loads(h[2]))

    async def get_many(self, collection: str, ids: Sequence[str]) -> builtins.list[Record | None]:
        wanted = list(ids)
        if not wanted:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for i in wanted:
                pipe.hmget(f"{self.prefix}r:{collection}:{i}", ["v", "c", "d"])
            rows: Any = await pipe.execute()
        return [
            None if h[0] is None else Record(collection, i, int(h[0]), float(h[1]), loads(h[2]))
            for i, h in zip(wanted, rows, strict=True)
        ]

    async def get_by(self, collection: str, index: str, value: str) -> Record | None:
        res = await self._call("get_by", self.prefix, collection, index, value)
        if not res:
            return None
        return Record(collection, res[0], int(res[1]), float(res[2]), loads(res[3]))

    async def list(
        self,
        collection: str,
        *,
        limit: int = 25,
        starting_after: str | None = None,
        where: tuple[str, str] | None = None,
    ) -> Page:
        limit = max(0, int(limit))
        if where is None:
            zkey = f"{self.prefix}c:{collection}"
        else:
            zkey = f"{self.prefix}t:{collection}:{where[0]}:{where[1]}"
        if limit == 0 and starting_after is None:
            return Page(data=[], has_more=await self._r.zcard(zkey) > 0)
        res = await self._call("page", self.prefix, zkey, collection, starting_after or "", limit)
        records = [
            Record(collection, res[i], int(res[i + 1]), float(res[i + 2]), loads(res[i + 3]))
            for i in range(0, len(res), 4)
        ]
        return Page(data=records[:limit], has_more=len(records) > limit)

    # -- events -----------------------------------------------------------------
    async def events_after(self, cursor: int, limit: int = 100) -> builtins.list[Event]:
        if limit <= 0:
            return []
        entries: Any = await self._r.xrange(
            f"{self.prefix}ev:log", min=f"{int(cursor) + 1}-0", max="+", count=int(limit)
        )
        return [self._event(entry_id, f) for entry_id, f in entries]

    async def last_event_cursor(self) -> int:
        v = await self._r.get(f"{self.prefix}ev:cursor")
        return int(v or 0)

    async def trim_events(self, before: float, limit: int = 1000) -> int:
        # the stream's ids are cursors, not times: the script finds the newest
        # entry older than `before` and trims up to it (XTRIM MINID)
        return int(await self._call("trim_events", self.prefix, _f(before), max(1, int(limit))))

    async def events_trimmed_through(self) -> int:
        return int(await self._r.get(f"{self.prefix}ev:trimmed") or 0)

    async def rewrite_events(self, transform: Callable[[Event], dict[str, Any] | None]) -> int:
        # Stream entries cannot be edited: copy the log with the new data under the
        # same ids, then swap it in if nothing was appended meanwhile (else again).
        log_key, tmp = f"{self.prefix}ev:log", f"{self.prefix}ev:log:rewrite"
        for _ in range(20):
            await self._r.delete(tmp)
            changed, last_id, start = 0, "", "-"
            while True:
                entries: Any = await self._r.xrange(log_key, min=start, max="+", count=500)
                if not entries:
                    break
                pipe = self._r.pipeline(transaction=False)
                for entry_id, f in entries:
                    event = self._event(entry_id, f)
                    data = transform(event)
                    if data is not None and data != event.data:
                        f = {**f, "d": dumps(data)}
                        changed += 1
                    pipe.xadd(tmp, f, id=entry_id)
                await pipe.execute()
                last_id = entries[-1][0]
                start = "(" + last_id
            if not changed:
                await self._r.delete(tmp)
                return 0
            if await self._call("swap_log", log_key, tmp, last_id):
                return changed
        raise StoreError("the event log kept growing while it was being rewritten")

    @staticmethod
    def _event(entry_id: str, f: dict[str, str]) -> Event:
        return Event(
            cursor=int(entry_id.split("-", 1)[0]),
            id=f["i"],
            type=f["y"],
            resource_id=f["r"],
            sequence=int(f["s"]),
            created_at=float(f["c"]),
            data=loads(f["d"]),
        )

    # -- queues -----------------------------------------------------------------
    def _q(self, queue: str) -> str:
        return f"{self.prefix}q:{queue}"

    async def enqueue(
        self, queue: str, id: str, payload: dict[str, Any], *, run_at: float | None = None
    ) -> bool:
        when = self._clock() if run_at is None else run_at
        return bool(await self._call("enqueue", self._q(queue), id, dumps(payload), _f(when)))

    async def lease(
        self, queue: str, owner: str, lease_s: float, limit: int = 10
    ) -> builtins.list[Task]:
        if limit <= 0:
            return []
        now = self._clock()
        until = float(_f(now + lease_s))
        res = await self._call("lease", self._q(queue), _f(now), _f(until), owner, int(limit))
        return [
            Task(
                queue=queue,
                id=res[i],
                payload=loads(res[i + 1]),
                attempts=int(res[i + 2]),
                run_at=float(res[i + 3]),
                lease_owner=owner,
                lease_until=until,
            )
            for i in range(0, len(res), 4)
        ]

    async def extend_lease(self, queue: str, id: str, owner: str, lease_s: float) -> bool:
        until = self._clock() + lease_s
        return bool(await self._call("extend", self._q(queue), id, owner, _f(until)))

    async def complete(self, queue: str, id: str, owner: str) -> bool:
        return bool(await self._call("complete", self._q(queue), id, owner))

    async def retry_at(self, queue: str, id: str, owner: str, run_at: float) -> bool:
        return bool(await self._call("retry_at", self._q(queue), id, owner, _f(run_at)))

    async def queue_depth(self, queue: str) -> int:
        return int(await self._r.zcard(self._q(queue)))

    async def next_due(self, queue: str) -> float | None:
        res = await self._r.zrange(self._q(queue), 0, 0, withscores=True)
        return float(res[0][1]) if res else None

    # -- kv with TTL --------------------------------------------------------------
    def _kv(self, key: str) -> str:
        return f"{self.prefix}kv:{key}"

    async def kv_get(self, key: str) -> str | None:
        v = await self._r.get(self._kv(key))
        return None if v is None else str(v)

    async def kv_set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        await self._r.set(self._kv(key), value, px=None if ttl_s is None else _ms(ttl_s))

    async def kv_set_if_absent(self, key: str, value: str, ttl_s: float | None = None) -> bool:
        res = await self._r.set(
            self._kv(key), value, nx=True, px=None if ttl_s is None else _ms(ttl_s)
        )
        return bool(res)

    async def kv_replace(
        self, key: str, expected: str, value: str, ttl_s: float | None = None
    ) -> bool:
        ttl = "" if ttl_s is None else str(_ms(ttl_s))
        return bool(await self._call("replace", self._kv(key), expected, value, ttl))

    async def kv_delete(self, key: str) -> None:
        await self._r.delete(self._kv(key))

    # -- rate limits and singleton leases ----------------------------------------------
    async def take_token(self, bucket: str, rate_per_s: float, burst: int) -> TokenBucketResult:
        now = self._clock()
        res = await self._call(
            "take_token", f"{self.prefix}b:{bucket}", _f(rate_per_s), int(burst), _f(now)
        )
        return bucket_result(bool(int(res[0])), float(res[1]), rate_per_s, burst)

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        return bool(await self._call("acquire", f"{self.prefix}l:{name}", owner, _ms(ttl_s)))

    async def release_lease(self, name: str, owner: str) -> None:
        await self._call("release", f"{self.prefix}l:{name}", owner)

    async def sweep_expired(self, idle_bucket_s: float) -> int:
        # kv entries, leases and buckets carry Redis expiries (PX / PEXPIRE)
        return 0

    async def delete_created_before(self, collection: str, before: float, limit: int = 500) -> int:
        return int(
            await self._call(
                "delete_before", self.prefix, collection, _f(before), max(1, int(limit))
            )
        )


class RedisSubscription:
    """Messages of one pub/sub subscription (it holds one connection of its own)."""

    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    async def __aiter__(self) -> AsyncIterator[str]:
        async for message in self._pubsub.listen():
            if message.get("type") == "message":
                yield str(message["data"])

    async def aclose(self) -> None:
        await self._pubsub.aclose()
