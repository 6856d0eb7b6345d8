"""Recovery records in this process's memory (one instance)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from cowrite.backends.recovery import RecoveryRecord


class MemoryRecovery:
    """Implements ``RecoveryStore`` in a dict.

    Every call runs on the event loop without awaiting, so each is atomic.
    Expired records are dropped when looked at and, in passing, by ``save``
    (at most once per ``sweep_interval`` seconds), so memory stays bounded by
    the records of the last ``ttl``.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, sweep_interval: float = 10.0
    ) -> None:
        self._clock = clock
        self._records: dict[str, tuple[RecoveryRecord, float]] = {}
        self._sweep_interval = sweep_interval
        self._next_sweep = clock() + sweep_interval

    async def save(self, items: Sequence[tuple[str, RecoveryRecord, float]]) -> None:
        now = self._clock()
        for pid, record, ttl in items:
            current = self._live(pid, now)
            if current is not None and current.epoch > record.epoch:
                continue
            self._records[pid] = (record, now + ttl)
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_interval
            for pid in [p for p, (_, expiry) in self._records.items() if expiry <= now]:
                del self._records[pid]

    async def claim(self, pid: str, ttl: float) -> RecoveryRecord | None:
        now = self._clock()
        current = self._live(pid, now)
        if current is None:
            return None
        claimed = dataclasses.replace(current, epoch=current.epoch + 1)
        self._records[pid] = (claimed, now + ttl)
        return claimed

    async def discard(self, pid: str, epoch: int) -> None:
        current = self._live(pid, self._clock())
        if current is not None and current.epoch == epoch:
            del self._records[pid]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def _live(self, pid: str, now: float) -> RecoveryRecord | None:
        entry = self._records.get(pid)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._records[pid]
            return None
        return entry[0]
