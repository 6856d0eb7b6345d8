"""Background tasks of the collaboration service.

Invariant: a background task's failure is logged (never lost silently with
the task); the caller does not wait for it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

# The collaboration service's logger: its name is in every line it logs.
log = logging.getLogger("cowrite.collab")


def log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())


def running_loop(bound: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    """``bound`` while it runs, else the running loop.

    For code that keeps the loop it started on: on Python 3.11
    ``asyncio.get_running_loop()`` makes a ``getpid()`` system call each
    time (5 % of a join's CPU, 8 % of the loop thread at 32,000 delivered
    msg/s in py-spy)."""
    if bound is None or not bound.is_running():
        return asyncio.get_running_loop()
    return bound


class Wakeup:
    """An ``asyncio.Event`` with one waiter, bound to the loop of its first wait.

    ``asyncio.Event.wait()`` looks the running loop up on every call, and on
    Python 3.11 that is a ``getpid()`` system call (2-7 µs on these machines:
    py-spy showed the committer's and the publisher's waits, once per batch).
    """

    __slots__ = ("_flag", "_loop", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    async def wait(self) -> None:
        """Return once ``set()`` was called (at once if it is set)."""
        if self._flag:
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None
