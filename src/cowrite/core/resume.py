"""Resuming lost sockets (connection-state recovery): records, tickets, replays.

The offsets and records themselves are core/recovery.py's; this part keeps
the records of this instance's sockets up to date and gives a resumed socket
its documents back.

Invariant: a record is resumed at most once (``RecoveryStore.claim``), by a
socket with a valid token of the record's user, and only into documents
whose role still allows it (a revoked one gets ``access-revoked``).  A
resumed socket's members are held like joiners catching up while the
operations missed since each position are replayed from the log, then live
ones follow: each document's operations still arrive once, in order, with no
gap (core/sequencer.py).  A socket is never resumed on the instance that
still holds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from cowrite.auth import AuthError, Identity
from cowrite.backends.recovery import RecoveryRecord
from cowrite.backends.store import Role, StoreError
from cowrite.core.access import Access
from cowrite.core.gateway import ClientGateway
from cowrite.core.history import LogReader, op_dict
from cowrite.core.members import Conn, Member
from cowrite.core.presence import PresenceRelay
from cowrite.core.recovery import (
    TICKET_LIFETIME,
    RecordWriter,
    ResumeTicket,
    decode_offset,
    encode_offset,
)
from cowrite.core.sequencer import Sequencer, positions
from cowrite.core.settings import CollabSettings
from cowrite.core.tasks import log_failure

# The collaboration service's logger: its name is in every line it logs.
log = logging.getLogger("cowrite.collab")


class Resumer:
    def __init__(
        self,
        *,
        records: RecordWriter,
        conns: dict[str, Conn],
        verify: Callable[[object], Identity],
        gateway: ClientGateway,
        settings: CollabSettings,
        clock: Callable[[], float],
        access: Access,
        sequencer: Sequencer,
        relay: PresenceRelay,
        history: LogReader,
    ) -> None:
        self._records = records
        # The service's connections, by sid.
        self._conns = conns
        self._verify = verify
        self.gateway = gateway
        self.settings = settings
        self.clock = clock
        self._access = access
        self._sequencer = sequencer
        self._relay = relay
        self._history = history
        self._tickets: dict[str, ResumeTicket] = {}
        self._refresher: asyncio.Task[None] | None = None
        self.resumed = 0
        self.resume_failed: dict[str, int] = {}
        self.ops_resumed = 0

    def start(self) -> None:
        self._records.start()
        self._refresher = asyncio.get_running_loop().create_task(
            self._refresh_records_loop(), name="record-refresh"
        )

    async def stop(self) -> None:
        """Save the last records, then stop refreshing them."""
        await self._records.stop()
        if self._refresher is not None:
            self._refresher.cancel()

    # -- the records of this instance's sockets -----------------------------

    def connected(self, conn: Conn, pid: str) -> None:
        """A socket with a private id connected: resumed when ``resume``
        issued a ticket for its sid with that pid, and recorded."""
        conn.pid = pid
        ticket = self._tickets.pop(conn.sid, None)
        if ticket is not None and ticket.pid == pid and ticket.user_id == conn.identity.user_id:
            self._resume(conn, ticket)
        self._records.live(pid, lambda: self._record_of(conn))

    def disconnected(self, conn: Conn, recoverable: bool) -> None:
        if conn.pid is not None:
            if recoverable:
                self._records.lost(conn.pid, self._record_of(conn))
            else:
                self._records.ended(conn.pid, conn.epoch)

    def _record_of(self, conn: Conn) -> RecoveryRecord:
        return RecoveryRecord(conn.sid, conn.identity.user_id, conn.epoch, positions(conn))

    def record_changed(self, conn: Conn) -> None:
        """Save the socket's record again (it caught up in, or left, a document)."""
        if conn.pid is not None and self._conns.get(conn.sid) is conn:
            self._records.live(conn.pid, lambda: self._record_of(conn))

    async def _refresh_records_loop(self) -> None:
        """Connected sockets' records expire in 1.5 windows unless saved again."""
        while True:
            await asyncio.sleep(self._records.refresh_interval)
            for conn in list(self._conns.values()):
                self.record_changed(conn)
            now = self.clock()
            for sid in [s for s, t in self._tickets.items() if now - t.issued_at > TICKET_LIFETIME]:
                del self._tickets[sid]

    async def resume(self, namespace: str, pid: str, offset: str | None, auth: Any) -> str | None:
        """The Socket.IO server's ``restore`` hook: claim the record of socket
        ``pid`` and return its sid, or ``None`` (a new socket, not resumed).

        The token must be valid and name the record's user; each document's
        role is read again (a revoked one is not resumed: the client gets
        ``access-revoked`` for it).  The connect handler then calls
        ``connect(sid, auth, pid=pid)``, which picks up the ticket."""
        if namespace != "/":
            return None
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            identity = self._verify(token)
        except AuthError:
            return None  # the connect handler refuses it with the reason
        try:
            record = await self._records.store.claim(pid, self._records.connected_ttl)
        except Exception:
            log.exception("claiming recovery record failed")
            return self._resume_failed("unavailable")
        if record is None:
            return self._resume_failed("unknown")
        if record.user_id != identity.user_id:
            return self._resume_failed("other_user")
        if record.sid in self._conns:
            return self._resume_failed("still_connected")
        at = dict(record.documents)
        for doc_id, seq in decode_offset(offset).items():
            if doc_id in at and seq > at[doc_id]:
                at[doc_id] = seq
        documents: dict[str, tuple[int, str]] = {}
        revoked: list[str] = []
        try:
            for doc_id, position in at.items():
                role = await self._access.resolve_role(identity, doc_id, create=False)
                if role is None:
                    revoked.append(doc_id)
                else:
                    documents[doc_id] = (position, role.value)
        except StoreError:
            return self._resume_failed("unavailable")
        self._tickets[record.sid] = ResumeTicket(
            pid, record.epoch, identity.user_id, documents, revoked, self.clock()
        )
        return record.sid

    def _resume_failed(self, why: str) -> str | None:
        """Count a refused resume (by reason); ``None``: not resumed."""
        self.resume_failed[why] = self.resume_failed.get(why, 0) + 1
        return None

    def _resume(self, conn: Conn, ticket: ResumeTicket) -> None:
        """Give a resumed socket its documents back: members at once (held
        like a joiner catching up), then, in a task, each document's room,
        presence and the operations missed since its position."""
        self.resumed += 1
        conn.epoch = ticket.epoch
        conn.presence_id = f"{conn.sid}.{ticket.epoch}"
        conn.restoring = {doc: position for doc, (position, _) in ticket.documents.items()}
        now = self.clock()
        members = []
        for doc_id, (position, role) in ticket.documents.items():
            member = Member(conn, doc_id, Role(role), position, now)
            member.role_from_store = self._access.claim_role(conn.identity, doc_id) is None
            conn.docs[doc_id] = member
            members.append(member)
        for doc_id in ticket.revoked:
            self._access.denied += 1
            self.gateway.send(conn.sid, "access-revoked", {"documentId": doc_id})
        task = asyncio.get_running_loop().create_task(self._restore_documents(conn, members))
        task.add_done_callback(log_failure)

    async def _restore_documents(self, conn: Conn, members: list[Member]) -> None:
        for member in members:
            if self._conns.get(conn.sid) is not conn:
                return
            if conn.docs.get(member.document_id) is not member:
                continue
            try:
                await self._restore_document(conn, member)
            except Exception as exc:  # the store or the broker failed
                log.warning("resuming %s in %s failed: %s", conn.sid, member.document_id, exc)
                # Ended from the server's side (its record is discarded): the
                # application connects again and joins, as after any refusal.
                self.gateway.disconnect(conn.sid)
                return

    async def _restore_document(self, conn: Conn, member: Member) -> None:
        doc_id = member.document_id
        # A join-document of the application, a leave or a revocation meanwhile
        # takes over from here (a join makes a new held list).
        held = member.pending
        room = await self._sequencer.open(doc_id)
        if self._conns.get(conn.sid) is not conn or conn.docs.get(doc_id) is not member:
            if not room.members:
                self._sequencer.close(room)
            return
        room.members[conn.sid] = member
        first, _roster = await self._relay.join(member)
        if first:
            self._relay.arrived(conn, doc_id)
        position = member.next_seq - 1
        replayed = 0
        while conn.docs.get(doc_id) is member and member.pending is held:
            ops, _head, more = await self._history.read_page(
                doc_id, position, self.settings.max_page_size
            )
            if conn.docs.get(doc_id) is not member or member.pending is not held:
                return
            for op in ops:
                offset = encode_offset(positions(conn, doc_id, op.seq))
                self.gateway.send_prepared(
                    conn.sid, self.gateway.prepare("remote-edit", op_dict(op), offset)
                )
            if ops:
                position = ops[-1].seq
            replayed += len(ops)
            self.ops_resumed += len(ops)
            done = not more or replayed >= self.settings.max_pending
            self._sequencer.caught_up_to(member, position, final=not more)
            if done:
                if more:
                    # Too much missed for one go: the client pages the rest
                    # with ``sync`` (``resync`` is what a held-list overflow
                    # sends too).
                    self.gateway.send(conn.sid, "resync", {"documentId": doc_id, "since": position})
                return
