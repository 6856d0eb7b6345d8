"""A log-linear latency histogram in integer microseconds, mergeable across processes.

Values below 64 µs have a bucket each; above, every power of two is cut into
32 equal buckets, so a reported quantile is within 1/64 (1.6 %) of a value
the bucket held (its middle is reported).  The buckets are a plain list of
counts: merging is adding lists, pickling is cheap, and the size is fixed
(``NBUCKETS``) whatever the run length.  Values above ``MAX_VALUE`` (about 36
minutes) are clamped to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_SUB_BITS = 5
_SUB = 1 << _SUB_BITS  # buckets per power of two
MAX_VALUE = (1 << 31) - 1
NBUCKETS = ((MAX_VALUE.bit_length() - _SUB_BITS - 1) + 2) * _SUB


def bucket_of(value: int) -> int:
    """The bucket index of a value (negative values count as 0)."""
    if value < 2 * _SUB:
        return value if value > 0 else 0
    if value > MAX_VALUE:
        value = MAX_VALUE
    shift = value.bit_length() - _SUB_BITS - 1
    return shift * _SUB + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The values ``[low, high)`` a bucket holds."""
    if index < 2 * _SUB:
        return index, index + 1
    shift = index // _SUB - 1
    mantissa = index - shift * _SUB
    return mantissa << shift, (mantissa + 1) << shift


class Histogram:
    """Counts of integer values (microseconds, by convention)."""

    __slots__ = ("counts", "max", "sum", "total")

    def __init__(self) -> None:
        self.counts = [0] * NBUCKETS
        self.total = 0
        self.sum = 0
        self.max = 0

    def record(self, value: int) -> None:
        if value < 2 * _SUB:
            index = value if value > 0 else 0
        else:
            if value > MAX_VALUE:
                value = MAX_VALUE
            shift = value.bit_length() - _SUB_BITS - 1
            index = shift * _SUB + (value >> shift)
        self.counts[index] += 1
        self.total += 1
        if value > 0:
            self.sum += value
            if value > self.max:
                self.max = value

    def merge(self, other: Histogram) -> None:
        counts = self.counts
        for i, c in enumerate(other.counts):
            if c:
                counts[i] += c
        self.total += other.total
        self.sum += other.sum
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0..1): the middle of its bucket, capped at the max."""
        if not self.total:
            return None
        rank = q * self.total
        seen = 0
        for i, c in enumerate(self.counts):
            if not c:
                continue
            seen += c
            if seen >= rank:
                low, high = bucket_bounds(i)
                return min((low + high - 1) / 2, float(self.max))
        return float(self.max)

    def summary_ms(self) -> dict[str, Any]:
        """``count``, ``p50``/``p95``/``p99``, ``mean`` and ``max`` in milliseconds."""
        out: dict[str, Any] = {"count": self.total}
        for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
            value = self.quantile(q)
            out[name] = None if value is None else round(value / 1000, 3)
        out["mean"] = round(self.sum / self.total / 1000, 3) if self.total else None
        out["max"] = round(self.max / 1000, 3) if self.total else None
        return out

    def to_wire(self) -> tuple[list[tuple[int, int]], int, int, int]:
        """A compact picklable form (non-zero buckets only)."""
        return [(i, c) for i, c in enumerate(self.counts) if c], self.total, self.sum, self.max

    @classmethod
    def from_wire(cls, wire: tuple[Iterable[tuple[int, int]], int, int, int]) -> Histogram:
        pairs, total, sum_, max_ = wire
        hist = cls()
        for i, c in pairs:
            hist.counts[i] = c
        hist.total, hist.sum, hist.max = total, sum_, max_
        return hist
