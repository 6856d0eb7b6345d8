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
    """``submit(item)`` returns a future of ``call([..., item, ...])[i]``.

    ``call`` returns one result per item, in order.  A result that is an
    exception instance fails only its item; an exception raised by ``call``
    fails every item of that batch.
    """

    def __init__(self, call: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]) -> None:
        self._call = call
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.calls = 0

    def submit(self, item: T) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return future

    def cancel(self) -> None:
        """Stop: items not yet answered are cancelled."""
        if self._task is not None:
            self._task.cancel()
        for _, future in self._queue:
            future.cancel()
        self._queue = []

    async def _run(self) -> None:
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
