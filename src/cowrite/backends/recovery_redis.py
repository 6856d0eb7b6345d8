"""Recovery records in Redis, shared by every instance.

One hash per record, ``<prefix>recovery:<pid>``: field ``e`` is the epoch,
``d`` the rest as JSON (``{"sid", "user", "docs"}``).  The key's expiry is
the record's ``ttl``.  Each operation is one Lua script (atomic); ``save``
pipelines one script call per record, so refreshing the records of many
sockets costs one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from cowrite.backends.recovery import RecoveryRecord
from cowrite.errors import LocalError

_SAVE = """
local e = redis.call('HGET', KEYS[1], 'e')
if e and tonumber(e) > tonumber(ARGV[1]) then
    return 0
end
redis.call('HSET', KEYS[1], 'e', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# KEYS: the record; ARGV: epoch, data, ttl in ms

_CLAIM = """
local d = redis.call('HGET', KEYS[1], 'd')
if not d then
    return false
end
local e = redis.call('HINCRBY', KEYS[1], 'e', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {e, d}
"""
# KEYS: the record; ARGV: ttl in ms

_DISCARD = """
if redis.call('HGET', KEYS[1], 'e') == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS: the record; ARGV: epoch


POOL_SIZE = 16  # connections to Redis per instance
POOL_WAIT = 30.0  # seconds a call may wait for a free pooled connection


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


def _data(record: RecoveryRecord) -> str:
    return orjson.dumps(
        {"sid": record.sid, "user": record.user_id, "docs": record.documents}
    ).decode()


class RedisRecovery:
    """Implements ``RecoveryStore`` in Redis; see the module docstring.

    Redis errors (``redis.exceptions.RedisError``) propagate; a record that
    does not decode is treated as absent.
    """

    def __init__(self, url: str, *, prefix: str = "cowrite:") -> None:
        self.url = url
        self._base = prefix + "recovery:"
        self._client: aioredis.Redis | None = None
        self._save: Any = None
        self._claim: Any = None
        self._discard: Any = None

    async def start(self) -> None:
        if self._client is not None:
            raise LocalError("RedisRecovery.start() called twice")
        # Bounded, waiting for a free connection: when an instance dies its
        # clients all come back at once, and each resume is one claim.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=POOL_SIZE, timeout=POOL_WAIT, decode_responses=True
        )
        client = aioredis.Redis.from_pool(pool)  # the client owns (closes) the pool
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._save = client.register_script(_SAVE)
        self._claim = client.register_script(_CLAIM)
        self._discard = client.register_script(_DISCARD)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _connected(self) -> aioredis.Redis:
        if self._client is None:
            raise LocalError("RedisRecovery used before start()")
        return self._client

    async def save(self, items: Sequence[tuple[str, RecoveryRecord, float]]) -> None:
        client = self._connected()
        if not items:
            return
        pipe = client.pipeline(transaction=False)
        for pid, record, ttl in items:
            await self._save(
                keys=[self._base + pid],
                args=[record.epoch, _data(record), _ms(ttl)],
                client=pipe,
            )
        await pipe.execute()

    async def claim(self, pid: str, ttl: float) -> RecoveryRecord | None:
        client = self._connected()
        reply = await self._claim(keys=[self._base + pid], args=[_ms(ttl)], client=client)
        if not reply:
            return None
        epoch, data = reply
        try:
            fields = orjson.loads(data)
            docs = fields["docs"]
            record = RecoveryRecord(
                sid=str(fields["sid"]),
                user_id=str(fields["user"]),
                epoch=int(epoch),
                documents={str(d): int(s) for d, s in docs.items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return record

    async def discard(self, pid: str, epoch: int) -> None:
        client = self._connected()
        await self._discard(keys=[self._base + pid], args=[epoch], client=client)
