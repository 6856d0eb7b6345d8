"""Admission control: who may open a new session, decided before any session
state is allocated.

Per client IP (the real address behind a trusted proxy): concurrent sessions
and new sessions per second (token bucket).  Per instance: a connection cap
(default: what the process's open-file limit allows, with headroom) and a cap
on concurrent handshakes (sessions not yet connected to a namespace), which is
what a reconnect storm looks like.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from cowrite.core.ratelimit import TokenBucket

# File descriptors kept free for the listening socket, the store, the broker,
# logs and the accept path itself.
FD_HEADROOM = 512


def default_max_connections() -> int:
    """Connections this process can hold: its open-file limit minus headroom."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(64, soft - FD_HEADROOM)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 429 (this client) or 503 (this instance)
    reason: str
    retry_after: float


class Admission:
    """Counts sessions per IP and in total; refuses new ones over the limits."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_handshakes: int,
        per_ip_connections: int,
        per_ip_rate: float,
        per_ip_burst: int,
    ) -> None:
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self.per_ip_connections = per_ip_connections
        self.per_ip_rate = per_ip_rate
        self.per_ip_burst = per_ip_burst
        self.total = 0
        self.handshaking = 0
        self._per_ip: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self.refused: dict[str, int] = {}

    def admit(self, ip: str | None, now: float) -> Refusal | None:
        """``None``: go ahead (then call ``opened``); else how to refuse.

        ``ip`` is ``None`` for an address exempt from the per-IP limits."""
        if self.max_connections and self.total >= self.max_connections:
            return self._refuse(Refusal(503, "instance at connection cap", 5.0))
        if self.max_handshakes and self.handshaking >= self.max_handshakes:
            return self._refuse(Refusal(503, "too many handshakes in progress", 1.0))
        if ip is None:
            return None
        if self.per_ip_connections and self._per_ip.get(ip, 0) >= self.per_ip_connections:
            return self._refuse(Refusal(429, "too many connections from this address", 5.0))
        if self.per_ip_rate > 0:
            bucket = self._buckets.get(ip)
            if bucket is None:
                bucket = self._buckets[ip] = TokenBucket(self.per_ip_rate, self.per_ip_burst, now)
            wait = bucket.take(now)
            if wait > 0:
                return self._refuse(Refusal(429, "connecting too fast", wait))
        return None

    def _refuse(self, refusal: Refusal) -> Refusal:
        self.refused[refusal.reason] = self.refused.get(refusal.reason, 0) + 1
        return refusal

    def opened(self, ip: str | None) -> None:
        self.total += 1
        self.handshaking += 1
        if ip is not None:
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1

    def connected(self) -> None:
        """The session connected to a namespace: its handshake is over."""
        self.handshaking -= 1

    def closed(self, ip: str | None, *, handshaking: bool) -> None:
        self.total -= 1
        if handshaking:
            self.handshaking -= 1
        if ip is None:
            return
        count = self._per_ip.get(ip, 0) - 1
        if count > 0:
            self._per_ip[ip] = count
        else:
            self._per_ip.pop(ip, None)

    def sweep(self, now: float) -> None:
        """Forget full buckets (bounded memory under many distinct addresses)."""
        for ip in [ip for ip, b in self._buckets.items() if b.full(now)]:
            del self._buckets[ip]

    def tracked_addresses(self) -> int:
        return len(self._per_ip) + len(self._buckets)
