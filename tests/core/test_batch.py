"""core/batch.py: calls that arrive while one is under way share the next call."""

from __future__ import annotations

import asyncio

import pytest

from cowrite.core.batch import Coalescer


def start(batcher: Coalescer[int, int], item: int) -> asyncio.Task[int]:
    return asyncio.ensure_future(batcher.run(item))


async def test_a_lone_call_runs_at_once_and_later_ones_share_the_next_call() -> None:
    calls: list[list[int]] = []

    async def square(items: list[int]) -> list[int | BaseException]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return [ValueError(i) if i < 0 else i * i for i in items]

    batcher: Coalescer[int, int] = Coalescer(square)
    first = start(batcher, 1)
    await asyncio.sleep(0)  # the first call is under way: these wait for the next
    waiting = [start(batcher, i) for i in (2, -3, 4)]
    assert await first == 1
    assert [await waiting[0], await waiting[2]] == [4, 16]
    with pytest.raises(ValueError):
        await waiting[1]
    assert calls == [[1], [2, -3, 4]]
    assert batcher.calls == 2
    with pytest.raises(ValueError):
        await batcher.run(-1)  # a lone item's own failure
    assert await batcher.run(6) == 36
    assert calls[-2:] == [[-1], [6]]


async def test_a_failed_call_fails_its_batch_only_and_a_cancelled_waiter_is_skipped() -> None:
    fail = False
    gate = asyncio.Event()

    async def call(items: list[int]) -> list[int | BaseException]:
        await gate.wait()
        if fail:
            raise ConnectionError("down")
        return [-i for i in items]

    batcher: Coalescer[int, int] = Coalescer(call)
    lead = start(batcher, 1)
    await asyncio.sleep(0)
    doomed = [start(batcher, 2), start(batcher, 3)]
    await asyncio.sleep(0)
    fail = True
    gate.set()
    for task in (lead, *doomed):
        with pytest.raises(ConnectionError):
            await task
    fail = False
    lead = start(batcher, 4)
    await asyncio.sleep(0)
    gone, kept = start(batcher, 5), start(batcher, 6)
    await asyncio.sleep(0)
    gone.cancel()
    assert await lead == -4
    assert await kept == -6
    # A wrong number of results is a failure, not a hang.
    wrong: Coalescer[int, int] = Coalescer(lambda items: asyncio.sleep(0, result=[1, 2]))
    with pytest.raises(RuntimeError):
        await wrong.run(1)


async def test_cancel_cancels_what_is_waiting() -> None:
    release = asyncio.Event()

    async def slow(items: list[int]) -> list[int | BaseException]:
        await release.wait()
        return list(items)

    batcher: Coalescer[int, int] = Coalescer(slow)
    in_call = start(batcher, 1)
    await asyncio.sleep(0)
    queued = start(batcher, 2)
    await asyncio.sleep(0)
    batcher.cancel()
    in_call.cancel()
    await asyncio.sleep(0)
    assert in_call.cancelled() and queued.cancelled()
    release.set()
    assert await batcher.run(3) == 3  # usable again afterwards
