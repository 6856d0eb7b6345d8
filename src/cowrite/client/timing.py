"""Timing policies, pure functions of their inputs (no clock, no sleeping).

* ``backoff_delay``: reconnection delay, exponential backoff with FULL jitter
  (the delay is uniform in ``[0, min(cap, base * 2**attempt)]``, AWS
  Architecture Blog, "Exponential Backoff And Jitter", 2015): clients that lost
  the same server at the same moment do not come back in waves.
* ``reconnect_delay``: the same, with the ``reconnectDelayMs`` of a
  ``server-draining`` notice as a floor.
* ``Pacer``: how many edits may be sent now.  The server refuses edits above
  its per-connection rate (``rate_limited`` with ``retryAfter`` seconds, and
  disconnects a connection refused too often), so after a refusal the client
  waits ``retryAfter`` and then spaces its sends by it, halving the spacing
  after every ``recover_after`` accepted edits.
"""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (0 for the first retry)."""
    bound = min(cap, base * 2.0 ** min(attempt, 64))
    return rng.uniform(0.0, bound)


def reconnect_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random, floor: float = 0.0
) -> float:
    """``floor`` (from ``server-draining``) plus the jittered backoff delay."""
    return max(0.0, floor) + backoff_delay(attempt, base=base, cap=cap, rng=rng)


class Pacer:
    """Edit flow control for one connection (time comes in as ``now``)."""

    __slots__ = (
        "_successes",
        "in_flight",
        "interval",
        "max_in_flight",
        "not_before",
        "recover_after",
    )

    def __init__(self, max_in_flight: int, recover_after: int = 50) -> None:
        self.max_in_flight = max_in_flight
        self.recover_after = recover_after
        self.in_flight = 0
        self.interval = 0.0  # minimum spacing of sends after a refusal
        self.not_before = 0.0
        self._successes = 0

    def wait(self, now: float) -> float | None:
        """0 when an edit may be sent now, the seconds to wait, or ``None`` when
        the window is full (wait for an acknowledgement)."""
        if self.in_flight >= self.max_in_flight or (self.interval > 0 and self.in_flight > 0):
            return None
        return max(0.0, self.not_before - now)

    def sent(self, now: float) -> None:
        self.in_flight += 1
        if self.interval > 0:
            self.not_before = now + self.interval

    def acked(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        if self.interval > 0:
            self._successes += 1
            if self._successes >= self.recover_after:
                self._successes = 0
                self.interval = 0.0 if self.interval < 0.002 else self.interval / 2

    def refused(self, retry_after: float, now: float) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        retry_after = min(max(retry_after, 0.001), 5.0)
        self.interval = max(self.interval, retry_after)
        self.not_before = max(self.not_before, now + retry_after)
        self._successes = 0

    def lost(self) -> None:
        """An edit in flight will not be acknowledged (connection lost)."""
        self.in_flight = max(0, self.in_flight - 1)
