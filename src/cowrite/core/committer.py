"""Group commit: many clients' operations, many documents, one transaction.

Acknowledged means durable.  An ``edit-operation`` handler submits its
``AppendRequest`` and awaits the result; the committer takes everything queued
while the previous transaction was in flight and stores it with one
``append_batch``.  So under load a transaction carries many operations and
durability does not cap throughput, and at low load an operation waits for
one commit only.

After each commit, ``on_committed`` runs with the batch in order (so a
document's operations are delivered in ``seq`` order); it queues the broadcast
and then resolves each submitter's acknowledgement, so the broadcast is queued
before the ack.  Handing a request over is a list append (the first one of a
batch also wakes the committer task): no future, no task per operation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from cowrite.backends.store import AppendRequest, AppendResult, OperationStore, StoreError
from cowrite.core.tasks import Wakeup

log = logging.getLogger("cowrite.committer")

Committed = list[tuple[AppendRequest, AppendResult, Any]]
Failed = list[tuple[AppendRequest, Any]]


class Committer:
    """Queues ``AppendRequest`` objects and commits them in batches.

    No future per operation: whoever submits passes a ``context`` and learns
    the outcome through ``on_committed`` (the batch in commit order, right
    after the transaction) or ``on_failed`` (the requests of a batch that was
    not stored, with the ``StoreError``).  Each submitted request reaches
    exactly one of the two, exactly once.
    """

    def __init__(
        self,
        store: OperationStore,
        on_committed: Callable[[Committed], None],
        on_failed: Callable[[Failed, StoreError], None],
        *,
        max_batch: int = 500,
        min_interval: float = 0.0,
        enough: int = 8,
    ) -> None:
        self._store = store
        self._min_interval = min_interval
        self._enough = max(1, enough)
        self._pacing = False
        self._last_start = float("-inf")
        self._on_committed = on_committed
        self._on_failed = on_failed
        self._max_batch = max_batch
        self._queue: list[tuple[AppendRequest, Any]] = []
        self._wakeup = Wakeup()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.batches = 0
        self.operations = 0
        # Called with (batch size, seconds in append_batch) after each commit.
        self.observe: Callable[[int, float], None] | None = None

    def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="committer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    def submit(self, request: AppendRequest, context: Any = None) -> bool:
        """Queue ``request`` (its outcome goes to ``on_committed`` or
        ``on_failed`` with ``context``).  False, and nothing queued, when the
        committer is stopping."""
        if self._closing:
            return False
        queue = self._queue
        queue.append((request, context))
        if len(queue) == 1 or (self._pacing and len(queue) == self._enough):
            self._wakeup.set()
        return True

    def _fail(self, batch: Failed, exc: StoreError) -> None:
        try:
            self._on_failed(batch, exc)
        except Exception:
            log.exception("failure handler failed")

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._min_interval > 0 and not self._closing:
                # Pacing: a transaction starts ``min_interval`` after the last
                # one started, or as soon as ``enough`` operations wait.  Under
                # a steady trickle of edits this turns many one-operation
                # commits (each paying an fsync's CPU) into fewer, larger
                # ones; under load batches fill before the interval ends; an
                # edit after a quiet moment is committed at once.
                loop = self._loop
                assert loop is not None  # bound by start()
                wait = self._last_start + self._min_interval - loop.time()
                if wait > 0 and len(self._queue) < self._enough:
                    self._wakeup.clear()
                    self._pacing = True
                    timer = loop.call_later(wait, self._wakeup.set)
                    try:
                        await self._wakeup.wait()
                    finally:
                        timer.cancel()
                        self._pacing = False
                self._last_start = loop.time()
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            started = time.perf_counter()
            try:
                results = await self._store.append_batch([req for req, _ in batch])
            except StoreError as exc:
                log.warning("commit of %d operations failed: %s", len(batch), exc)
                self._fail(batch, exc)
                continue
            except Exception as exc:
                log.exception("commit failed")
                self._fail(batch, StoreError(str(exc)))
                continue
            self.batches += 1
            self.operations += len(batch)
            if self.observe is not None:
                self.observe(len(batch), time.perf_counter() - started)
            try:
                self._on_committed(
                    [(req, res, ctx) for (req, ctx), res in zip(batch, results, strict=True)]
                )
            except Exception:
                log.exception("delivery of committed operations failed")
