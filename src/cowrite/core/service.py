"""CollabService: the collaboration events' handlers, thin, over the service's parts.

The events are ADR-003's (``join-document``, ``edit-operation``,
``remote-edit``, ``user-joined``, ``user-left``, ``error``), extended with
``sync``, ``presence-update``/``presence``, ``share-document`` and
``store-snapshot``.  Every handler returns the acknowledgement
(core/acks.py): ``{"ok": True, ...}`` or ``{"ok": False, "error": {"code":
..., "message": ...}}``.

Invariant: a handler validates its payload and the connection's membership
here, answers with exactly one ack, and leaves each idea to its part:

* core/sequencer.py: each member gets a document's operations exactly once,
  in order, with no gap (rooms, held operations, gap fill, tail check, the
  fan-out after a commit);
* core/presence.py: who is in a document and what they show;
* core/access.py: who may do what, and how a role change reaches them;
* core/limits.py: per-connection rate limits and the flood rule;
* core/history.py: pages of the log without holes, heads, snapshots;
* core/resume.py: connection-state recovery (records, resumes, replays);
* core/publisher.py: what this instance tells the others, in order.

The service owns the connection table (``Conn`` by sid, core/members.py) and
the edit path up to the group commit (``edit`` -> ``_check_edit`` ->
``_submit_edit`` -> ``_encode`` -> ``Committer.submit``), which stays here
whole: it costs no call into another part per edit except the rate limit's
bucket (bound once, ``_rate_limit``); the commit's fan-out is the
sequencer's, and the acks resolve here right after it.

Snapshots
---------
A client that joins with ``snapshot: true`` and ``since`` 0 gets the newest
snapshot (``{seq, data, userId}``) and the operations after it instead of the
whole log.  One whose ``since`` is older than the kept log (compaction deleted
operations after it) gets the snapshot with ``resync: true``, from
``join-document`` or ``sync``: its state must be rebuilt from the snapshot.
A client that did not ask for snapshots gets the old shape, and the error
``history_compacted`` instead of a page with a hole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from cowrite.auth import AuthError, Identity
from cowrite.backends.broker import (
    Broker,
    BrokerMessage,
    InstanceMessage,
    OperationMessage,
    PresenceMessage,
    RoleMessage,
)
from cowrite.backends.presence import PresenceStore
from cowrite.backends.recovery import RecoveryStore
from cowrite.backends.store import (
    AppendRequest,
    OperationStore,
    Role,
    Snapshot,
    SnapshotRefused,
    StoreError,
)
from cowrite.core.access import WRITERS, Access
from cowrite.core.acks import Ack, error
from cowrite.core.committer import Committed, Committer, Failed
from cowrite.core.compaction import compaction_loop
from cowrite.core.gateway import ClientGateway
from cowrite.core.history import HistoryCompacted, LogReader, op_dict, snapshot_dict
from cowrite.core.limits import RateLimiter
from cowrite.core.members import Conn, Member
from cowrite.core.opcodec import depth_within, encode_operation, operation_size
from cowrite.core.presence import PresenceRelay, roster_of
from cowrite.core.publisher import Publisher
from cowrite.core.recovery import RecordWriter
from cowrite.core.resume import Resumer
from cowrite.core.sequencer import Sequencer
from cowrite.core.settings import CollabSettings
from cowrite.core.tasks import running_loop
from cowrite.errors import ProtocolError

log = logging.getLogger("cowrite.collab")

_MAX_ID = 256
_MAX_SEQ = 2**53  # exact in a JavaScript number, fits every store's integer
# Nesting allowed inside an operation: the envelopes it travels in (acks,
# pages, remote-edit) add a few levels and orjson stops at 255.
MAX_OPERATION_DEPTH = 200


class Verifier(Protocol):
    def verify(self, token: object) -> Identity: ...


_NOT_STORED = error("unavailable", "Not stored: the document store is unavailable; retry")


def _document_id(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= _MAX_ID and value.isprintable():
        return value
    return None


def _seq(value: Any, default: int = 0) -> int | None:
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_SEQ:
        return value
    return None


def _compacted(kept_from: int) -> Ack:
    return error(
        "history_compacted",
        f"Operations before seq {kept_from} were compacted: "
        "join with snapshot: true to get the document's snapshot",
    )


class CollabService:
    def __init__(
        self,
        *,
        store: OperationStore,
        presence: PresenceStore,
        gateway: ClientGateway,
        verifier: Verifier,
        broker: Broker,
        settings: CollabSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        recovery: RecoveryStore | None = None,
    ) -> None:
        self.store = store
        self.presence = presence
        self.gateway = gateway
        self.verifier = verifier
        self.broker = broker
        self.instance_id = broker.instance_id
        self.settings = settings or CollabSettings()
        self.clock = clock
        self.committer = Committer(
            store,
            self._deliver_committed,
            self._commit_failed,
            min_interval=self.settings.commit_interval,
            enough=self.settings.commit_enough,
        )
        self._conns: dict[str, Conn] = {}
        self._compactor: asyncio.Task[None] | None = None
        self._history = LogReader(store)
        self._shutting_down = False
        self._publisher = Publisher(broker)
        self._publish = self._publisher.publish
        self._sequencer = Sequencer(
            store=store,
            broker=broker,
            gateway=gateway,
            settings=self.settings,
            head=self._history.head,
            publish=self._publish,
            offsets=recovery is not None,
            record_changed=self._record_changed,
        )
        self._rooms = self._sequencer.rooms
        self._relay = PresenceRelay(
            store=presence,
            gateway=gateway,
            settings=self.settings,
            rooms=self._rooms,
            publish=self._publish,
            instance_id=self.instance_id,
        )
        self._access = Access(
            store=store,
            gateway=gateway,
            settings=self.settings,
            clock=clock,
            rooms=self._rooms,
            publish=self._publish,
            instance_id=self.instance_id,
            remove=self._remove_member,
        )
        # The very set the access part re-reads roles for: an edit adds its
        # member with no call into that part (the edit path's cost).
        self._recent_editors = self._access.recent_editors
        self._limiter = RateLimiter(
            settings=self.settings, clock=clock, gateway=gateway, conns=self._conns
        )
        # Bound once: the edit path calls them with no attribute chain.
        self._rate_limit = self._limiter.check
        self._settled = self._limiter.settled
        # Connection-state recovery (None: off, and no cost on the edit path).
        self._resumer = (
            Resumer(
                records=RecordWriter(recovery, self.settings.recovery_window),
                conns=self._conns,
                # Looked up at each resume, as ``connect`` does.
                verify=lambda token: self.verifier.verify(token),
                gateway=gateway,
                settings=self.settings,
                clock=clock,
                access=self._access,
                sequencer=self._sequencer,
                relay=self._relay,
                history=self._history,
            )
            if recovery is not None
            else None
        )
        # Plain counters on the hot path, read by the metrics collector at scrape time.
        self.connects_ok = 0
        self.auth_failures: dict[str, int] = {}
        self.ops_received = 0
        self.ops_replayed = 0
        self.broker_received = 0
        self.recoveries: dict[str, int] = {}
        self.snapshots_stored = 0
        self.snapshots_sent = 0
        self.snapshot_resyncs = 0
        # Who handles messages for every instance (the server API, core/api.py).
        self.instance_handler: Callable[[InstanceMessage], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self)
        self.committer.start()
        # Bound once: on Python 3.11 asyncio.get_running_loop() is a getpid()
        # system call, and an edit needs the loop for its ack's future.
        loop = self._loop = asyncio.get_running_loop()
        self._publisher.start()
        self._relay.start()
        self._access.start()
        if self.settings.retention.interval > 0:
            self._compactor = loop.create_task(
                compaction_loop(self.store, self.settings.retention), name="compaction"
            )
        if self._resumer is not None:
            self._resumer.start()

    def begin_shutdown(self) -> None:
        """From now on members leave locally only (see ``_remove_member``)."""
        self._shutting_down = True
        self._sequencer.local_only = True
        self._relay.stop_leaving()

    async def commit_pending(self) -> None:
        """Commit everything already accepted; later edits are refused
        (``unavailable``: the client resends them elsewhere)."""
        await self.committer.stop()

    def announce_departures(self, pairs: list[tuple[str, str]]) -> None:
        """Users who left documents for good (this instance is going away)."""
        self._relay.departures(pairs)

    async def stop(self) -> None:
        """Commit everything already accepted, hand the last messages to the
        broker, then stop."""
        await self.committer.stop()
        # Give the publisher a moment to hand the last operations to the broker.
        await self._publisher.drain()
        if self._resumer is not None:
            await self._resumer.stop()
        if self._compactor is not None:
            self._compactor.cancel()
        self._publisher.cancel()
        self._access.cancel()
        self._relay.cancel()
        self._history.cancel()
        self._sequencer.stop()
        await self.broker.stop()

    async def ready(self) -> bool:
        """Store reachable and broker subscriber connected (for /readyz)."""
        return self.broker.available and await self.store.ping()

    # -- connection ----------------------------------------------------------

    def connect(self, sid: str, auth: Any, *, pid: str | None = None) -> Identity:
        """Authenticate a new connection; raises ``AuthError`` to refuse it.

        ``pid``: the socket's private id (connection-state recovery); when
        ``resume`` issued a ticket for ``sid`` with it, the socket is resumed."""
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            identity = self.verifier.verify(token)
        except AuthError as exc:
            self.auth_failures[exc.code] = self.auth_failures.get(exc.code, 0) + 1
            raise
        conn = self._conns[sid] = Conn(sid, identity)
        self.connects_ok += 1
        if pid is not None and self._resumer is not None:
            self._resumer.connected(conn, pid)
        return identity

    async def disconnect(self, sid: str, *, recoverable: bool = False) -> None:
        """The socket is gone; ``recoverable``: its connection was lost (it may
        come back and resume), rather than ended on purpose."""
        conn = self._conns.pop(sid, None)
        if conn is None:
            return
        if self._resumer is not None:
            self._resumer.disconnected(conn, recoverable)
        for member in list(conn.docs.values()):
            await self._remove_member(member)

    async def resume(self, namespace: str, pid: str, offset: str | None, auth: Any) -> str | None:
        """The Socket.IO server's ``restore`` hook (``Resumer.resume``): the sid
        of the socket to resume, or ``None`` (a new socket; always with
        recovery off)."""
        if self._resumer is None:
            return None
        return await self._resumer.resume(namespace, pid, offset, auth)

    def _record_changed(self, conn: Conn) -> None:
        """The connection caught up in, or left, a document: its recovery
        record is saved again (recovery on)."""
        if self._resumer is not None:
            self._resumer.record_changed(conn)

    # -- join / leave --------------------------------------------------------

    async def join(self, sid: str, payload: Any) -> Ack:
        conn = self._conns.get(sid)
        if conn is None:
            return error("not_connected", "Not authenticated")
        wants_snapshot = False
        if isinstance(payload, dict):
            doc_id = _document_id(payload.get("documentId"))
            since = _seq(payload.get("since"))
            wants_snapshot = payload.get("snapshot") is True
        else:
            doc_id = _document_id(payload)
            since = 0
        if doc_id is None or since is None:
            return error("invalid_payload", "documentId must be a string and since a number >= 0")
        existing = conn.docs.get(doc_id)
        if existing is None and len(conn.docs) >= self.settings.max_documents_per_connection:
            return error("too_many_documents", "Too many documents open on this connection")
        try:
            role = await self._access.resolve_role(conn.identity, doc_id, create=True)
            if role is None:
                self._access.denied += 1
                self.gateway.send(sid, "error", "Access denied")
                return error("access_denied", "Access denied")
            if self._conns.get(sid) is not conn:
                return error("not_connected", "Disconnected")
            if existing is not None:
                # A second join on the same connection restarts catch-up from ``since``.
                existing.role = role
                existing.next_seq = since + 1
                existing.pending = []
                existing.snapshots = wants_snapshot
                member = existing
                first = False
                (snapshot, ops, head, more), roster = await asyncio.gather(
                    self._history.read_from(
                        doc_id, since, self.settings.page_size, wants_snapshot, True
                    ),
                    self.presence.roster(doc_id),
                )
            else:
                room = await self._sequencer.open(doc_id)
                if self._conns.get(sid) is not conn:
                    if not room.members:
                        self._sequencer.close(room)  # nobody else opened it meanwhile
                    return error("not_connected", "Disconnected")
                member = Member(conn, doc_id, role, since, self.clock())
                member.role_from_store = self._access.claim_role(conn.identity, doc_id) is None
                member.snapshots = wants_snapshot
                conn.docs[doc_id] = member
                room.members[sid] = member
                # Awaited before anything else: a disconnect that runs later
                # finds the connection in the presence store to remove (its
                # leave waits for this join: ``_remove_member``).
                first, roster = await self._relay.join(member)
                if since == room.next_seq - 1 and self._rooms.get(doc_id) is room:
                    # The room has handed its members every operation up to
                    # ``since`` and hands this one (held until the ack) every
                    # later one: nothing to read (a reconnect that missed
                    # nothing, or a join of a document nobody has written).
                    snapshot, ops, head, more = None, [], since, False
                else:
                    snapshot, ops, head, more = await self._history.read_from(
                        doc_id, since, self.settings.page_size, wants_snapshot, True
                    )
        except HistoryCompacted as exc:
            if conn.docs.get(doc_id) is member:
                await self._remove_member(member)
            return _compacted(exc.kept_from)
        except StoreError as exc:
            log.warning("join %s failed: %s", doc_id, exc)
            return error("unavailable", "The document store is unavailable")
        if conn.docs.get(doc_id) is not member:
            return error("not_joined", "Left the document while joining")
        self.ops_replayed += len(ops)
        start = snapshot.seq if snapshot is not None else since
        if since > 0:
            outcome = "paged" if more else "complete"
            if snapshot is not None:
                outcome = "snapshot"
            self.recoveries[outcome] = self.recoveries.get(outcome, 0) + 1
        self._sequencer.caught_up_to(member, ops[-1].seq if ops else start, final=not more)
        if first:
            self._relay.arrived(conn, doc_id)
        ack: Ack = {
            "ok": True,
            "documentId": doc_id,
            "role": role.value,
            "head": max(head, ops[-1].seq if ops else 0),
            "ops": [op_dict(op) for op in ops],
            "more": more,
            "presence": roster_of(roster),
        }
        if snapshot is not None:
            self._add_snapshot(ack, snapshot, since)
        return ack

    def _add_snapshot(self, ack: Ack, snapshot: Snapshot, since: int) -> None:
        ack["snapshot"] = snapshot_dict(snapshot)
        if since > 0:
            # The client's state at ``since`` cannot be brought forward: rebuild it.
            ack["resync"] = True
            self.snapshot_resyncs += 1
        self.snapshots_sent += 1

    async def leave(self, sid: str, payload: Any) -> Ack:
        conn = self._conns.get(sid)
        doc_id = _document_id(payload.get("documentId") if isinstance(payload, dict) else payload)
        if conn is None or doc_id is None:
            return error("invalid_payload", "documentId must be a string")
        member = conn.docs.get(doc_id)
        if member is None:
            return error("not_joined", "Not in this document")
        await self._remove_member(member)
        return {"ok": True, "documentId": doc_id}

    async def _remove_member(self, member: Member) -> None:
        conn = member.conn
        doc_id = member.document_id
        if conn.docs.get(doc_id) is member:
            del conn.docs[doc_id]
        room = self._rooms.get(doc_id)
        if room is not None and room.members.get(member.sid) is member:
            del room.members[member.sid]
            if not room.members:
                self._sequencer.close(room)
        self._relay.forget(member)
        if conn.restoring:
            conn.restoring.pop(doc_id, None)
        self._record_changed(conn)  # left or revoked: not resumed there
        if self._shutting_down:
            # The instance is going away: ``presence.stop()`` forgets all of
            # its connections at once and reports who left; no per-member trips.
            return
        await self._relay.leave(member)

    # -- operations ----------------------------------------------------------

    def edit(self, sid: str, payload: Any) -> asyncio.Future[Ack]:
        """``edit-operation``: validate, queue for the group commit, and return a
        future that resolves to the ack once the operation is durable.

        A plain function rather than a coroutine: the common edit costs no task
        and no coroutine frame; only a member whose cached role is too old to
        trust goes through a task (``_edit_after_role_check``)."""
        future: asyncio.Future[Ack] = running_loop(self._loop).create_future()
        conn = self._conns.get(sid)
        if conn is None:
            future.set_result(error("not_connected", "Not authenticated"))
            return future
        limited = self._rate_limit(conn, "edit")
        if limited is not None:
            future.set_result(limited)
            return future
        checked = self._check_edit(conn, payload)
        if isinstance(checked, dict):
            future.set_result(checked)
            return future
        member, doc_id, client_op_id = checked
        now = self.clock()
        if now - member.role_checked_at > self.settings.role_cache_seconds:
            claimed = self._access.claim_role(conn.identity, doc_id)
            if claimed is not None:
                # The token's claim is the role: re-reading it needs no store.
                member.role = claimed
                member.role_checked_at = now
        if member.role_from_store:
            self._recent_editors.add(member)
        if now - member.role_checked_at > self.settings.role_cache_seconds:
            task = asyncio.ensure_future(
                self._edit_after_role_check(member, doc_id, client_op_id, payload["operation"])
            )
            return task
        if member.role not in WRITERS:
            future.set_result(error("read_only", "Your role in this document cannot edit"))
            return future
        self._submit_edit(member, doc_id, client_op_id, payload["operation"], future)
        return future

    def _check_edit(self, conn: Conn, payload: Any) -> Ack | tuple[Member, str, str | None]:
        """The payload's shape and the connection's membership: an error ack, or
        (member, document id, clientOpId)."""
        if not isinstance(payload, dict) or "operation" not in payload:
            return error("invalid_payload", "Expected {documentId, operation, clientOpId}")
        doc_id = _document_id(payload.get("documentId"))
        if doc_id is None:
            return error("invalid_payload", "documentId must be a string")
        client_op_id = payload.get("clientOpId")
        if isinstance(client_op_id, int) and not isinstance(client_op_id, bool):
            client_op_id = str(client_op_id)
        if client_op_id is not None and (
            not isinstance(client_op_id, str) or not 0 < len(client_op_id) <= 128
        ):
            return error("invalid_payload", "clientOpId must be a string of 1-128 characters")
        member = conn.docs.get(doc_id)
        if member is None:
            return error("not_joined", "Join the document first")
        return member, doc_id, client_op_id

    async def _edit_after_role_check(
        self, member: Member, doc_id: str, client_op_id: str | None, operation: Any
    ) -> Ack:
        try:
            if not await self._access.check_role(member, WRITERS):
                return error("read_only", "Your role in this document cannot edit")
        except StoreError:
            return error("unavailable", "The document store is unavailable")
        future: asyncio.Future[Ack] = running_loop(self._loop).create_future()
        self._submit_edit(member, doc_id, client_op_id, operation, future)
        return await future

    def _submit_edit(
        self,
        member: Member,
        doc_id: str,
        client_op_id: str | None,
        operation: Any,
        future: asyncio.Future[Ack],
    ) -> None:
        """Encode the operation (one pass: JSON, size, depth) and queue it; the
        future gets the ack from ``_deliver_committed`` or ``_commit_failed``."""
        encoded = self._encode(operation)
        if isinstance(encoded, dict):
            future.set_result(encoded)
            return
        request = AppendRequest(doc_id, member.conn.identity.user_id, client_op_id, encoded)
        self.ops_received += 1
        if not self.committer.submit(request, (member.sid, operation, time.perf_counter(), future)):
            future.set_result(_NOT_STORED)
            return
        member.conn.inflight += 1

    def _encode(self, operation: Any) -> bytes | Ack:
        """The operation as stored, or the error ack that refuses it."""
        try:
            encoded = encode_operation(operation)
        except ProtocolError:
            return error("invalid_payload", "operation must be a JSON value")
        if not depth_within(encoded, MAX_OPERATION_DEPTH):
            return error(
                "invalid_payload", f"operation nested deeper than {MAX_OPERATION_DEPTH} levels"
            )
        if operation_size(encoded) > self.settings.max_operation_bytes:
            return error(
                "payload_too_large", f"operation exceeds {self.settings.max_operation_bytes} bytes"
            )
        return encoded

    def publish(
        self, doc_id: str, user_id: str, client_op_id: str | None, operation: Any
    ) -> asyncio.Future[Ack]:
        """An operation from no connection (the server API) on behalf of
        ``user_id``: the same checks, log, order and fan-out as ``edit``
        (every member gets it, none is its sender).  The document must exist:
        the store refuses a whole batch that names an unknown one."""
        future: asyncio.Future[Ack] = running_loop(self._loop).create_future()
        encoded = self._encode(operation)
        if isinstance(encoded, dict):
            future.set_result(encoded)
            return future
        request = AppendRequest(doc_id, user_id, client_op_id, encoded)
        self.ops_received += 1
        if not self.committer.submit(request, ("", operation, time.perf_counter(), future)):
            future.set_result(_NOT_STORED)
        return future

    def _commit_failed(self, failed: Failed, exc: StoreError) -> None:
        for _request, context in failed:
            future = context[3]
            if not future.done():
                future.set_result(_NOT_STORED)
            self._settled(context[0])

    def _deliver_committed(self, committed: Committed) -> None:
        """Runs right after each commit, in commit order: the sequencer hands
        the new operations to the local members and to the other instances,
        then the acks resolve (so every broadcast frame is queued before the
        sender's ack)."""
        self._sequencer.deliver_committed(committed)
        for request, result, context in committed:
            future = context[3]
            if not future.done():
                ack: Ack = {"ok": True, "documentId": request.document_id, "seq": result.seq}
                if result.duplicate:
                    ack["duplicate"] = True
                future.set_result(ack)
            self._settled(context[0])

    # -- catch-up and snapshots ---------------------------------------------

    async def sync(self, sid: str, payload: Any) -> Ack:
        conn = self._conns.get(sid)
        if conn is None or not isinstance(payload, dict):
            return error("invalid_payload", "Expected {documentId, since, limit}")
        doc_id = _document_id(payload.get("documentId"))
        since = _seq(payload.get("since"))
        limit = _seq(payload.get("limit"), self.settings.page_size)
        if doc_id is None or since is None or limit is None or limit == 0:
            return error("invalid_payload", "Expected {documentId, since >= 0, limit >= 1}")
        limit = min(limit, self.settings.max_page_size)
        member = conn.docs.get(doc_id)
        if member is None:
            return error("not_joined", "Join the document first")
        try:
            if not await self._access.check_role(member, tuple(Role)):
                return error("access_denied", "Access denied")
            snapshot, ops, head, more = await self._history.read_from(
                doc_id, since, limit, member.snapshots, False
            )
        except HistoryCompacted as exc:
            return _compacted(exc.kept_from)
        except StoreError:
            return error("unavailable", "The document store is unavailable")
        start = snapshot.seq if snapshot is not None else since
        if member.pending is not None:
            self._sequencer.caught_up_to(member, ops[-1].seq if ops else start, final=not more)
        self.ops_replayed += len(ops)
        ack: Ack = {
            "ok": True,
            "documentId": doc_id,
            "ops": [op_dict(op) for op in ops],
            "head": max(head, ops[-1].seq if ops else 0),
            "more": more,
        }
        if snapshot is not None:
            self._add_snapshot(ack, snapshot, since)
        return ack

    async def store_snapshot(self, sid: str, payload: Any) -> Ack:
        """``store-snapshot {documentId, seq, data}``: keep ``data`` (any JSON
        value, binary parts included) as the document's state at ``seq``.
        Editors and owners only; ``seq`` at most the head and above the newest
        snapshot's (``invalid_seq``, ``stale_snapshot``)."""
        conn = self._conns.get(sid)
        if conn is None or not isinstance(payload, dict) or "data" not in payload:
            return error("invalid_payload", "Expected {documentId, seq, data}")
        doc_id = _document_id(payload.get("documentId"))
        seq = _seq(payload.get("seq"), -1)
        if doc_id is None or seq is None or seq < 1:
            return error("invalid_payload", "documentId must be a string and seq a number >= 1")
        limited = self._rate_limit(conn, "edit")
        if limited is not None:
            return limited
        member = conn.docs.get(doc_id)
        if member is None:
            return error("not_joined", "Join the document first")
        try:
            encoded = encode_operation(payload["data"])
        except ProtocolError:
            return error("invalid_payload", "data must be a JSON value")
        if not depth_within(encoded, MAX_OPERATION_DEPTH):
            return error("invalid_payload", f"data nested deeper than {MAX_OPERATION_DEPTH} levels")
        if operation_size(encoded) > self.settings.max_snapshot_bytes:
            return error(
                "payload_too_large", f"snapshot exceeds {self.settings.max_snapshot_bytes} bytes"
            )
        try:
            if not await self._access.check_role(member, WRITERS):
                return error("read_only", "Your role in this document cannot store snapshots")
            await self.store.store_snapshot(doc_id, seq, conn.identity.user_id, encoded)
        except SnapshotRefused as exc:
            ack = error(exc.code, str(exc))
            ack["error"]["latest"] = exc.latest
            return ack
        except StoreError:
            return error("unavailable", "The document store is unavailable")
        self.snapshots_stored += 1
        return {"ok": True, "documentId": doc_id, "seq": seq}

    # -- presence ------------------------------------------------------------

    async def presence_update(self, sid: str, payload: Any) -> Ack:
        conn = self._conns.get(sid)
        if conn is None or not isinstance(payload, dict):
            return error("invalid_payload", "Expected {documentId, state}")
        limited = self._rate_limit(conn, "presence")
        if limited is not None:
            return limited
        doc_id = _document_id(payload.get("documentId"))
        member = conn.docs.get(doc_id) if doc_id is not None else None
        if member is None:
            return error("not_joined", "Join the document first")
        state = payload.get("state")
        try:
            size = len(orjson.dumps(state))
        except TypeError:
            return error("invalid_payload", "state must be JSON")
        if size > self.settings.max_presence_bytes:
            return error("payload_too_large", "presence state is too large")
        self._relay.update(member, state)
        return {"ok": True}

    # -- sharing -------------------------------------------------------------

    async def share(self, sid: str, payload: Any) -> Ack:
        conn = self._conns.get(sid)
        if conn is None or not isinstance(payload, dict):
            return error("invalid_payload", "Expected {documentId, userId, role}")
        doc_id = _document_id(payload.get("documentId"))
        target = _document_id(payload.get("userId"))
        raw_role = payload.get("role")
        if doc_id is None or target is None:
            return error("invalid_payload", "documentId and userId must be strings")
        new_role: Role | None
        if raw_role is None or raw_role == "none":
            new_role = None
        elif raw_role in tuple(Role):
            new_role = Role(raw_role)
        else:
            return error("invalid_payload", "role must be owner, editor, viewer or null")
        if target == conn.identity.user_id:
            return error("invalid_payload", "You cannot change your own role")
        try:
            role = await self._access.resolve_role(conn.identity, doc_id, create=False)
            if role is not Role.OWNER:
                return error("access_denied", "Only an owner can share this document")
            await self.change_role(doc_id, target, new_role)
        except StoreError:
            return error("unavailable", "The document store is unavailable")
        return {
            "ok": True,
            "documentId": doc_id,
            "userId": target,
            "role": new_role.value if new_role is not None else None,
        }

    async def change_role(self, doc_id: str, user_id: str, role: Role | None) -> None:
        """Store the user's new role (``None``: revoke) and enforce it
        everywhere (``Access.change_role``).  Raises ``StoreError``."""
        await self._access.change_role(doc_id, user_id, role)

    async def apply_role_change(self, doc_id: str, user_id: str, role: Role | None) -> None:
        """Enforce a new role on the user's open connections at once."""
        await self._access.apply_role_change(doc_id, user_id, role)

    # -- BrokerListener --------------------------------------------------------

    def on_message(self, message: BrokerMessage) -> None:
        """Another instance's message for a document with local members."""
        room = self._rooms.get(message.document_id)
        if room is None:
            return
        self.broker_received += 1
        if isinstance(message, OperationMessage):
            self._sequencer.receive(room, message)
        elif isinstance(message, PresenceMessage):
            self._relay.receive(message)
        elif isinstance(message, RoleMessage):
            self._access.receive(message)

    def on_instance_message(self, message: InstanceMessage) -> None:
        """A message for every instance (see ``core/api.py``)."""
        if self.instance_handler is not None:
            self.instance_handler(message)

    def on_availability(self, available: bool) -> None:
        """The broker's subscriber came back: whatever was published meanwhile
        is lost to us, so every open document catches up from the log."""
        if not available:
            log.warning("broker unavailable: remote edits wait for it (local ones still commit)")
            return
        self._sequencer.check_all()

    # -- for the server API (core/api.py) -------------------------------------

    def disconnect_user(self, user_id: str, code: str, reason: str) -> int:
        """Tell every local connection of ``user_id`` why (``server-disconnect
        {code, reason}``), then disconnect it; how many there were."""
        sids = [sid for sid, conn in self._conns.items() if conn.identity.user_id == user_id]
        for sid in sids:
            self.gateway.send(sid, "server-disconnect", {"code": code, "reason": reason})
            self.gateway.disconnect(sid)
        return len(sids)

    def local_info(self, limit: int) -> tuple[int, int, dict[str, int]]:
        """(connections, open documents, at most ``limit`` documents -> local members)."""
        documents: dict[str, int] = {}
        for doc_id, room in self._rooms.items():
            if len(documents) >= limit:
                break
            documents[doc_id] = len(room.members)
        return len(self._conns), len(self._rooms), documents

    async def history(
        self, doc_id: str, since: int, limit: int
    ) -> tuple[list[dict[str, Any]], int, bool]:
        """A page of the log after ``since`` as clients see it: (ops, head,
        more).  Raises ``StoreError`` (``UnknownDocument``)."""
        ops, head, more = await self._history.read_page(doc_id, since, limit)
        return [op_dict(op) for op in ops], max(head, ops[-1].seq if ops else 0), more

    async def roster(self, doc_id: str) -> list[dict[str, Any]]:
        """Who is in the document, on every instance."""
        return await self._relay.roster(doc_id)

    # -- counters and sizes, read by the metrics collector at scrape time -----

    @property
    def broker_published(self) -> int:
        return self._publisher.published

    @property
    def publish_failures(self) -> int:
        return self._publisher.failures

    @property
    def gaps_filled(self) -> int:
        return self._sequencer.gaps_filled

    @property
    def ops_delivered(self) -> int:
        return self._sequencer.ops_delivered

    @property
    def observe_delivery(self) -> Callable[[float], None] | None:
        """Called with seconds from receiving an operation to queueing it for
        its last local recipient."""
        return self._sequencer.observe_delivery

    @observe_delivery.setter
    def observe_delivery(self, observe: Callable[[float], None] | None) -> None:
        self._sequencer.observe_delivery = observe

    @property
    def rate_limited(self) -> int:
        return self._limiter.rate_limited

    @property
    def flood_disconnects(self) -> int:
        return self._limiter.flood_disconnects

    @property
    def access_denied(self) -> int:
        return self._access.denied

    @property
    def resumed(self) -> int:
        return self._resumer.resumed if self._resumer is not None else 0

    @property
    def resume_failed(self) -> dict[str, int]:
        return self._resumer.resume_failed if self._resumer is not None else {}

    @property
    def ops_resumed(self) -> int:
        return self._resumer.ops_resumed if self._resumer is not None else 0

    @property
    def document_count(self) -> int:
        return len(self._rooms)

    @property
    def connection_count(self) -> int:
        return len(self._conns)


def refusal(exc: AuthError) -> tuple[str, dict[str, str]]:
    """The CONNECT_ERROR message and data for an authentication failure."""
    return "Authentication failed", {"code": exc.code}
