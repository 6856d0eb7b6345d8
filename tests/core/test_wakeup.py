"""core.tasks.Wakeup: the committer's and the publisher's loop-bound event."""

from __future__ import annotations

import asyncio

from cowrite.core.tasks import Wakeup


async def test_wait_returns_at_once_when_set() -> None:
    wakeup = Wakeup()
    wakeup.set()
    assert wakeup.is_set()
    await asyncio.wait_for(wakeup.wait(), 1.0)


async def test_wait_until_set_from_a_callback() -> None:
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, wakeup.set)
    await asyncio.wait_for(wakeup.wait(), 1.0)
    assert wakeup.is_set()
    wakeup.clear()
    assert not wakeup.is_set()
    waiter = asyncio.ensure_future(wakeup.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    wakeup.set()
    await asyncio.wait_for(waiter, 1.0)


async def test_a_cancelled_wait_leaves_it_usable() -> None:
    wakeup = Wakeup()
    waiter = asyncio.ensure_future(wakeup.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    wakeup.set()  # no waiter: nothing to resolve, no error
    await asyncio.wait_for(wakeup.wait(), 1.0)


def test_each_loop_gets_its_own_future() -> None:
    wakeup = Wakeup()

    async def once() -> None:
        asyncio.get_running_loop().call_soon(wakeup.set)
        await asyncio.wait_for(wakeup.wait(), 1.0)
        wakeup.clear()

    asyncio.run(once())
    asyncio.run(once())  # the first loop is closed: the next wait binds this one
