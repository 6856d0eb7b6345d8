"""Each document's operations to each local member: exactly once, in order.

Invariant: a member receives a document's operations exactly once, in
``seq`` order, with no gap.  Every member (one connection in one document)
has ``next_seq``, the next operation number its connection must receive; a
committed operation with number ``s`` is sent to it only when
``s == next_seq``, and one it already has (``s < next_seq``) is skipped.
While a member is catching up (between ``join-document`` and the last
``sync`` page) live operations are held in its ``pending`` list and released,
in order, right after the acknowledgement that brings it up to date, so the
boundary between catch-up (``ops``) and live ``remote-edit`` events has
neither gaps nor duplicates.  The sender of an operation gets its ``seq`` in
the ack, not a ``remote-edit``.

The room (``Room``) orders what reaches the members: local commits arrive in
commit order, other instances' operations through the broker (at-most-once,
possibly late).  Anything not next is held; a hole that stays open is filled
from the log (``_fill_gap``), and once remote operations go quiet the log's
head is checked once (``_check_tail``), since the last message of a burst may
be the one the broker lost.

The per-edit path lives here whole (``deliver_committed`` -> ``_deliver`` ->
``_send_edit``, and ``_release``): its per-recipient loop reads the member's
sequencing fields and the recovery offsets inline, with no call into another
part of the service per recipient or per operation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cowrite.backends.broker import Broker, BrokerMessage, OperationMessage
from cowrite.backends.store import OperationStore, StoredOp, StoreError
from cowrite.core.committer import Committed
from cowrite.core.gateway import ClientGateway
from cowrite.core.history import edit_body, op_dict
from cowrite.core.members import Conn, Member
from cowrite.core.opcodec import decode_operation
from cowrite.core.recovery import RecoverableEdit, encode_offset
from cowrite.core.settings import CollabSettings
from cowrite.core.tasks import log_failure

# The collaboration service's logger: its name is in every line it logs.
log = logging.getLogger("cowrite.collab")


class Room:
    """The local members of one document and the document's delivery sequencer.

    ``next_seq`` is the next operation number to hand to the members.  Local
    commits and other instances' operations (through the broker, at-most-once,
    possibly late) land in ``held``; ``_drain`` releases the contiguous run
    from ``next_seq``; a hole that stays open is filled from the log.
    """

    __slots__ = (
        "document_id",
        "fill_task",
        "held",
        "members",
        "next_seq",
        "ready",
        "tail_timer",
    )

    def __init__(self, document_id: str, ready: asyncio.Future[None]) -> None:
        self.document_id = document_id
        self.members: dict[str, Member] = {}
        self.next_seq = 0  # set once ``ready`` resolves
        self.held: dict[int, tuple[Callable[[], object], str | None]] = {}
        self.ready = ready
        self.fill_task: asyncio.Task[None] | None = None
        self.tail_timer: asyncio.TimerHandle | None = None


def positions(conn: Conn, doc_id: str | None = None, seq: int = 0) -> dict[str, int]:
    """For each document the connection is caught up in, the last ``seq``
    its client was sent (``doc_id`` at ``seq``, which is being sent now)."""
    result = {d: m.next_seq - 1 for d, m in conn.docs.items() if m.pending is None}
    if conn.restoring:
        for d, position in conn.restoring.items():
            result.setdefault(d, position)
    if doc_id is not None:
        result[doc_id] = seq
    return result


class Sequencer:
    """The open documents (``rooms``) of this instance and their delivery."""

    def __init__(
        self,
        *,
        store: OperationStore,
        broker: Broker,
        gateway: ClientGateway,
        settings: CollabSettings,
        head: Callable[[str], Awaitable[int]],
        publish: Callable[[BrokerMessage], None],
        offsets: bool,
        record_changed: Callable[[Conn], None],
    ) -> None:
        self.store = store
        self.broker = broker
        self.gateway = gateway
        self.settings = settings
        self.instance_id = broker.instance_id
        self._head = head
        self._publish = publish
        # Connection-state recovery is on: each remote-edit carries the
        # recipient's offset (core/recovery.py).
        self._offsets = offsets
        self._record_changed = record_changed
        self.rooms: dict[str, Room] = {}
        # The instance is going away: rooms close without unsubscribing.
        self.local_only = False
        self.gaps_filled = 0
        self.ops_delivered = 0
        # Called with seconds from receiving an operation to queueing it for
        # its last local recipient.
        self.observe_delivery: Callable[[float], None] | None = None

    def stop(self) -> None:
        for room in self.rooms.values():
            if room.fill_task is not None:
                room.fill_task.cancel()
            if room.tail_timer is not None:
                room.tail_timer.cancel()

    # -- opening and closing rooms -------------------------------------------

    async def open(self, doc_id: str) -> Room:
        """The document's room, opened (subscribed, positioned at the log's head) if needed."""
        room = self.rooms.get(doc_id)
        if room is not None:
            await asyncio.shield(room.ready)
            return room
        room = Room(doc_id, asyncio.get_running_loop().create_future())
        self.rooms[doc_id] = room
        try:
            # Subscribe first: everything committed after the head we read
            # then reaches us through the broker (or the gap filler).
            await self.broker.subscribe(doc_id)
            head = await self._head(doc_id)
        except BaseException as exc:
            if self.rooms.get(doc_id) is room:
                del self.rooms[doc_id]
            room.ready.set_exception(exc)
            room.ready.exception()  # marked retrieved; joins waiting on it re-raise
            raise
        room.next_seq = head + 1
        room.ready.set_result(None)
        self._drain(room)
        return room

    def close(self, room: Room) -> None:
        if self.rooms.get(room.document_id) is room:
            del self.rooms[room.document_id]
        if room.fill_task is not None:
            room.fill_task.cancel()
        if room.tail_timer is not None:
            room.tail_timer.cancel()
        if self.local_only:
            # The broker stops with this instance and its subscriptions go
            # with its connection: one UNSUBSCRIBE per room while thousands of
            # sessions close was a quarter of a drain's CPU (py-spy, 3 x 5,000),
            # spent while the other instances re-admit the clients.
            return
        task = asyncio.get_running_loop().create_task(self.broker.unsubscribe(room.document_id))
        task.add_done_callback(log_failure)

    # -- committed operations ------------------------------------------------

    def deliver_committed(self, committed: Committed) -> None:
        """Runs right after each commit, in commit order: hand the new operations
        to the local members and to the other instances (the service resolves
        the acks after this, so every broadcast frame is queued before the
        sender's ack)."""
        observe = self.observe_delivery
        for request, result, context in committed:
            if result.duplicate:
                continue
            self._publish(
                OperationMessage(
                    request.document_id,
                    self.instance_id,
                    result.seq,
                    request.user_id,
                    request.client_op_id,
                    request.payload,
                )
            )
            room = self.rooms.get(request.document_id)
            if room is None:
                continue
            sender_sid, operation, received_at, _future = context
            body = edit_body(
                request.document_id, result.seq, request.user_id, request.client_op_id, operation
            )
            if result.seq == room.next_seq and not room.held and room.ready.done():
                # The common case, in order with nothing held: straight to the
                # members (what ``_accept`` + ``_drain`` would do, minus the
                # holding dictionary and the deferred encoding).
                try:
                    self._deliver(room, result.seq, self._prepare_edit(body), sender_sid)
                except Exception:
                    log.exception("delivery of %s#%d failed", room.document_id, result.seq)
                room.next_seq = result.seq + 1
            else:
                self._accept(room, result.seq, self._remote_edit(body), sender_sid)
            if observe is not None:
                observe(time.perf_counter() - received_at)

    def _remote_edit(self, body: dict[str, Any]) -> Callable[[], object]:
        return lambda: self._prepare_edit(body)

    def _stored_edit(self, op: StoredOp) -> Callable[[], object]:
        return lambda: self._prepare_edit(op_dict(op))

    def _prepare_edit(self, body: dict[str, Any]) -> object:
        """A ``remote-edit`` for many recipients: encoded once, or with
        recovery on, a ``RecoverableEdit`` (each recipient's offset)."""
        if not self._offsets:
            return self.gateway.prepare("remote-edit", body)
        return RecoverableEdit(body)

    def _accept(
        self, room: Room, seq: int, make: Callable[[], object], sender_sid: str | None
    ) -> None:
        """An operation for the room, from a local commit, the broker or the log."""
        ready = room.ready.done()
        if ready and seq < room.next_seq:
            return
        room.held.setdefault(seq, (make, sender_sid))
        if ready:
            self._drain(room)

    def _drain(self, room: Room) -> None:
        held = room.held
        while room.next_seq in held:
            make, sender_sid = held.pop(room.next_seq)
            try:
                self._deliver(room, room.next_seq, make(), sender_sid)
            except Exception:
                # One undeliverable operation must not stall the document.
                log.exception("delivery of %s#%d failed", room.document_id, room.next_seq)
            room.next_seq += 1
        if held:
            for stale in [seq for seq in held if seq < room.next_seq]:
                del held[stale]
        if held and (room.fill_task is None or room.fill_task.done()):
            room.fill_task = asyncio.get_running_loop().create_task(self._fill_gap(room))

    async def _fill_gap(self, room: Room) -> None:
        """A later operation arrived before an earlier one: wait briefly for the
        broker, then read the missing ones from the log (the truth)."""
        await asyncio.sleep(self.settings.gap_fill_delay)
        while room.held and self.rooms.get(room.document_id) is room:
            first_held = min(room.held)
            missing = first_held - room.next_seq
            if missing <= 0:
                self._drain(room)
                continue
            try:
                ops = await self.store.read_ops(room.document_id, room.next_seq - 1, missing)
            except StoreError:
                log.warning("gap fill for %s failed; retrying", room.document_id)
                await asyncio.sleep(max(self.settings.gap_fill_delay, 0.2))
                continue
            self.gaps_filled += 1
            if ops and ops[0].seq > room.next_seq:
                self._skip_compacted(room, ops[0].seq)
            for op in ops:
                self._accept(room, op.seq, self._stored_edit(op), None)
            if not ops:
                await asyncio.sleep(self.settings.gap_fill_delay)

    def _skip_compacted(self, room: Room, kept_from: int) -> None:
        """The log no longer holds ``room.next_seq`` .. ``kept_from - 1``
        (compacted while they were on their way): the room moves on, and each
        member that lacks them is told to ``resync`` (its ``sync`` then gets the
        snapshot), never left with a silent hole."""
        for member in room.members.values():
            if member.next_seq < kept_from and member.pending is None:
                member.pending = []
                self.gateway.send(
                    member.sid,
                    "resync",
                    {"documentId": room.document_id, "since": member.next_seq - 1},
                )
        room.next_seq = kept_from

    def _schedule_tail_check(self, room: Room) -> None:
        """The last message of a burst may be the one the broker lost: once
        remote operations go quiet, compare with the log's head."""
        if room.tail_timer is not None:
            room.tail_timer.cancel()
        loop = room.ready.get_loop()  # asyncio.get_running_loop() is a getpid() on 3.11

        def check() -> None:
            loop.create_task(self._check_tail(room)).add_done_callback(log_failure)

        delay = self.settings.tail_check_delay
        # Due on a grid of half the delay: the rooms that went quiet around
        # the same moment are checked in the same loop turn and share one
        # store read (LogReader's coalescer) instead of a statement per room
        # (with rooms spread over instances, every remote operation starts a
        # check on every other instance that has the document open).
        step = delay / 2
        due = loop.time() + delay
        if step > 0:
            due = math.ceil(due / step) * step
        room.tail_timer = loop.call_at(due, check)

    async def _check_tail(self, room: Room) -> None:
        room.tail_timer = None
        if self.rooms.get(room.document_id) is not room or not room.ready.done():
            return
        try:
            head = await self._head(room.document_id)
            while head >= room.next_seq and self.rooms.get(room.document_id) is room:
                count = min(head - room.next_seq + 1, self.settings.max_page_size)
                ops = await self.store.read_ops(room.document_id, room.next_seq - 1, count)
                if not ops:
                    break
                self.gaps_filled += 1
                for op in ops:
                    self._accept(room, op.seq, self._stored_edit(op), None)
        except StoreError:
            log.warning("tail check for %s failed", room.document_id)

    # -- other instances' operations -----------------------------------------

    def receive(self, room: Room, message: OperationMessage) -> None:
        """Another instance's operation for an open document."""
        try:
            operation = decode_operation(message.payload)
        except ValueError:
            log.warning("undecodable operation from %s", message.origin)
            return
        body = edit_body(
            message.document_id, message.seq, message.user_id, message.client_op_id, operation
        )
        self._accept(room, message.seq, self._remote_edit(body), None)
        self._schedule_tail_check(room)

    def check_all(self) -> None:
        """Whatever the broker lost meanwhile: every open document catches up
        from the log."""
        loop = asyncio.get_running_loop()
        for room in list(self.rooms.values()):
            loop.create_task(self._check_tail(room)).add_done_callback(log_failure)

    # -- to the members ------------------------------------------------------

    def _deliver(self, room: Room, seq: int, prepared: object, sender_sid: str | None) -> None:
        send = self.gateway.send_prepared
        offsets = self._offsets
        for sid, member in room.members.items():
            own = sid == sender_sid
            pending = member.pending
            if pending is not None:
                if seq >= member.next_seq:
                    if len(pending) >= self.settings.max_pending:
                        # The client is far behind: it will page the rest with sync.
                        pending.clear()
                    pending.append((seq, None if own else prepared))
                continue
            if seq == member.next_seq:
                member.next_seq = seq + 1
                if not own:
                    if offsets:
                        self._send_edit(member, seq, prepared)
                    else:
                        send(sid, prepared)
                    self.ops_delivered += 1
            elif seq > member.next_seq:
                # Cannot happen with one instance (commits are delivered in
                # order); hold it and let the client's next sync fill the gap.
                member.pending = [(seq, None if own else prepared)]

    def caught_up_to(self, member: Member, last: int, *, final: bool) -> None:
        """The member's client now has every operation up to ``last``."""
        if last + 1 > member.next_seq:
            member.next_seq = last + 1
        if not final or member.pending is None:
            return
        pending = member.pending
        # Release held live operations right after the acknowledgement.
        room = self.rooms.get(member.document_id)
        # The room's loop: asyncio.get_running_loop() is a getpid() on 3.11.
        loop = room.ready.get_loop() if room is not None else asyncio.get_running_loop()
        loop.call_soon(self._release, member, pending)

    def _release(self, member: Member, pending: list[tuple[int, object | None]]) -> None:
        if member.pending is not pending or member.conn.docs.get(member.document_id) is not member:
            return
        pending.sort(key=lambda item: item[0])
        for seq, prepared in pending:
            if seq < member.next_seq:
                continue
            if seq > member.next_seq:
                # A hole (held list was cleared): stay in catch-up; sync fills it.
                member.pending = [item for item in pending if item[0] >= seq]
                self.gateway.send(
                    member.sid,
                    "resync",
                    {"documentId": member.document_id, "since": member.next_seq - 1},
                )
                return
            member.next_seq = seq + 1
            if prepared is not None:
                self._send_edit(member, seq, prepared)
        member.pending = None
        self._record_changed(member.conn)
        if member.conn.restoring is not None:
            member.conn.restoring.pop(member.document_id, None)

    def _send_edit(self, member: Member, seq: int, prepared: object) -> None:
        """Send one ``remote-edit`` to a member, with its offset when recovery is on."""
        if not isinstance(prepared, RecoverableEdit):
            self.gateway.send_prepared(member.sid, prepared)
            return
        conn = member.conn
        if len(conn.docs) == 1 and not conn.restoring:
            shared = prepared.shared
            if shared is None:
                offset = encode_offset({member.document_id: seq})
                shared = prepared.shared = self.gateway.prepare(
                    "remote-edit", prepared.body, offset
                )
            self.gateway.send_prepared(member.sid, shared)
            return
        offset = encode_offset(positions(conn, member.document_id, seq))
        self.gateway.send_prepared(
            member.sid, self.gateway.prepare("remote-edit", prepared.body, offset)
        )
