"""Python GC pause accounting for the benchmark's Python servers.

install() hooks gc.callbacks; take() returns the collections and pause times
since the previous take(). The servers print take() as a JSON line on SIGUSR1.
"""

from __future__ import annotations

import gc
import time
from typing import Any

_start = 0.0
_pauses: list[tuple[int, float]] = []


def _callback(phase: str, info: dict[str, Any]) -> None:
    global _start
    if phase == "start":
        _start = time.perf_counter()
    else:
        _pauses.append((info.get("generation", -1), time.perf_counter() - _start))


def install() -> None:
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)


def take() -> dict[str, Any]:
    pauses = _pauses[:]
    _pauses.clear()
    ms = sorted(p * 1000 for _, p in pauses)
    by_gen = [0, 0, 0]
    for g, _ in pauses:
        if 0 <= g <= 2:
            by_gen[g] += 1
    return {
        "collections": len(ms),
        "by_generation": by_gen,
        "total_ms": sum(ms),
        "max_ms": ms[-1] if ms else 0.0,
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else 0.0,
        "thresholds": gc.get_threshold(),
        "frozen": gc.get_freeze_count(),
    }
