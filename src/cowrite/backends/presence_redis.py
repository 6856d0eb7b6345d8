"""``PresenceStore`` shared by several cowrite instances through one Redis.

Every instance keeps its own connections in Redis; the roster of a document is
the union over instances.  Each instance proves it is alive with a heartbeat,
and the connections of an instance that stops proving it are removed by
``reap``, run periodically by every instance.

Data layout
===========

``P`` below is ``prefix + "presence:"`` (``"cowrite:presence:"`` by default).
A key is one of a fixed set of kinds followed by a document or instance id;
no kind contains a colon, so the id after ``<kind>:`` may contain anything
(colons, braces, spaces, any Unicode) without two keys ever colliding.

``P instances``          set    ids of instances that may own connections
``P alive:<instance>``   string ``"1"`` with expiry ``ttl * 2 / 3``, refreshed every
                                ``ttl / 3`` by the instance's heartbeat
``P inst:<instance>``    set    the instance's connections, each the JSON
                                array ``[document_id, user_id, connection_id]``
``P count:<document>``   hash   user id -> number of the user's connections in
                                the document, over all instances
``P names:<document>``   hash   user id -> display name (from the first join)
``P states:<document>``  hash   user id -> latest presence state, as JSON

A user is in the roster of a document exactly when their ``count`` field
exists; their ``names`` field exists with it and their ``states`` field may.
Redis deletes empty hashes and sets, so nothing is kept for a document nobody
is in, nor for an instance without connections.

Scripts
=======

Every change is one Lua script, so it is atomic with respect to every other
change from any instance (Redis runs one script at a time):

``join``     adds the connection to ``inst:<self>``; only if it was not there,
             increments the user's ``count`` and, when that reaches 1 (the
             user's first connection anywhere), records the name and returns 1.
             It also registers the instance in ``instances`` and, should its
             liveness key be missing, sets it, so that the new connection is
             neither unreachable for ``reap`` nor reaped before the next beat.
``leave``    removes the connection from ``inst:<self>``; only if it was there,
             decrements ``count`` and, when that reaches 0 (the user's last
             connection anywhere), deletes the user's fields and returns 1.
``state``    sets the state only if the user is present, so a late update
             cannot leave a state behind for a user who has left.
``evict``    removes every connection of one instance, decrementing counts as
             ``leave`` does, and returns the (document, user) pairs that
             reached 0; then deletes the instance's keys and unregisters it.
             Unless forced (``stop``, the goodbye), it does nothing while the
             instance's liveness key exists.  Because the check, the removal
             and the unregistering are one script, when several instances reap
             the same dead one, exactly one of them gets each pair; the others
             find nothing left.
``beat``     refreshes the liveness key and registers the instance; reports
             whether the key had expired meanwhile (then other instances may
             already have reaped this one's connections: see below).

``join``, ``leave`` and ``state`` declare every key they touch; ``evict``
derives document keys from the connections it finds, so it needs a standalone
Redis (or a cluster where ``prefix`` holds a hash tag such as ``"{cowrite}:"``,
putting every key in one slot).

Timing
======

The liveness key of an instance that dies expires ``ttl * 2 / 3`` after its
last heartbeat, hence between ``ttl / 3`` and ``ttl * 2 / 3`` after its death
(one missed heartbeat is tolerated).  Its users leave the roster at the first
``reap`` after that: with every instance reaping every ``ttl / 3``, within
``ttl`` of the death (30 s by default).  An instance whose heartbeat stalls for
longer than ``ttl * 2 / 3`` (event
loop blocked, Redis unreachable) is indistinguishable from a dead one: its
connections are reaped and their users announced as left.  It logs a warning
when it notices; its later ``leave`` calls for the reaped connections return
``False``, so nobody announces those users twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cowrite.backends.presence import PresenceEntry
from cowrite.errors import ConfigError, LocalError

log = logging.getLogger("cowrite.presence")

#: Seconds ``stop()`` waits for the heartbeat to finish a beat in flight.
_STOP_WAIT = 10.0

_JOIN = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2], 'NX')
if redis.call('SADD', KEYS[3], ARGV[3]) == 0 then
    return 0
end
if redis.call('HINCRBY', KEYS[4], ARGV[4], 1) == 1 then
    redis.call('HSET', KEYS[5], ARGV[4], ARGV[5])
    return 1
end
return 0
"""
# KEYS: instances, alive:<self>, inst:<self>, count:<doc>, names:<doc>
# ARGV: instance id, ttl in ms, connection member, user id, name

# _JOIN, then the document's names and states (what ``roster`` reads), in one
# script: one round trip, atomic.
_JOIN_ROSTER = """
local first = 0
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2], 'NX')
if redis.call('SADD', KEYS[3], ARGV[3]) == 1 then
    if redis.call('HINCRBY', KEYS[4], ARGV[4], 1) == 1 then
        redis.call('HSET', KEYS[5], ARGV[4], ARGV[5])
        first = 1
    end
end
return {first, redis.call('HGETALL', KEYS[5]), redis.call('HGETALL', KEYS[6])}
"""
# KEYS: as _JOIN, then states:<doc>.  ARGV: as _JOIN.

_LEAVE = """
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then
    return 0
end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) > 0 then
    return 0
end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
return 1
"""
# KEYS: inst:<self>, count:<doc>, names:<doc>, states:<doc>
# ARGV: connection member, user id

_STATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
return 0
"""
# KEYS: count:<doc>, states:<doc>
# ARGV: user id, state JSON

_EVICT = """
if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then
    return {}
end
local left = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local conn = cjson.decode(member)
    local doc, user = conn[1], conn[2]
    local count = ARGV[3] .. 'count:' .. doc
    if redis.call('HINCRBY', count, user, -1) <= 0 then
        redis.call('HDEL', count, user)
        redis.call('HDEL', ARGV[3] .. 'names:' .. doc, user)
        redis.call('HDEL', ARGV[3] .. 'states:' .. doc, user)
        table.insert(left, doc)
        table.insert(left, user)
    end
end
redis.call('DEL', KEYS[3])
if ARGV[1] == '1' then
    redis.call('DEL', KEYS[2])
end
redis.call('SREM', KEYS[1], ARGV[2])
return left
"""
# KEYS: instances, alive:<instance>, inst:<instance>
# ARGV: "1" to force (goodbye) or "0" (reap), instance id, P

_BEAT = """
local existed = redis.call('SET', KEYS[2], '1', 'PX', ARGV[2], 'GET')
redis.call('SADD', KEYS[1], ARGV[1])
if existed then
    return 1
end
return 0
"""
# KEYS: instances, alive:<self>
# ARGV: instance id, ttl in ms


def _member(document_id: str, user_id: str, connection_id: str) -> str:
    """The entry of one connection in ``inst:<instance>`` (decoded by ``evict``).

    Deterministic, so ``leave`` rebuilds exactly what ``join`` stored.
    """
    return json.dumps([document_id, user_id, connection_id], ensure_ascii=False)


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    """A Lua HGETALL reply (a flat list) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _entries(names: dict[Any, Any], states: dict[Any, Any]) -> list[PresenceEntry]:
    return [
        PresenceEntry(uid, name, orjson.loads(states[uid]) if uid in states else None)
        for uid, name in sorted(names.items())
    ]


class _Connection:
    """A client and the scripts registered on it (EVALSHA; redis-py loads a script
    the server does not know and retries)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.join = client.register_script(_JOIN)
        self.join_roster = client.register_script(_JOIN_ROSTER)
        self.leave = client.register_script(_LEAVE)
        self.state = client.register_script(_STATE)
        self.evict = client.register_script(_EVICT)
        self.beat = client.register_script(_BEAT)


POOL_SIZE = 32  # connections to Redis per instance
POOL_WAIT = 30.0  # seconds a call may wait for a free pooled connection


class RedisPresence:
    """Implements ``PresenceStore`` in Redis, shared by instances; see the module doc.

    ``instance_id`` must be unique among live instances and should be unique
    over time (a restarted instance reusing an id would keep the dead one's
    connections alive).  ``ttl`` bounds how long a dead instance's users stay
    in the roster (see Timing).  Call ``start()`` before anything else and
    ``stop()`` at the end; call ``reap()`` every ``reap_interval`` seconds and
    announce ``user-left`` for what it returns.

    Redis errors (``redis.exceptions.RedisError``) propagate from every call
    except the heartbeat, which logs them and retries.
    """

    def __init__(
        self,
        url: str,
        *,
        instance_id: str,
        ttl: float = 30.0,
        prefix: str = "cowrite:",
    ) -> None:
        if not instance_id:
            raise ConfigError("RedisPresence needs a non-empty instance_id")
        if not ttl > 0:
            raise ConfigError(f"RedisPresence ttl must be positive, not {ttl!r}")
        self.url = url
        self.instance_id = instance_id
        self.ttl = ttl
        #: How often the heartbeat runs, and how often ``reap`` should be called.
        self.reap_interval = ttl / 3
        # The liveness key's expiry: two heartbeat intervals (see Timing).
        self._ttl_ms = str(max(1, round(ttl * 2000 / 3)))
        self._base = prefix + "presence:"
        self._instances = self._base + "instances"
        self._alive = self._instance_key("alive", instance_id)
        self._inst = self._instance_key("inst", instance_id)
        self._redis: _Connection | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Connect, announce this instance alive and start the heartbeat.

        Raises ``RedisError`` (and stays stopped) if Redis cannot be reached.
        """
        if self._redis is not None:
            raise LocalError("RedisPresence.start() called twice")
        # A bounded pool that waits for a free connection: a mass disconnect
        # (thousands of concurrent leaves) queues instead of failing with
        # "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=POOL_SIZE, timeout=POOL_WAIT, decode_responses=True
        )
        conn = _Connection(aioredis.Redis.from_pool(pool))  # the client owns (closes) the pool
        try:
            await self._beat_once(conn)
        except BaseException:
            await conn.client.aclose()
            raise
        self._redis = conn
        self._stopping = asyncio.Event()
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._beat_forever(conn, self._stopping), name=f"presence heartbeat {self.instance_id}"
        )

    async def stop(self) -> list[tuple[str, str]]:
        """Say goodbye: stop the heartbeat and remove all of this instance's
        connections at once, without waiting for ``ttl``.

        Returns the (document_id, user_id) pairs of users who thereby left a
        document entirely, for the caller to announce (empty if every
        connection was left before).  Idempotent; the client is closed even if
        Redis fails, and the error then propagates.
        """
        conn, self._redis = self._redis, None
        if conn is None:
            return []
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            # Ask the heartbeat to end rather than cancel it mid-command: on Python
            # 3.11, redis-py's asyncio.wait_for can swallow a cancellation that
            # arrives as the command completes (CPython gh-86296), and the task
            # would beat on forever.  Waiting also orders the last beat before
            # the goodbye.  Cancelling stays the fallback for a hung command.
            self._stopping.set()
            await asyncio.wait({heartbeat}, timeout=_STOP_WAIT)
            if not heartbeat.done():
                heartbeat.cancel()
                await asyncio.wait({heartbeat}, timeout=_STOP_WAIT)
        try:
            return await self._evict_instance(conn, self.instance_id, force=True)
        finally:
            await conn.client.aclose()

    async def reap(self) -> list[tuple[str, str]]:
        """Remove the connections of every other instance whose liveness key
        has expired; return the (document_id, user_id) pairs of users who
        thereby left a document entirely.

        Across all instances reaping concurrently, each pair is returned once.
        """
        conn = self._connection()
        # decode_responses=True: the client returns str, whatever its annotations say.
        members = cast(set[str], await conn.client.smembers(self._instances))
        others = sorted(i for i in members if i != self.instance_id)
        left: list[tuple[str, str]] = []
        for instance in others:
            # One script per instance, which checks liveness and evicts atomically: a
            # check made here, before the script, could be overtaken by a heartbeat.
            left += await self._evict_instance(conn, instance, force=False)
        return left

    # -- PresenceStore ----------------------------------------------------------

    async def join(self, document_id: str, user_id: str, name: str, connection_id: str) -> bool:
        """Record the connection; ``True`` if it is the user's first in the
        document over all instances."""
        keys, args = self._join_call(document_id, user_id, name, connection_id)
        first = await self._connection().join(keys=keys[:5], args=args)
        return bool(first)

    async def join_and_roster(
        self, document_id: str, user_id: str, name: str, connection_id: str
    ) -> tuple[bool, list[PresenceEntry]]:
        keys, args = self._join_call(document_id, user_id, name, connection_id)
        first, names, states = await self._connection().join_roster(keys=keys, args=args)
        return bool(first), _entries(_pairs(names), _pairs(states))

    async def join_and_roster_many(
        self, joins: Sequence[tuple[str, str, str, str]]
    ) -> list[tuple[bool, list[PresenceEntry]]]:
        if len(joins) == 1:
            return [await self.join_and_roster(*joins[0])]
        redis = self._connection()
        # One pipeline (one round trip, not a transaction): the scripts run
        # one after another, in order, as separate calls would.
        pipe = redis.client.pipeline(transaction=False)
        for join in joins:
            keys, args = self._join_call(*join)
            await redis.join_roster(keys=keys, args=args, client=pipe)
        replies = await pipe.execute()
        return [
            (bool(first), _entries(_pairs(names), _pairs(states)))
            for first, names, states in replies
        ]

    def _join_call(
        self, document_id: str, user_id: str, name: str, connection_id: str
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of _JOIN (the first five keys) and _JOIN_ROSTER."""
        keys = [
            self._instances,
            self._alive,
            self._inst,
            self._doc_key("count", document_id),
            self._doc_key("names", document_id),
            self._doc_key("states", document_id),
        ]
        args = [
            self.instance_id,
            self._ttl_ms,
            _member(document_id, user_id, connection_id),
            user_id,
            name,
        ]
        return keys, args

    async def leave(self, document_id: str, user_id: str, connection_id: str) -> bool:
        """Forget the connection (joined through this instance); ``True`` if it
        was the user's last in the document over all instances."""
        keys, args = self._leave_call(document_id, user_id, connection_id)
        last = await self._connection().leave(keys=keys, args=args)
        return bool(last)

    async def leave_many(self, leaves: Sequence[tuple[str, str, str]]) -> list[bool]:
        if len(leaves) == 1:
            return [await self.leave(*leaves[0])]
        if not leaves:
            return []
        redis = self._connection()
        # One pipeline (one round trip, not a transaction), like the joins: a
        # mass disconnect made a script call per connection, and thousands at
        # once outran the pool (connect timeouts, "presence leave failed").
        pipe = redis.client.pipeline(transaction=False)
        for leave in leaves:
            keys, args = self._leave_call(*leave)
            await redis.leave(keys=keys, args=args, client=pipe)
        return [bool(last) for last in await pipe.execute()]

    def _leave_call(
        self, document_id: str, user_id: str, connection_id: str
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of _LEAVE."""
        keys = [
            self._inst,
            self._doc_key("count", document_id),
            self._doc_key("names", document_id),
            self._doc_key("states", document_id),
        ]
        return keys, [_member(document_id, user_id, connection_id), user_id]

    async def set_state(self, document_id: str, user_id: str, state: Any) -> None:
        """Remember the user's latest presence state (JSON-serialisable, as
        ``orjson`` understands it); no-op if the user is not in the document."""
        await self._connection().state(
            keys=[self._doc_key("count", document_id), self._doc_key("states", document_id)],
            args=[user_id, orjson.dumps(state)],
        )

    async def roster(self, document_id: str) -> list[PresenceEntry]:
        """Everyone in the document on any live (or not yet reaped) instance,
        sorted by user id; a consistent snapshot."""
        async with self._connection().client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._doc_key("names", document_id))
            pipe.hgetall(self._doc_key("states", document_id))
            names, states = await pipe.execute()
        return _entries(names, states)

    # -- internals ------------------------------------------------------------

    def _connection(self) -> _Connection:
        if self._redis is None:
            raise LocalError("RedisPresence used outside start()/stop()")
        return self._redis

    def _doc_key(self, kind: str, document_id: str) -> str:
        return f"{self._base}{kind}:{document_id}"

    def _instance_key(self, kind: str, instance_id: str) -> str:
        return f"{self._base}{kind}:{instance_id}"

    async def _evict_instance(
        self, conn: _Connection, instance: str, *, force: bool
    ) -> list[tuple[str, str]]:
        flat: list[str] = await conn.evict(
            keys=[
                self._instances,
                self._instance_key("alive", instance),
                self._instance_key("inst", instance),
            ],
            args=["1" if force else "0", instance, self._base],
        )
        return list(zip(flat[::2], flat[1::2], strict=True))

    async def _beat_once(self, conn: _Connection) -> bool:
        """Refresh the liveness key; ``False`` if it had expired."""
        existed = await conn.beat(
            keys=[self._instances, self._alive], args=[self.instance_id, self._ttl_ms]
        )
        return bool(existed)

    async def _beat_forever(self, conn: _Connection, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.reap_interval):
                    await stopping.wait()
            if stopping.is_set():
                return
            try:
                if not await self._beat_once(conn):
                    log.warning(
                        "presence liveness key of instance %s had expired; other instances "
                        "may have reaped its connections and announced their users as left",
                        self.instance_id,
                    )
            except RedisError:
                log.exception("presence heartbeat of instance %s failed", self.instance_id)
