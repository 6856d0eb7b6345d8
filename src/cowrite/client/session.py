"""``DocumentSession``: one open document, its operation stream and its roster.

Exactly once, in order
----------------------
``last_seq`` is the end of the gap-free prefix ``1..last_seq`` the session has
accounted for: remote operations it delivered and its own acknowledged ones.
A remote operation (``remote-edit``, a ``join-document`` or ``sync`` page)
with ``seq <= last_seq`` or already held is a duplicate and dropped; one past
a gap is held until the gap closes.  The gaps are this client's own
operations (the server never echoes them, their ``seq`` comes in the ack) and
whatever a catch-up page brings.  An operation in a page or a
``remote-edit`` whose ``clientOpId`` is one of this session's unacknowledged
submissions (and whose ``userId`` is the token's subject) is recognised as
ours: the submission is resolved with its ``seq`` instead of being delivered,
which is what happens when the ack was lost with the connection.

Snapshots
---------
A session opened with ``snapshot=True`` may start from the document's newest
snapshot instead of its whole log: ``session.snapshot`` is then set and every
``on_snapshot`` callback called before the operations after it are delivered.
The server also sends one, with ``resync`` true, when the operations after
``last_seq`` were compacted away: the application must rebuild its state from
the snapshot (for a CRDT such as Yjs, applying it on top is enough).

Consumers
---------
Operations delivered before the first consumer attaches (``on_operation`` or
``operations()``) are kept and handed to it, so the first consumer sees the
catch-up too; later consumers see what arrives after they attach.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cowrite.client.errors import ClientClosed

log = logging.getLogger("cowrite.client")


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the document's log, as another user submitted it."""

    document_id: str
    seq: int
    user_id: str
    client_op_id: str | None
    operation: Any


@dataclass(frozen=True, slots=True)
class Presence:
    """One user in the document's roster."""

    user_id: str
    name: str
    state: Any = None


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """``kind`` is ``joined``, ``left``, ``state`` or ``roster`` (the roster was
    replaced after a (re)join; ``user_id`` is then empty)."""

    document_id: str
    kind: str
    user_id: str
    name: str = ""
    state: Any = None


@dataclass(frozen=True, slots=True)
class DocumentSnapshot:
    """A document's state at ``seq`` as a client stored it (``store_snapshot``).
    ``resync`` is true when it replaces a state the session already had."""

    document_id: str
    seq: int
    user_id: str
    data: Any
    resync: bool = False


@dataclass(slots=True, eq=False)
class Submission:
    client_op_id: str
    operation: Any
    future: asyncio.Future[int]
    in_flight: bool = False
    sends: int = 0


_END = object()


@dataclass(slots=True, eq=False)
class _Consumer:
    callback: Callable[[Operation], None] | None = None
    queue: asyncio.Queue[Any] | None = None


@dataclass(slots=True, eq=False)
class SessionState:
    """Bookkeeping the client updates; not part of the public API."""

    live: bool = False
    buffer: dict[int, Operation] = field(default_factory=dict)
    own: set[int] = field(default_factory=set)
    pending: dict[str, Submission] = field(default_factory=dict)
    resync_from: int | None = None
    catch_up: asyncio.Task[None] | None = None
    ready: asyncio.Future[None] | None = None
    my_presence: Any = None
    has_presence: bool = False
    snapshots: bool = False


class SessionOwner(Protocol):
    """What a session asks of the client that opened it (``CowriteClient``).

    The session owns this interface so that ``session.py`` never imports
    ``client.py``, which builds sessions: the import graph stays a tree.
    """

    async def _submit(self, session: DocumentSession, operation: Any) -> int: ...

    async def _set_presence(self, session: DocumentSession, state: Any) -> None: ...

    async def _share(self, session: DocumentSession, user_id: str, role: str | None) -> None: ...

    async def _store_snapshot(self, session: DocumentSession, seq: int, data: Any) -> None: ...

    async def _close_session(self, session: DocumentSession) -> None: ...


class DocumentSession:
    """An open document.  Create it with ``await client.open(document_id)``."""

    def __init__(self, client: SessionOwner, document_id: str, since: int) -> None:
        self._client = client
        self.document_id = document_id
        #: ``owner``, ``editor`` or ``viewer`` (from the last join).
        self.role: str | None = None
        #: The highest ``seq`` the server reported for the document.
        self.head = since
        #: The end of the gap-free prefix of the log this session has accounted for.
        self.last_seq = since
        self._presence: dict[str, Presence] = {}
        self._consumers: list[_Consumer] = []
        self._presence_callbacks: list[Callable[[PresenceChange], None]] = []
        self._snapshot_callbacks: list[Callable[[DocumentSnapshot], None]] = []
        #: The last snapshot the server gave this session (``snapshot=True``).
        self.snapshot: DocumentSnapshot | None = None
        self._backlog: list[Operation] | None = []
        self._failure: BaseException | None = None
        self._closed = False
        self.state = SessionState()

    def __repr__(self) -> str:
        return f"<DocumentSession {self.document_id} last_seq={self.last_seq} head={self.head}>"

    # -- public API ----------------------------------------------------------------

    @property
    def presence(self) -> Mapping[str, Presence]:
        """The roster: user id -> ``Presence`` (a read-only view)."""
        return self._presence

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Submissions not yet acknowledged."""
        return len(self.state.pending)

    def on_operation(self, callback: Callable[[Operation], None]) -> Callable[[], None]:
        """Call ``callback`` for every remote operation, in ``seq`` order, once
        each.  Returns a function that unregisters it."""
        consumer = _Consumer(callback=callback)
        self._attach(consumer)
        return lambda: self._detach(consumer)

    async def operations(self) -> AsyncIterator[Operation]:
        """Remote operations in ``seq`` order, once each.  Ends when the session
        is closed; raises the terminal error (``AccessDenied``, ...) if it failed."""
        consumer = _Consumer(queue=asyncio.Queue())
        self._attach(consumer)
        queue = consumer.queue
        assert queue is not None
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    if self._failure is not None:
                        raise self._failure
                    return
                yield item
        finally:
            self._detach(consumer)

    def on_presence(self, callback: Callable[[PresenceChange], None]) -> Callable[[], None]:
        self._presence_callbacks.append(callback)
        return lambda: self._presence_callbacks.remove(callback)

    def on_snapshot(self, callback: Callable[[DocumentSnapshot], None]) -> Callable[[], None]:
        """Call ``callback`` with each snapshot the server gives this session,
        before the operations after it.  Returns a function that unregisters it."""
        self._snapshot_callbacks.append(callback)
        return lambda: self._snapshot_callbacks.remove(callback)

    async def store_snapshot(self, seq: int, data: Any) -> None:
        """Store ``data`` (any JSON value, bytes allowed) as the document's state
        at ``seq``; joiners then start from it.  Needs the editor or owner role.
        Raises ``ClientError`` (``stale_snapshot``: a snapshot at or after
        ``seq`` exists; ``invalid_seq``; ``payload_too_large``; ``read_only``)."""
        self._check_open()
        await self._client._store_snapshot(self, seq, data)

    async def submit(self, operation: Any) -> int:
        """Submit an operation; returns its ``seq`` once the server stored it.

        It is resent (same ``clientOpId``) after a reconnection until
        acknowledged, and stored exactly once.  Raises ``OperationRejected``
        when the server refuses it for good, ``AccessDenied``, or
        ``ClientClosed``."""
        self._check_open()
        return await self._client._submit(self, operation)

    async def set_presence(self, state: Any) -> None:
        """Publish this user's presence state; it is sent again after a reconnection."""
        self._check_open()
        await self._client._set_presence(self, state)

    async def share(self, user_id: str, role: str | None) -> None:
        """Give ``user_id`` a role (``owner``, ``editor``, ``viewer``) or revoke it
        (``None``); only an owner may.  Raises ``AccessDenied`` or ``ClientError``."""
        self._check_open()
        await self._client._share(self, user_id, role)

    async def close(self) -> None:
        """Wait (``close_timeout``) for pending submissions, then leave the document."""
        if not self._closed:
            await self._client._close_session(self)

    # -- used by the client --------------------------------------------------------

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise ClientClosed(f"document session {self.document_id!r} is closed")

    def _attach(self, consumer: _Consumer) -> None:
        self._consumers.append(consumer)
        backlog, self._backlog = self._backlog, None
        for op in backlog or ():
            self._give(consumer, op)
        if self._closed and consumer.queue is not None:
            consumer.queue.put_nowait(_END)

    def _detach(self, consumer: _Consumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)

    def _give(self, consumer: _Consumer, op: Operation) -> None:
        if consumer.queue is not None:
            consumer.queue.put_nowait(op)
        elif consumer.callback is not None:
            try:
                consumer.callback(op)
            except Exception:
                log.exception("operation callback failed")

    def _deliver(self, op: Operation) -> None:
        if self._backlog is not None:
            self._backlog.append(op)
            return
        for consumer in list(self._consumers):
            self._give(consumer, op)

    def _advance(self) -> int:
        """Deliver the contiguous run after ``last_seq``; returns how many were remote."""
        st = self.state
        delivered = 0
        while True:
            nxt = self.last_seq + 1
            op = st.buffer.pop(nxt, None)
            if op is not None:
                self.last_seq = nxt
                self._deliver(op)
                delivered += 1
            elif nxt in st.own:
                st.own.discard(nxt)
                self.last_seq = nxt
            else:
                return delivered

    def _take_snapshot(self, snapshot: DocumentSnapshot) -> None:
        """The session's state is now ``snapshot``: the log continues after its seq."""
        st = self.state
        self.last_seq = snapshot.seq
        for seq in [seq for seq in st.buffer if seq <= snapshot.seq]:
            del st.buffer[seq]
        st.own = {seq for seq in st.own if seq > snapshot.seq}
        self.snapshot = snapshot
        self._note_head(snapshot.seq)
        for callback in list(self._snapshot_callbacks):
            try:
                callback(snapshot)
            except Exception:
                log.exception("snapshot callback failed")

    def _note_head(self, head: Any) -> None:
        if isinstance(head, int) and head > self.head:
            self.head = head

    def _presence_changed(self, change: PresenceChange) -> None:
        for callback in list(self._presence_callbacks):
            try:
                callback(change)
            except Exception:
                log.exception("presence callback failed")

    def _set_roster(self, roster: Any) -> None:
        self._presence = {}
        for entry in roster if isinstance(roster, list) else ():
            if isinstance(entry, dict) and isinstance(entry.get("userId"), str):
                user = entry["userId"]
                self._presence[user] = Presence(
                    user, str(entry.get("name", user)), entry.get("state")
                )
        self._presence_changed(PresenceChange(self.document_id, "roster", ""))

    def _user_joined(self, user_id: str, name: str) -> None:
        old = self._presence.get(user_id)
        self._presence[user_id] = Presence(user_id, name, old.state if old else None)
        self._presence_changed(PresenceChange(self.document_id, "joined", user_id, name))

    def _user_left(self, user_id: str) -> None:
        old = self._presence.pop(user_id, None)
        name = old.name if old else ""
        self._presence_changed(PresenceChange(self.document_id, "left", user_id, name))

    def _user_state(self, user_id: str, state: Any) -> None:
        old = self._presence.get(user_id)
        name = old.name if old else user_id
        self._presence[user_id] = Presence(user_id, name, state)
        self._presence_changed(PresenceChange(self.document_id, "state", user_id, name, state))

    def _end(self, failure: BaseException | None) -> None:
        """Closed by the application (``failure`` None) or failed for good."""
        if self._closed:
            return
        self._closed = True
        self._failure = failure
        st = self.state
        st.live = False
        error = failure or ClientClosed(f"document session {self.document_id!r} closed")
        for sub in st.pending.values():
            if not sub.future.done():
                sub.future.set_exception(error)
                sub.future.exception()
        st.pending.clear()
        if st.catch_up is not None and st.catch_up is not asyncio.current_task():
            st.catch_up.cancel()
        for consumer in self._consumers:
            if consumer.queue is not None:
                consumer.queue.put_nowait(_END)
