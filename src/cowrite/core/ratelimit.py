"""Token buckets (time passed in, no clock inside)."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up.

    ``take(now)`` spends one token and returns 0.0, or returns how many
    seconds to wait until one is available (nothing spent).
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> float:
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate if self.rate > 0 else float("inf")

    def full(self, now: float) -> bool:
        """True when the bucket has refilled completely (safe to forget)."""
        return self.tokens + (now - self.stamp) * self.rate >= self.burst
