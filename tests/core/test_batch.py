"""core/batch.py: calls that arrive together share one call."""

from __future__ import annotations

import asyncio

import pytest

from cowrite.core.batch import Coalescer


async def test_items_submitted_together_share_one_call_and_get_their_own_results() -> None:
    calls: list[list[int]] = []

    async def square(items: list[int]) -> list[int | BaseException]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return [ValueError(i) if i < 0 else i * i for i in items]

    batcher: Coalescer[int, int] = Coalescer(square)
    first = [batcher.submit(i) for i in (1, 2, -3)]
    await asyncio.sleep(0)  # the first call is under way: these wait for the next
    second = [batcher.submit(i) for i in (4, 5)]
    assert [await f for f in first[:2]] == [1, 4]
    with pytest.raises(ValueError):
        await first[2]
    assert [await f for f in second] == [16, 25]
    assert calls == [[1, 2, -3], [4, 5]]
    assert batcher.calls == 2
    # One at a time: one call each.
    assert await batcher.submit(6) == 36
    assert calls[-1] == [6]


async def test_a_failed_call_fails_its_batch_only_and_a_cancelled_waiter_is_skipped() -> None:
    fail = True

    async def call(items: list[str]) -> list[str | BaseException]:
        await asyncio.sleep(0)
        if fail:
            raise ConnectionError("down")
        return [item.upper() for item in items]

    batcher: Coalescer[str, str] = Coalescer(call)
    doomed = [batcher.submit("a"), batcher.submit("b")]
    for future in doomed:
        with pytest.raises(ConnectionError):
            await future
    fail = False
    gone = batcher.submit("x")
    kept = batcher.submit("y")
    gone.cancel()
    assert await kept == "Y"
    # A wrong number of results is a failure of the batch, not a hang.
    wrong: Coalescer[int, int] = Coalescer(lambda items: asyncio.sleep(0, result=[1]))
    futures = [wrong.submit(1), wrong.submit(2)]
    for future in futures:
        with pytest.raises(RuntimeError):
            await future


async def test_cancel_cancels_what_is_waiting() -> None:
    release = asyncio.Event()

    async def slow(items: list[int]) -> list[int | BaseException]:
        await release.wait()
        return list(items)

    batcher: Coalescer[int, int] = Coalescer(slow)
    in_call = batcher.submit(1)
    await asyncio.sleep(0)
    queued = batcher.submit(2)
    batcher.cancel()
    await asyncio.sleep(0)
    assert in_call.cancelled() and queued.cancelled()
