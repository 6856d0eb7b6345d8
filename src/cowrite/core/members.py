"""A connection and its memberships: the state the parts of the service share.

``Conn`` is one authenticated socket; ``Member`` is that socket in one
document.  Each part of the service owns some of a member's fields: the
sequencer ``next_seq`` and ``pending`` (core/sequencer.py), the presence
relay the ``presence_*`` fields (core/presence.py), access control the
``role*`` fields (core/access.py), the rate limiter the connection's buckets,
refusals and ``inflight`` (core/limits.py; the service's edit path counts
``inflight`` up), recovery ``pid``, ``epoch`` and ``restoring``
(core/resume.py; the sequencer reads ``restoring`` for offsets and empties it
as documents catch up).  The service's join (re)sets a member's fields when
it starts a catch-up, and its leave takes the member out everywhere.

Invariant: a member is current while ``conn.docs[document_id] is member``.
A leave, a revocation or a second join replaces or removes it there first,
so code that awaited anything checks that identity again before it acts on
the member.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cowrite.auth import Identity
from cowrite.backends.store import Role
from cowrite.core.ratelimit import TokenBucket


class Member:
    """One connection in one document."""

    __slots__ = (
        "conn",
        "document_id",
        "next_seq",
        "pending",
        "presence_dirty",
        "presence_joining",
        "presence_state",
        "role",
        "role_checked_at",
        "role_from_store",
        "sid",
        "snapshots",
    )

    def __init__(self, conn: Conn, document_id: str, role: Role, since: int, now: float) -> None:
        self.conn = conn
        self.sid = conn.sid
        self.document_id = document_id
        self.role = role
        self.role_checked_at = now
        # False when the token's docs claim gives the role (no store to ask).
        self.role_from_store = True
        self.next_seq = since + 1
        # (seq, prepared event or None for "the member already has it").
        self.pending: list[tuple[int, object | None]] | None = []
        self.presence_state: Any = None
        self.presence_dirty = False
        # The client understands snapshots (joined with ``snapshot: true``).
        self.snapshots = False
        # While the presence join is under way (it may wait for a batch): a
        # leave waits for it on a future made only then.
        self.presence_joining: bool | asyncio.Future[None] = False


class Conn:
    __slots__ = (
        "docs",
        "edit_bucket",
        "epoch",
        "flooded",
        "identity",
        "inflight",
        "pid",
        "presence_bucket",
        "presence_id",
        "refusals",
        "restoring",
        "sid",
    )

    def __init__(self, sid: str, identity: Identity) -> None:
        self.sid = sid
        self.identity = identity
        # Connection-state recovery: the socket's private id, the epoch of its
        # record, and the documents of a resumed socket not yet replayed
        # (document -> the position its replay starts from).
        self.pid: str | None = None
        self.epoch = 0
        self.restoring: dict[str, int] | None = None
        # The connection's id in the shared presence (a resumed socket keeps
        # its sid but gets a presence id of its own: the old instance may
        # still remove the old one).
        self.presence_id = sid
        self.docs: dict[str, Member] = {}
        self.edit_bucket: TokenBucket | None = None
        self.presence_bucket: TokenBucket | None = None
        self.refusals: list[float] = []
        self.flooded = False
        # Edits accepted and not yet acknowledged (committed or failed).
        self.inflight = 0
