"""Process-level setup: the event loop implementation and garbage-collector tuning."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Python's cyclic GC pauses grow with the number of live objects; with tens of
# thousands of connections a full collection stalls every socket.  Allocation
# per message is small and mostly acyclic, so a high first threshold lets
# reference counting do the work and the GC runs rarely.
GC_THRESHOLDS = (50_000, 20, 50)


def tune_gc() -> None:
    """Move everything allocated during start-up out of the collector's sight."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """Run ``main`` on uvloop when it is installed and wanted, else asyncio's loop."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            result: T = uvloop.run(main)
            return result
    return asyncio.run(main)
