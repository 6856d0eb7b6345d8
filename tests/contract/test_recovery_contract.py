"""The ``RecoveryStore`` contract, run against every implementation.

The ``recovery`` fixture is parametrised over ``memory`` (``MemoryRecovery``)
and ``redis`` (a started ``RedisRecovery`` on the real server at
``COWRITE_TEST_REDIS_URL``, under a key prefix of its own per test).  Without
a reachable Redis the redis tests skip, except under ``CI`` where they fail.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from tests.contract.test_presence_contract import ODD_IDS, REDIS_URL, redis_or_skip

from cowrite.backends.recovery import RecoveryRecord, RecoveryStore
from cowrite.backends.recovery_memory import MemoryRecovery
from cowrite.backends.recovery_redis import RedisRecovery
from cowrite.errors import LocalError


@pytest.fixture(params=["memory", "redis"])
async def recovery(request: pytest.FixtureRequest) -> AsyncIterator[RecoveryStore]:
    if request.param == "memory":
        yield MemoryRecovery()
        return
    raw = await redis_or_skip()
    prefix = f"cowrite-test:{uuid.uuid4().hex}:"
    store = RedisRecovery(REDIS_URL, prefix=prefix)
    await store.start()
    try:
        yield store
    finally:
        await store.stop()
        leftover = [k async for k in raw.scan_iter(match=prefix + "*")]
        if leftover:
            await raw.delete(*leftover)
        await raw.aclose()


def record(epoch: int = 0, **docs: int) -> RecoveryRecord:
    return RecoveryRecord(sid="sid-1", user_id="alice", epoch=epoch, documents=dict(docs))


async def test_claim_of_unknown_pid_is_none(recovery: RecoveryStore) -> None:
    assert await recovery.claim("nobody", 10.0) is None


async def test_saved_record_is_claimed_with_epoch_raised(recovery: RecoveryStore) -> None:
    await recovery.save([("p1", record(0, a=3, b=0), 10.0)])
    got = await recovery.claim("p1", 10.0)
    assert got == RecoveryRecord("sid-1", "alice", 1, {"a": 3, "b": 0})
    again = await recovery.claim("p1", 10.0)
    assert again is not None and again.epoch == 2 and again.documents == {"a": 3, "b": 0}


async def test_save_with_lower_epoch_is_ignored(recovery: RecoveryStore) -> None:
    await recovery.save([("p1", record(0, a=1), 10.0)])
    claimed = await recovery.claim("p1", 10.0)
    assert claimed is not None and claimed.epoch == 1
    # The old owner (epoch 0) writes late: ignored; the new owner's write wins.
    await recovery.save([("p1", record(0, a=99), 10.0), ("p2", record(0, x=5), 10.0)])
    await recovery.save([("p1", record(1, a=7), 10.0)])
    got = await recovery.claim("p1", 10.0)
    assert got is not None and got.documents == {"a": 7} and got.epoch == 2
    other = await recovery.claim("p2", 10.0)
    assert other is not None and other.documents == {"x": 5}


async def test_records_expire(recovery: RecoveryStore) -> None:
    if isinstance(recovery, MemoryRecovery):
        now = [0.0]
        recovery = MemoryRecovery(clock=lambda: now[0], sweep_interval=1.0)
        await recovery.save([("p1", record(0), 0.2), ("p2", record(0), 5.0)])
        now[0] = 0.3
        await recovery.save([("p3", record(0), 5.0)])
        now[0] = 1.5
        await recovery.save([])  # sweeps p1 away
        assert "p1" not in recovery._records
    else:
        await recovery.save([("p1", record(0), 0.2), ("p2", record(0), 5.0)])
        await asyncio.sleep(0.35)
    assert await recovery.claim("p1", 10.0) is None
    assert await recovery.claim("p2", 10.0) is not None


async def test_claim_sets_the_new_ttl(recovery: RecoveryStore) -> None:
    await recovery.save([("p1", record(0), 0.2)])
    assert await recovery.claim("p1", 30.0) is not None
    if isinstance(recovery, MemoryRecovery):
        return  # the clock-driven expiry is covered above; the ttl is what was given
    await asyncio.sleep(0.35)
    assert await recovery.claim("p1", 30.0) is not None


async def test_discard_needs_the_current_epoch(recovery: RecoveryStore) -> None:
    await recovery.save([("p1", record(0), 10.0)])
    assert await recovery.claim("p1", 10.0) is not None  # epoch 1
    await recovery.discard("p1", 0)  # the old owner: ignored
    got = await recovery.claim("p1", 10.0)
    assert got is not None and got.epoch == 2
    await recovery.discard("p1", 2)
    assert await recovery.claim("p1", 10.0) is None
    await recovery.discard("never", 0)  # no error


async def test_odd_ids_round_trip(recovery: RecoveryStore) -> None:
    docs = {doc: i for i, doc in enumerate(ODD_IDS)}
    for i, pid in enumerate(ODD_IDS[1:6]):
        await recovery.save([(pid, RecoveryRecord(f"s{i}", ODD_IDS[-3], 0, docs), 10.0)])
    for i, pid in enumerate(ODD_IDS[1:6]):
        got = await recovery.claim(pid, 10.0)
        assert got == RecoveryRecord(f"s{i}", ODD_IDS[-3], 1, docs)


async def test_redis_store_must_be_started() -> None:
    store = RedisRecovery(REDIS_URL, prefix="cowrite-test:unused:")
    with pytest.raises(LocalError):
        await store.claim("p", 1.0)
