"""``CowriteClient``: one connection to a cowrite server, kept up, and the
documents opened over it.

Reconnection
------------
When the connection ends (network, server restart, ``server-draining``,
missed heartbeats, an acknowledgement overdue by ``ack_timeout``), the
client waits ``reconnect_delay`` (full-jitter exponential backoff; after
``server-draining``, its ``reconnectDelayMs`` plus that jitter) and connects
again, asking the token provider for a fresh token each time.  Then, for
every open document, in this order:

1. ``join-document`` with ``since = last_seq`` and ``sync`` pages while
   ``more``: exactly the missed operations are delivered (``session.py``
   drops duplicates by ``seq``);
2. unacknowledged submissions are resent, in submission order, with their
   original ``clientOpId``: the server stores each once and answers a resend
   with the original ``seq``;
3. this user's last presence state is sent again.

Only terminal errors end this: ``AuthenticationFailed`` (every document
fails with it) and ``AccessDenied`` (that document fails).

Ordering of submissions: they are sent in order, at most ``max_in_flight``
unacknowledged; one refused as ``rate_limited`` (after ``retryAfter``) or
``unavailable`` (after a backoff delay) is sent again and may then be stored
after operations submitted later.  The ``seq`` in each result is the order
every client sees.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from cowrite.client.connection import TRANSIENT, Connection, ConnectionLost
from cowrite.client.errors import (
    AccessDenied,
    ClientClosed,
    ClientError,
    ConnectionRejected,
    ConnectTimeout,
    OperationRejected,
)
from cowrite.client.session import DocumentSession, DocumentSnapshot, Operation, Submission
from cowrite.client.settings import ClientSettings
from cowrite.client.timing import Pacer, backoff_delay, reconnect_delay
from cowrite.errors import LocalError
from cowrite.protocol.client import check_encodable

log = logging.getLogger("cowrite.client")

TokenProvider = Callable[[], Awaitable[str]]

#: Edit errors after which the submission is sent again.
_RETRY = frozenset({"unavailable", "rate_limited", "not_joined", "not_connected"})


@dataclass(slots=True)
class ClientMetrics:
    """Counters and timings for load tests.  Times ``*_at`` are ``time.time()``;
    durations are seconds from losing the connection to having it back."""

    connects: int = 0
    connect_attempts: int = 0
    disconnects: int = 0
    last_disconnect_at: float | None = None
    last_disconnect_reason: str | None = None
    last_reconnect_at: float | None = None
    reconnect_durations: list[float] = field(default_factory=list)
    drains: int = 0
    operations_received: int = 0
    duplicates_dropped: int = 0
    submissions_sent: int = 0
    submissions_resent: int = 0
    #: Own operations found stored in a catch-up page (their ack was lost).
    submissions_recovered: int = 0
    rate_limited: int = 0


def token_subject(token: str) -> str | None:
    """The ``sub`` claim of a JWT, read without verifying it (only to recognise
    our own operations in catch-up pages; the server is the one that verifies)."""
    try:
        part = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) else None


def _error_of(ack: Any) -> tuple[str, str, Any]:
    """``(code, message, error dict)`` of a refusal acknowledgement."""
    err = ack.get("error") if isinstance(ack, dict) else None
    if not isinstance(err, dict):
        return "invalid_ack", repr(ack)[:200], {}
    return str(err.get("code", "unknown")), str(err.get("message", "")), err


def _retry_after(err: Any, default: float) -> float:
    value = err.get("retryAfter") if isinstance(err, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return default


class CowriteClient:
    """A cowrite client.  ``token`` or ``token_provider`` (an async callable
    asked before every connection attempt) authenticates it."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        settings: ClientSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if (token is None) == (token_provider is None):
            raise LocalError("give exactly one of token and token_provider")
        self.url = url
        self.settings = settings or ClientSettings()
        self.metrics = ClientMetrics()
        #: Prefix of every ``clientOpId`` this client generates (unique per client).
        self.session_id = uuid.uuid4().hex
        self._token = token
        self._token_provider = token_provider
        self._rng = rng or random.Random()
        self._user_id: str | None = None
        self._sessions: dict[str, DocumentSession] = {}
        self._conn: Connection | None = None
        self._generation = 0
        self._pacer = Pacer(self.settings.max_in_flight)
        self._supervisor: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self._attempt = 0
        self._last_error: str | None = None
        self._connected_at = 0.0
        self._drain_floor = 0.0
        self._draining = False
        self._op_counter = 0
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- public API ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.open

    @property
    def failure(self) -> BaseException | None:
        """The terminal error that stopped the client, if any."""
        return self._failure

    @property
    def documents(self) -> dict[str, DocumentSession]:
        return dict(self._sessions)

    async def connect(self) -> None:
        """Connect, retrying transient failures with backoff (bound the wait with
        ``asyncio.timeout``).  Raises ``AuthenticationFailed``/``ConnectionRejected``."""
        self._check_usable()
        if self._supervisor is not None:
            raise LocalError("connect() was already called")
        limit = self.settings.first_connect_timeout
        try:
            async with asyncio.timeout(limit):
                conn = await self._establish(0.0)
        except ConnectionRejected as exc:
            self._fail(exc)
            raise
        except TimeoutError:
            assert limit is not None
            raise ConnectTimeout(
                self.url, limit, self.metrics.connect_attempts, self._last_error
            ) from None
        self._connected(conn)
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name="cowrite-client-supervisor"
        )

    async def open(
        self,
        document_id: str,
        *,
        since: int = 0,
        on_operation: Callable[[Operation], None] | None = None,
        snapshot: bool = False,
        on_snapshot: Callable[[DocumentSnapshot], None] | None = None,
    ) -> DocumentSession:
        """Join ``document_id`` and catch up from ``since`` (all pages).  With
        ``snapshot`` the catch-up may start from the document's newest snapshot
        (``session.snapshot``, ``on_snapshot``); without it, a document whose
        log was compacted past ``since`` fails with ``ClientError``
        (``history_compacted``).  Raises ``AccessDenied``, ``ClientError`` for
        another refusal, ``ClientClosed``."""
        self._check_usable()
        if document_id in self._sessions:
            raise LocalError(f"document {document_id!r} is already open")
        session = DocumentSession(self, document_id, since)
        if on_operation is not None:
            session.on_operation(on_operation)
        if on_snapshot is not None:
            session.on_snapshot(on_snapshot)
        session.state.snapshots = snapshot
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        session.state.ready = ready
        self._sessions[document_id] = session
        conn = self._conn
        if conn is not None and conn.open:
            self._start_catch_up(session, conn, join=True)
        try:
            await asyncio.shield(ready)
        except BaseException:
            if self._sessions.get(document_id) is session:
                del self._sessions[document_id]
                session._end(ClientClosed("open() was interrupted"))
            raise
        return session

    def drop_connection(self) -> None:
        """End the current connection abruptly, as a network failure would (for
        tests and chaos runs); the client reconnects as usual."""
        if self._conn is not None:
            self._conn.abort("dropped by drop_connection()")

    async def close(self) -> None:
        """Wait up to ``close_timeout`` for pending submissions, then disconnect.
        Whatever is still pending fails with ``ClientClosed``."""
        if self._closed:
            return
        self._closed = True
        futures = [sub.future for s in self._sessions.values() for sub in s.state.pending.values()]
        if futures and self._failure is None:
            await asyncio.wait(futures, timeout=self.settings.close_timeout)
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.wait([supervisor], timeout=2.0)
        for session in list(self._sessions.values()):
            session._end(None)
        self._sessions.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(list(self._background), timeout=2.0)
        if self._conn is not None:
            await self._conn.close()

    async def __aenter__(self) -> CowriteClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connection lifecycle ----------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise ClientClosed("the client is closed")

    async def _get_token(self) -> str:
        if self._token_provider is None:
            assert self._token is not None
            return self._token
        return await self._token_provider()

    async def _establish(self, delay: float) -> Connection:
        """Connect, retrying with backoff; only ``ConnectionRejected`` escapes."""
        s = self.settings
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            self.metrics.connect_attempts += 1
            try:
                token = await self._get_token()
            except Exception as exc:
                self._last_error = f"token provider failed: {type(exc).__name__}: {exc}"
                log.debug("token provider failed", exc_info=True)
            else:
                conn = Connection(self._on_event)
                try:
                    await conn.start(
                        self.url,
                        {"token": token},
                        path=s.path,
                        timeout=s.connect_timeout,
                        ack_timeout=s.ack_timeout,
                        max_size=s.max_message_size,
                    )
                except TRANSIENT as exc:
                    self._last_error = f"{type(exc).__name__}: {exc}"
                else:
                    self._user_id = token_subject(token)
                    self._last_error = None
                    return conn
            delay = backoff_delay(
                self._attempt, base=s.backoff_base, cap=s.backoff_cap, rng=self._rng
            )
            self._attempt += 1
            # Every failed attempt is logged (WARNING: visible without any
            # logging configuration), so a wrong URL never hangs silently.
            log.warning(
                "cannot connect to %s (attempt %d): %s; retrying in %.2f s",
                self.url,
                self.metrics.connect_attempts,
                self._last_error or "token provider failed",
                delay,
            )

    def _connected(self, conn: Connection) -> None:
        self._conn = conn
        self._generation += 1
        self._pacer = Pacer(self.settings.max_in_flight)
        self._draining = False
        self._connected_at = asyncio.get_running_loop().time()
        self.metrics.connects += 1
        for session in list(self._sessions.values()):
            self._start_catch_up(session, conn, join=True)

    def _disconnected(self, reason: str) -> None:
        m = self.metrics
        m.disconnects += 1
        m.last_disconnect_at = time.time()
        m.last_disconnect_reason = reason
        for session in self._sessions.values():
            st = session.state
            st.live = False
            for sub in st.pending.values():
                sub.in_flight = False

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        while True:
            conn = self._conn
            assert conn is not None
            reason = await conn.closed
            lost_at = loop.time()
            log.info("connection lost (%s); reconnecting", reason)
            self._disconnected(reason)
            if lost_at - self._connected_at >= s.backoff_reset_after:
                self._attempt = 0
            floor, self._drain_floor = self._drain_floor, 0.0
            delay = reconnect_delay(
                self._attempt, base=s.backoff_base, cap=s.backoff_cap, rng=self._rng, floor=floor
            )
            self._attempt += 1
            try:
                conn = await self._establish(delay)
            except ConnectionRejected as exc:
                log.error("reconnection refused: %s", exc)
                self._fail(exc)
                return
            self._connected(conn)
            self.metrics.last_reconnect_at = time.time()
            self.metrics.reconnect_durations.append(loop.time() - lost_at)

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        for session in list(self._sessions.values()):
            self._end_session(session, exc)

    def _end_session(self, session: DocumentSession, failure: BaseException | None) -> None:
        if self._sessions.get(session.document_id) is session:
            del self._sessions[session.document_id]
        ready = session.state.ready
        if ready is not None and not ready.done():
            ready.set_exception(failure or ClientClosed("closed"))
            ready.exception()
        session._end(failure)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- events from the server ------------------------------------------------------------

    def _on_event(self, event: str, args: list[Any]) -> None:
        payload = args[0] if args else None
        if not isinstance(payload, dict):
            log.debug("server event %s %r", event, args)
            return
        if event == "server-draining":
            delay_ms = payload.get("reconnectDelayMs")
            if isinstance(delay_ms, int | float) and not isinstance(delay_ms, bool):
                self._drain_floor = max(0.0, float(delay_ms) / 1000.0)
            self._draining = True
            self.metrics.drains += 1
            log.info("server draining: %s", payload.get("reason"))
            return
        session = self._sessions.get(str(payload.get("documentId")))
        if session is None:
            return
        if event == "remote-edit":
            self._incoming(session, payload, live=True)
            session._advance()
        elif event == "user-joined":
            user = payload.get("userId")
            if isinstance(user, str):
                session._user_joined(user, str(payload.get("name", user)))
        elif event == "user-left":
            user = payload.get("userId")
            if isinstance(user, str):
                session._user_left(user)
        elif event == "presence":
            user = payload.get("userId")
            if isinstance(user, str):
                session._user_state(user, payload.get("state"))
        elif event == "access-revoked":
            self._end_session(session, AccessDenied(session.document_id, "access_revoked"))
        elif event == "resync":
            since = payload.get("since")
            if isinstance(since, int) and not isinstance(since, bool) and since >= 0:
                self._request_resync(session, since)

    def _incoming(self, session: DocumentSession, op: dict[str, Any], *, live: bool) -> None:
        """One operation of the log, from a ``remote-edit`` or a page."""
        seq = op.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            return
        st = session.state
        m = self.metrics
        if live:
            m.operations_received += 1
        session._note_head(seq)
        if seq <= session.last_seq or seq in st.buffer or seq in st.own:
            m.duplicates_dropped += 1
            return
        cid = op.get("clientOpId")
        user = op.get("userId")
        sub = st.pending.get(cid) if isinstance(cid, str) else None
        if sub is not None and (self._user_id is None or user == self._user_id):
            self.metrics.submissions_recovered += 1
            self._stored(session, sub, seq)  # ours; its ack was lost with a connection
            return
        st.buffer[seq] = Operation(
            session.document_id,
            seq,
            str(user),
            cid if isinstance(cid, str) else None,
            op.get("operation"),
        )

    def _stored(self, session: DocumentSession, sub: Submission, seq: int) -> None:
        st = session.state
        if st.pending.get(sub.client_op_id) is sub:
            del st.pending[sub.client_op_id]
        if not sub.future.done():
            sub.future.set_result(seq)
        session._note_head(seq)
        if seq > session.last_seq and seq not in st.buffer:
            st.own.add(seq)
        session._advance()

    # -- catch-up ------------------------------------------------------------------------

    def _start_catch_up(self, session: DocumentSession, conn: Connection, *, join: bool) -> None:
        st = session.state
        if st.catch_up is not None and not st.catch_up.done():
            st.catch_up.cancel()
        st.live = False
        st.catch_up = asyncio.get_running_loop().create_task(
            self._catch_up(session, conn, join=join), name=f"cowrite-catch-up-{session.document_id}"
        )

    def _request_resync(self, session: DocumentSession, since: int) -> None:
        st = session.state
        since = min(since, session.last_seq)
        if st.catch_up is not None and not st.catch_up.done():
            st.resync_from = since if st.resync_from is None else min(st.resync_from, since)
            return
        conn = self._conn
        if conn is not None and conn.open:
            st.resync_from = since
            self._start_catch_up(session, conn, join=False)

    async def _call(
        self, conn: Connection, session: DocumentSession, event: str, payload: Any
    ) -> Any:
        """A request that is retried on ``unavailable``/``rate_limited``; returns
        the ok ack; raises ``AccessDenied``, ``ClientError`` or ``ConnectionLost``."""
        s = self.settings
        for attempt in range(1_000_000):
            ack = await conn.call(event, payload)
            if isinstance(ack, dict) and ack.get("ok") is True:
                return ack
            code, message, err = _error_of(ack)
            if code == "access_denied":
                raise AccessDenied(session.document_id, code, message)
            if code == "rate_limited":
                self.metrics.rate_limited += 1
                await asyncio.sleep(_retry_after(err, s.backoff_base))
            elif code == "unavailable":
                await asyncio.sleep(
                    backoff_delay(attempt, base=s.backoff_base, cap=s.backoff_cap, rng=self._rng)
                )
            else:
                raise ClientError(code, message)
        raise AssertionError("unreachable")

    async def _catch_up(self, session: DocumentSession, conn: Connection, *, join: bool) -> None:
        st = session.state
        doc = session.document_id
        try:
            if join:
                request: dict[str, Any] = {"documentId": doc, "since": session.last_seq}
                if st.snapshots:
                    request["snapshot"] = True
                ack = await self._call(conn, session, "join-document", request)
                role = ack.get("role")
                session.role = role if isinstance(role, str) else None
                session._set_roster(ack.get("presence"))
                cursor = self._page(session, ack, session.last_seq)
                more = ack.get("more") is True
            else:
                cursor, more = session.last_seq, False
            while True:
                while more:
                    page = await self._call(
                        conn,
                        session,
                        "sync",
                        {"documentId": doc, "since": cursor, "limit": self.settings.page_size},
                    )
                    previous, cursor = cursor, self._page(session, page, cursor)
                    more = page.get("more") is True and cursor > previous
                if st.resync_from is None:
                    break
                cursor, st.resync_from, more = min(st.resync_from, session.last_seq), None, True
        except ConnectionLost:
            return  # the next connection joins again
        except ClientError as exc:
            self._end_session(session, exc)
            return
        st.live = True
        if st.ready is not None and not st.ready.done():
            st.ready.set_result(None)
        self._flush()
        if st.has_presence:
            self._spawn(self._send_presence(session, conn))

    def _page(self, session: DocumentSession, ack: dict[str, Any], cursor: int) -> int:
        """Take one page of operations (after its snapshot, if it has one);
        returns the new paging cursor."""
        snap = ack.get("snapshot")
        if isinstance(snap, dict):
            seq = snap.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0:
                user = snap.get("userId")
                session._take_snapshot(
                    DocumentSnapshot(
                        session.document_id,
                        seq,
                        user if isinstance(user, str) else "",
                        snap.get("data"),
                        ack.get("resync") is True,
                    )
                )
                cursor = seq
        ops = ack.get("ops")
        for op in ops if isinstance(ops, list) else ():
            if isinstance(op, dict):
                self._incoming(session, op, live=False)
                seq = op.get("seq")
                if isinstance(seq, int) and seq > cursor:
                    cursor = seq
        session._note_head(ack.get("head"))
        session._advance()
        return cursor

    # -- submissions ---------------------------------------------------------------------

    async def _submit(self, session: DocumentSession, operation: Any) -> int:
        self._check_usable()
        check_encodable(operation)
        self._op_counter += 1
        cid = f"{self.session_id}:{self._op_counter}"
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        session.state.pending[cid] = Submission(cid, operation, future)
        self._flush()
        # Cancelling the caller does not withdraw the operation: it stays pending.
        return await asyncio.shield(future)

    def _flush_later(self, delay: float) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush_handle = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        """Send pending submissions, in order, as far as the pacer allows."""
        conn = self._conn
        if conn is None or not conn.open or self._draining:
            return
        loop = asyncio.get_running_loop()
        pacer = self._pacer
        generation = self._generation
        for session in list(self._sessions.values()):
            st = session.state
            if not st.live:
                continue
            for sub in list(st.pending.values()):
                if sub.in_flight:
                    continue
                wait = pacer.wait(loop.time())
                if wait is None:
                    return  # an acknowledgement will call _flush again
                if wait > 0:
                    self._flush_later(wait)
                    return
                future = conn.call(
                    "edit-operation",
                    {
                        "documentId": session.document_id,
                        "operation": sub.operation,
                        "clientOpId": sub.client_op_id,
                    },
                )
                sub.in_flight = True
                sub.sends += 1
                self.metrics.submissions_sent += 1
                if sub.sends > 1:
                    self.metrics.submissions_resent += 1
                pacer.sent(loop.time())
                future.add_done_callback(
                    functools.partial(self._edit_done, session, sub, pacer, generation)
                )

    def _edit_done(
        self,
        session: DocumentSession,
        sub: Submission,
        pacer: Pacer,
        generation: int,
        future: asyncio.Future[Any],
    ) -> None:
        current = generation == self._generation
        if future.cancelled() or future.exception() is not None:
            pacer.lost()
            if current:
                sub.in_flight = False
            return
        ack = future.result()
        if isinstance(ack, dict) and ack.get("ok") is True and isinstance(ack.get("seq"), int):
            pacer.acked()
            sub.in_flight = False
            self._stored(session, sub, ack["seq"])
        else:
            code, message, err = _error_of(ack)
            if current:
                sub.in_flight = False
            loop = asyncio.get_running_loop()
            if code == "rate_limited":
                self.metrics.rate_limited += 1
                pacer.refused(_retry_after(err, self.settings.backoff_base), loop.time())
            else:
                pacer.lost()
            if code == "access_denied":
                self._end_session(session, AccessDenied(session.document_id, code, message))
                return
            if code not in _RETRY:
                st = session.state
                if st.pending.get(sub.client_op_id) is sub:
                    del st.pending[sub.client_op_id]
                if not sub.future.done():
                    sub.future.set_exception(OperationRejected(session.document_id, code, message))
            elif code == "unavailable":
                s = self.settings
                self._flush_later(
                    backoff_delay(
                        sub.sends - 1, base=s.backoff_base, cap=s.backoff_cap, rng=self._rng
                    )
                )
                return
            elif code in ("not_joined", "not_connected") and current:
                conn = self._conn
                if conn is not None and conn.open and session.state.live:
                    self._start_catch_up(session, conn, join=True)
                return
        if current:
            self._flush()

    # -- presence --------------------------------------------------------------------------

    async def _set_presence(self, session: DocumentSession, state: Any) -> None:
        check_encodable(state)
        st = session.state
        st.my_presence = state
        st.has_presence = True
        conn = self._conn
        if conn is not None and conn.open and st.live:
            await self._send_presence(session, conn)

    async def _send_presence(self, session: DocumentSession, conn: Connection) -> None:
        """Send the latest presence state; sent again after the next join if lost."""
        st = session.state
        while True:
            state = st.my_presence
            try:
                ack = await conn.call(
                    "presence-update", {"documentId": session.document_id, "state": state}
                )
            except ConnectionLost:
                return
            if isinstance(ack, dict) and ack.get("ok") is True:
                if st.my_presence is state:
                    return
                continue  # a newer state came meanwhile
            code, message, err = _error_of(ack)
            if code == "rate_limited":
                self.metrics.rate_limited += 1
                await asyncio.sleep(_retry_after(err, self.settings.backoff_base))
            elif code in _RETRY:
                return  # the next join sends it
            else:
                raise OperationRejected(session.document_id, code, message)

    # -- sharing ---------------------------------------------------------------------------

    async def _share(self, session: DocumentSession, user_id: str, role: str | None) -> None:
        # AccessDenied here (not an owner) does not end the session.
        payload = {"documentId": session.document_id, "userId": user_id, "role": role}
        await self._request(session, "share-document", payload, "share")

    async def _store_snapshot(self, session: DocumentSession, seq: int, data: Any) -> None:
        check_encodable(data)
        payload = {"documentId": session.document_id, "seq": seq, "data": data}
        await self._request(session, "store-snapshot", payload, "store_snapshot")

    async def _request(self, session: DocumentSession, event: str, payload: Any, what: str) -> None:
        """One request on the current connection, retried like ``_call``;
        ``ClientError`` (``not_connected``) without a connection or when it is lost."""
        conn = self._conn
        if conn is None or not conn.open:
            raise ClientError("not_connected", f"{what} needs a connection")
        try:
            await self._call(conn, session, event, payload)
        except ConnectionLost:
            raise ClientError("not_connected", "the connection was lost; retry") from None

    # -- closing a document ----------------------------------------------------------------

    async def _close_session(self, session: DocumentSession) -> None:
        futures = [sub.future for sub in session.state.pending.values()]
        if futures:
            await asyncio.wait(futures, timeout=self.settings.close_timeout)
        conn = self._conn
        live = session.state.live
        self._end_session(session, None)
        if conn is not None and conn.open and live:
            with contextlib.suppress(ConnectionLost, TimeoutError):
                await asyncio.wait_for(conn.call("leave-document", session.document_id), 2.0)
