"""Connection-state recovery for collaboration sockets: offsets and records.

Socket.IO's connection-state recovery (socket.io-client 4.6+) resumes a
socket after a lost connection: the client remembers the last argument of
the last event it received when that is a string (the *offset*) and sends
it back, with the socket's private id ``pid``, in its next CONNECT.  Node's
server keeps the broadcast packets in memory and appends a packet id to each
room broadcast; we have a durable, ordered log instead, so an offset names
log positions.

The offset
==========
Appended to every ``remote-edit`` (and only to it) when recovery is on: a
JSON object, as a string, mapping each document the socket has caught up in
to the last ``seq`` it was sent there, as of this event::

    remote-edit {documentId: "a", seq: 42, ...} '{"a":42}'
    remote-edit {documentId: "b", seq: 7, ...}  '{"a":42,"b":7}'

One socket can be in several documents and the client keeps only the last
offset, so an offset must name all of them.  Each member's ``next_seq`` is
exactly what its connection was sent, so the per-recipient offset is exact.
A socket in one document (the usual case) gets ``{"<doc>":<seq>}``, the same
for every such recipient: the event is encoded once for all of them, as
without recovery; only sockets in several documents cost an encoding each.

The record
==========
``RecoveryStore`` keeps, per ``pid``: sid, user, and for each document the
last ``seq`` the client is known to have.  The owning instance saves it when
the socket connects, finishes catching up in a document, leaves one, and
every ``window / 2`` seconds while connected (expiry ``1.5 * window``, so a
crashed instance's records outlive it by at least ``window``); when the
socket is lost it saves the exact positions with expiry ``window``, and a
deliberate disconnect discards the record.  Saves go through one background
writer (``RecordWriter``): coalesced per pid, pipelined.

On a resume the positions are the record's, raised to the offset's where the
offset is newer (the offset is what the client has for sure; the record can
be newer when the old instance saw the disconnect: then it also covers the
socket's own edits, which are never sent back to it as ``remote-edit``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from cowrite.backends.recovery import RecoveryRecord, RecoveryStore

log = logging.getLogger("cowrite.recovery")

_MAX_SEQ = 2**53
#: Offsets longer than this are ignored (100 documents of 256-character ids fit).
MAX_OFFSET_CHARS = 64 * 1024
#: A claimed record not taken up by a connect handler within this many seconds
#: is forgotten (its session closed while the claim was in flight).
TICKET_LIFETIME = 60.0


class RecoverableEdit:
    """A ``remote-edit`` whose offset depends on the recipient: the body, and
    the event encoded once for every recipient in this document only."""

    __slots__ = ("body", "shared")

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.shared: object | None = None


def encode_offset(positions: dict[str, int]) -> str:
    return orjson.dumps(positions).decode()


def decode_offset(text: str | None) -> dict[str, int]:
    """The positions an offset names; anything that is not one of ours (the
    client also keeps the last string argument of other events) is ``{}``."""
    if not text or len(text) > MAX_OFFSET_CHARS or text[0] != "{":
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {
        doc: seq
        for doc, seq in value.items()
        if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= _MAX_SEQ
    }


@dataclass(slots=True)
class ResumeTicket:
    """A claimed record, waiting for the resumed socket's connect handler."""

    pid: str
    epoch: int
    user_id: str
    #: document -> (position, role value); documents the user may still open.
    documents: dict[str, tuple[int, str]]
    #: documents the user may no longer open.
    revoked: list[str]
    issued_at: float


class RecordWriter:
    """Saves and discards records in the background, in order, coalesced per
    pid: whatever is marked while a save is in flight goes in the next one."""

    def __init__(self, store: RecoveryStore, window: float) -> None:
        self.store = store
        self.window = window
        #: Expiry of a connected socket's record (re-saved every window / 2).
        self.connected_ttl = window * 1.5
        self.refresh_interval = window / 2
        self._dirty: dict[
            str, Callable[[], RecoveryRecord] | tuple[RecoveryRecord, float] | int
        ] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.save_failures = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="recovery-writer")

    async def stop(self) -> None:
        """Write what is marked (bounded wait), then stop."""
        if self._dirty:
            self._wake.set()
            try:
                await asyncio.wait_for(self._idle.wait(), 5.0)
            except TimeoutError:
                log.warning("recovery records not saved at shutdown: %d", len(self._dirty))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def live(self, pid: str, snapshot: Callable[[], RecoveryRecord]) -> None:
        """A connected socket's record changed (taken when written)."""
        self._mark(pid, snapshot)

    def lost(self, pid: str, record: RecoveryRecord) -> None:
        """The socket's connection was lost: keep its record ``window`` seconds."""
        self._mark(pid, (record, self.window))

    def ended(self, pid: str, epoch: int) -> None:
        """The socket ended on purpose: no resuming it."""
        self._mark(pid, epoch)

    def _mark(
        self, pid: str, what: Callable[[], RecoveryRecord] | tuple[RecoveryRecord, float] | int
    ) -> None:
        self._dirty[pid] = what
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._dirty = self._dirty, {}
            saves: list[tuple[str, RecoveryRecord, float]] = []
            discards: list[tuple[str, int]] = []
            for pid, what in batch.items():
                if isinstance(what, int):
                    discards.append((pid, what))
                elif isinstance(what, tuple):
                    saves.append((pid, what[0], what[1]))
                else:
                    saves.append((pid, what(), self.connected_ttl))
            try:
                await self.store.save(saves)
                for pid, epoch in discards:
                    await self.store.discard(pid, epoch)
            except Exception:
                self.save_failures += 1
                log.exception("saving %d recovery records failed; retrying", len(batch))
                for pid, what in batch.items():
                    self._dirty.setdefault(pid, what)
                await asyncio.sleep(1.0)
                self._wake.set()
                continue
            if not self._dirty:
                self._idle.set()
