"""Calls that arrive together share one backend round trip.

Invariant: every item submitted gets exactly one outcome, the one its batch's
call gave it, in submission order within the batch; a call never starts while
another of the same coalescer is under way.

A join storm (clients of a dead instance rejoining a survivor) makes every join
read a page of the log, join presence and maybe create its document: one
round trip each, per join.  A :class:`Coalescer` gathers the items submitted
while its previous call is under way (or in the same event-loop turn) and
hands them to one call: one PostgreSQL statement or one Redis pipeline for a
whole burst of joins, and one call per join when they come one at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``await run(item)`` is ``call([..., item, ...])[i]``.

    ``call`` returns one result per item, in order.  A result that is an
    exception instance fails only its item; an exception raised by ``call``
    fails every item of that batch.

    A call made while none is under way runs at once, in the caller, with its
    one item: no task, no future (an in-process backend that answers without
    suspending never batches and pays nothing).  Items that arrive while a
    call is under way wait; when it ends, one task calls for all of them.
    """

    def __init__(self, call: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]) -> None:
        self._call = call
        self._busy = False
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.calls = 0

    async def run(self, item: T) -> R:
        if self._busy:
            future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
            self._queue.append((item, future))
            return await future
        self._busy = True
        try:
            self.calls += 1
            results = await self._call([item])
            if len(results) != 1:
                raise RuntimeError(f"{len(results)} results for 1 item")
        finally:
            self._hand_over()
        result = results[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def cancel(self) -> None:
        """Stop: items waiting for a batch are cancelled."""
        if self._task is not None:
            self._task.cancel()
        for _, future in self._queue:
            future.cancel()
        self._queue = []

    def _hand_over(self) -> None:
        if self._queue:
            self._task = asyncio.ensure_future(self._drain())
        else:
            self._busy = False

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                self.calls += 1
                try:
                    results = await self._call([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{len(results)} results for {len(batch)} items")
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # cancelled by its waiter
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        except asyncio.CancelledError:
            for _, future in (*batch, *self._queue):
                future.cancel()
            self._queue = []
            raise
        finally:
            self._task = None
            self._busy = False
