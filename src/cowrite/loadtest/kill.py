"""The fault a run injects: which server processes get which signal, and when.

Its own module because both the coordinator (``runner``, which sends the
signal) and the report (``report``, which describes it) need it.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class KillSpec:
    """Send ``signal`` to ``pids`` ``after`` seconds into the edit phase."""

    after: float
    pids: tuple[int, ...]
    signal: signal.Signals = signal.SIGTERM
