"""Per-connection rate limits: the counterpart of server/limits.py's admission.

Invariant: a connection gets at most ``burst + rate * t`` edits (snapshots
count as edits) and as many presence updates in ``t`` seconds, each kind
from its own token bucket (core/ratelimit.py); a refusal is ``rate_limited``
with ``retryAfter``.  A connection refused ``flood_refusals`` times within
``flood_window`` is disconnected once, and only after every edit it had
accepted got its ack (they are committed: the client learns which).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cowrite.core.acks import Ack, error
from cowrite.core.gateway import ClientGateway
from cowrite.core.members import Conn
from cowrite.core.ratelimit import TokenBucket
from cowrite.core.settings import CollabSettings

# The collaboration service's logger: its name is in every line it logs.
log = logging.getLogger("cowrite.collab")


class RateLimiter:
    def __init__(
        self,
        *,
        settings: CollabSettings,
        clock: Callable[[], float],
        gateway: ClientGateway,
        conns: dict[str, Conn],
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.gateway = gateway
        # The service's connections, by sid.
        self._conns = conns
        self.rate_limited = 0
        self.flood_disconnects = 0

    def check(self, conn: Conn, kind: str) -> Ack | None:
        """Token bucket per connection and kind; ``None`` when allowed."""
        st = self.settings
        now = self.clock()
        if kind == "edit":
            if st.edit_rate <= 0:
                return None
            if conn.edit_bucket is None:
                conn.edit_bucket = TokenBucket(st.edit_rate, st.edit_burst, now)
            wait = conn.edit_bucket.take(now)
        else:
            if st.presence_rate <= 0:
                return None
            if conn.presence_bucket is None:
                conn.presence_bucket = TokenBucket(st.presence_rate, st.presence_burst, now)
            wait = conn.presence_bucket.take(now)
        if wait <= 0:
            return None
        self.rate_limited += 1
        refusals = conn.refusals
        refusals.append(now)
        while refusals and refusals[0] < now - st.flood_window:
            refusals.pop(0)
        if len(refusals) >= st.flood_refusals and not conn.flooded:
            conn.flooded = True
            log.warning(
                "disconnecting %s (%s): rate limit exceeded", conn.sid, conn.identity.user_id
            )
            self.flood_disconnects += 1
            if conn.inflight == 0:
                self.gateway.disconnect(conn.sid)
            # else: after the acks of its accepted edits (``settled``), so the
            # client learns which of them are stored before it is cut off.
        ack = error("rate_limited", f"Too many {kind} messages; retry later")
        ack["error"]["retryAfter"] = round(wait, 3)
        return ack

    def settled(self, sid: str) -> None:
        """One accepted edit of ``sid`` got its ack; a flooding connection is
        disconnected once all of them have (the ack callbacks run first)."""
        conn = self._conns.get(sid)
        if conn is None:
            return
        conn.inflight -= 1
        if conn.flooded and conn.inflight == 0:
            asyncio.get_running_loop().call_soon(self.gateway.disconnect, sid)
