"""Group commit: many clients' operations, many documents, one transaction.

Acknowledged means durable.  An ``edit-operation`` handler submits its
``AppendRequest`` and awaits the result; the committer takes everything queued
while the previous transaction was in flight and stores it with one
``append_batch``.  So under load a transaction carries many operations and
durability does not cap throughput, and at low load an operation waits for
one commit only.

After each commit, ``on_committed`` runs with the batch in order (so a
document's operations are delivered in ``seq`` order) *before* the submitters'
futures resolve: the broadcast is queued before the ack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from cowrite.backends.store import AppendRequest, AppendResult, OperationStore, StoreError

log = logging.getLogger("cowrite.committer")

Committed = list[tuple[AppendRequest, AppendResult, Any]]


class Committer:
    def __init__(
        self,
        store: OperationStore,
        on_committed: Callable[[Committed], None],
        *,
        max_batch: int = 500,
    ) -> None:
        self._store = store
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._queue: list[tuple[AppendRequest, Any, asyncio.Future[AppendResult]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.operations = 0
        # Called with (batch size, seconds in append_batch) after each commit.
        self.observe: Callable[[int, float], None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="committer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    def submit(self, request: AppendRequest, context: Any = None) -> asyncio.Future[AppendResult]:
        """Queue ``request``; the future resolves once it is durable.

        ``context`` travels with it to ``on_committed`` (the decoded operation,
        so it is not decoded again for the broadcast)."""
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        if self._closing:
            future.set_exception(StoreError("shutting down"))
            return future
        self._queue.append((request, context, future))
        self._wakeup.set()
        return future

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            started = time.perf_counter()
            try:
                results = await self._store.append_batch([req for req, _, _ in batch])
            except StoreError as exc:
                log.warning("commit of %d operations failed: %s", len(batch), exc)
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except Exception as exc:
                log.exception("commit failed")
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(StoreError(str(exc)))
                continue
            self.batches += 1
            self.operations += len(batch)
            if self.observe is not None:
                self.observe(len(batch), time.perf_counter() - started)
            committed = [(req, res, ctx) for (req, ctx, _), res in zip(batch, results, strict=True)]
            try:
                self._on_committed(committed)
            except Exception:
                log.exception("delivery of committed operations failed")
            for (_, _, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
