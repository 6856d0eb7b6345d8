"""The asyncio Socket.IO server and its public library API.

In the spirit of python-socketio's ``AsyncServer``::

    sio = SocketServer(ServerSettings(port=3000))

    @sio.on("connect")
    def connect(sid, auth):           # raise ConnectionRefused(...) to refuse
        ...

    @sio.on("chat", namespace="/")
    async def chat(sid, text):        # the return value is the acknowledgement
        sio.emit("chat", text, to="room-1", skip_sid=sid)
        return "ok"

    await sio.serve_forever()

Handlers may be plain functions (run inline: the fastest path) or coroutine
functions (run as a task).  A plain function may also return an
``asyncio.Future`` (the acknowledgement is its result, sent when it resolves:
no task per event) or an awaitable (run as a task).  ``emit`` is synchronous and never waits for a
recipient: the packet is encoded once, its WebSocket frame serialized once, and
the same bytes are queued on every recipient's connection.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from cowrite.config import ServerSettings
from cowrite.errors import CloseReason, ConnectionRefused, ProtocolError
from cowrite.protocol.sio_session import (
    AckReceived,
    ConnectRequested,
    EventReceived,
    NamespaceLeft,
    NsState,
    SocketIOSession,
)
from cowrite.protocol.socketio import (
    SioPacket,
    SioType,
    encode,
    encode_ack_text,
    encode_event_text,
)
from cowrite.server.connection import ws_frame
from cowrite.server.engine import EngineServerCore, SessionHandle
from cowrite.server.http import HttpServer, wait_for_signal
from cowrite.server.ids import new_id

log = logging.getLogger("cowrite.socketio")

Handler = Callable[..., Any]

#: Seconds between the write of the CONNECT packet and what the connect handler
#: emitted (docs/DESIGN.md, "Conformance": measured, 2 ms is not enough on a
#: loaded machine, 10 and 20 ms were).
CONNECT_EMIT_GAP = 0.02

CLIENT_NAMESPACE_DISCONNECT = "client namespace disconnect"
SERVER_NAMESPACE_DISCONNECT = "server namespace disconnect"

#: Disconnect reasons after which a socket may be resumed (connection-state
#: recovery): the connection was lost, nobody meant to end the socket.  The
#: same list as Node's server, plus nothing of ours (a slow consumer, a parse
#: error, a client or server disconnect are not resumable).
RECOVERABLE_DISCONNECT_REASONS = frozenset(
    {
        CloseReason.TRANSPORT_CLOSE.value,
        CloseReason.TRANSPORT_ERROR.value,
        CloseReason.PING_TIMEOUT.value,
        CloseReason.FORCED_CLOSE.value,
        CloseReason.SERVER_SHUTDOWN.value,
    }
)

#: ``restore(namespace, pid, offset, auth)``: the sid of the socket to resume,
#: or ``None`` (see ``SocketServer.enable_recovery``).
Restorer = Callable[[str, str, str | None, dict[str, Any]], Awaitable[str | None]]


class Socket:
    """One client connected to one namespace."""

    __slots__ = (
        "_ack_seq",
        "acks",
        "handle",
        "namespace",
        "pending",
        "pid",
        "recovered",
        "rooms",
        "sid",
    )

    def __init__(self, sid: str, namespace: str, handle: SessionHandle) -> None:
        self.sid = sid
        # Connection-state recovery: the private id sent in the CONNECT
        # answer, and whether this socket resumed an earlier one.
        self.pid: str | None = None
        self.recovered = False
        # Packets emitted to the socket while its connect handler runs; sent
        # right after the CONNECT packet (``None`` once connected).
        self.pending: list[list[str | bytes]] | None = []
        self.namespace = namespace
        self.handle = handle
        self.rooms: set[str] | None = None
        self.acks: dict[int, Callable[..., Any]] | None = None
        self._ack_seq = 0

    def next_ack_id(self, callback: Callable[..., Any]) -> int:
        if self.acks is None:
            self.acks = {}
        ack_id = self._ack_seq
        self._ack_seq += 1
        self.acks[ack_id] = callback
        return ack_id


class PreparedEvent:
    """An event encoded once: the Engine.IO text packet (or, with binary
    arguments, the Socket.IO parts) and, once needed, its WebSocket frame."""

    __slots__ = ("frame", "namespace", "packet", "parts")

    def __init__(self, namespace: str, packet: str | None, parts: list[str | bytes] | None) -> None:
        self.namespace = namespace
        self.packet = packet
        self.parts = parts
        self.frame: bytes | None = None


class _SioState:
    """Per Engine.IO session: the sans-I/O Socket.IO session and its sockets."""

    __slots__ = ("named", "opened_at", "session", "sockets")

    def __init__(self, session: SocketIOSession, opened_at: float) -> None:
        self.session = session
        self.sockets: dict[str, Socket] = {}
        self.opened_at = opened_at
        self.named = False  # a socket already took the connection's log id


def _ack_args(result: Any) -> list[Any]:
    if result is None:
        return []
    if isinstance(result, tuple):
        return list(result)
    return [result]


class SocketServer:
    """Socket.IO v5 server over Engine.IO v4 (WebSocket and HTTP long-polling).

    Standalone it listens on ``settings.host:port``; with ``server=`` it is
    mounted at ``settings.path`` on that shared ``HttpServer`` (several apps on
    one port), which is then the one to start and stop.
    """

    def __init__(
        self, settings: ServerSettings | None = None, *, server: HttpServer | None = None
    ) -> None:
        self.settings = settings or ServerSettings()
        self.engine = EngineServerCore(self.settings, self, server=server)
        self._handlers: dict[str, dict[str, tuple[Handler, bool]]] = {"/": {}}
        self._sockets: dict[str, Socket] = {}
        self._namespace_sockets: dict[str, dict[str, Socket]] = {"/": {}}
        self._rooms: dict[str, dict[str, set[Socket]]] = {"/": {}}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restore: Restorer | None = None
        # Called with seconds from Engine.IO open to the CONNECT reply.
        self.observe_handshake: Callable[[float], None] | None = None

    # -- registration --------------------------------------------------------

    def register_namespace(self, namespace: str) -> None:
        if not namespace.startswith("/"):
            raise ValueError("a namespace starts with '/'")
        self._handlers.setdefault(namespace, {})
        self._namespace_sockets.setdefault(namespace, {})
        self._rooms.setdefault(namespace, {})

    def on(
        self, event: str, handler: Handler | None = None, *, namespace: str = "/"
    ) -> Callable[[Handler], Handler]:
        """Register ``handler`` for ``event`` (usable as a decorator)."""
        self.register_namespace(namespace)

        def register(fn: Handler) -> Handler:
            self._handlers[namespace][event] = (fn, inspect.iscoroutinefunction(fn))
            return fn

        if handler is not None:
            register(handler)
        return register

    def enable_recovery(self, restore: Restorer) -> None:
        """Turn on Socket.IO connection-state recovery (socket.io-client 4.6+).

        Every socket then gets a private id ``pid`` in its CONNECT answer
        (``{"sid", "pid"}``).  A client that reconnects sends it back in the
        ``auth`` of its CONNECT with ``offset``, the last argument of the last
        event it received (when that was a string).  ``restore(namespace, pid,
        offset, auth)`` (a coroutine function) decides: it returns the sid of
        the socket to resume, and the new socket takes that sid and that pid
        (the client sees ``socket.recovered === true``); ``None`` makes it a
        new socket with a new pid.  Either way the ``connect`` handler runs
        next (``recovered(sid)`` tells which), and may still refuse.  What the
        socket missed is the application's to send (from its connect handler
        or later): this layer keeps no packets.  A sid still connected here is
        never resumed.
        """
        self._restore = restore

    def recovered(self, sid: str) -> bool:
        """Whether the socket resumed an earlier one (connection-state recovery)."""
        sock = self._sockets.get(sid)
        return sock is not None and sock.recovered

    def session_pid(self, sid: str) -> str | None:
        """The socket's private id (``None`` without connection-state recovery)."""
        sock = self._sockets.get(sid)
        return sock.pid if sock is not None else None

    @property
    def port(self) -> int:
        return self.engine.port

    def add_route(self, path: str, handler: Callable[..., None]) -> None:
        """Serve a plain HTTP path on the same port (health, metrics, pages)."""
        self.engine.http.add_route(path, handler)

    def add_prefix_route(self, prefix: str, handler: Callable[..., None]) -> None:
        """Serve every plain HTTP path under ``prefix`` on the same port."""
        self.engine.http.add_prefix_route(prefix, handler)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        await self.engine.start()
        log.info("listening on %s (Socket.IO path %s)", self._url(), self.settings.path)

    def _url(self) -> str:
        host = self.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every session (clients see "transport close" and
        reconnect elsewhere), wait for sockets to drain."""
        await self.engine.stop(timeout)

    async def engine_stopped(self) -> None:
        # Let the handlers the closes started (disconnect handlers) finish,
        # briefly; what is still running then is cancelled and awaited.
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=1.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        log.info("stopped listening on %s", self._url())

    async def wait_handlers(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for the coroutine handlers now running."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def serve_forever(self) -> None:
        """Start, run until SIGTERM or SIGINT, then shut down gracefully."""
        await self.start()
        await self.serve_until_signal()

    async def serve_until_signal(self) -> None:
        """Run (already started) until SIGTERM or SIGINT, then shut down gracefully."""
        try:
            await self.wait_for_signal()
        finally:
            await self.stop()

    async def wait_for_signal(self) -> None:
        """Return when the process receives SIGTERM or SIGINT."""
        await wait_for_signal()

    # -- rooms ---------------------------------------------------------------

    def enter_room(self, sid: str, room: str, namespace: str = "/") -> None:
        sock = self._sockets.get(sid)
        if sock is None or sock.namespace != namespace:
            return
        rooms = self._rooms[namespace]
        members = rooms.get(room)
        if members is None:
            members = rooms[room] = set()
        members.add(sock)
        if sock.rooms is None:
            sock.rooms = set()
        sock.rooms.add(room)

    def leave_room(self, sid: str, room: str, namespace: str = "/") -> None:
        sock = self._sockets.get(sid)
        if sock is None or sock.rooms is None:
            return
        self._leave(sock, room)
        sock.rooms.discard(room)

    def _leave(self, sock: Socket, room: str) -> None:
        rooms = self._rooms[sock.namespace]
        members = rooms.get(room)
        if members is not None:
            members.discard(sock)
            if not members:
                del rooms[room]

    def rooms(self, sid: str) -> set[str]:
        sock = self._sockets.get(sid)
        return set(sock.rooms) if sock is not None and sock.rooms else set()

    def client_address(self, sid: str) -> str:
        """The client's address (the real one behind a trusted proxy)."""
        sock = self._sockets.get(sid)
        return sock.handle.client_address if sock is not None else ""

    def room_count(self) -> int:
        return sum(len(rooms) for rooms in self._rooms.values())

    def socket_ids(self, namespace: str = "/") -> list[str]:
        """The sids connected to ``namespace`` now."""
        return list(self._namespace_sockets.get(namespace, {}))

    def in_room(self, sid: str, room: str) -> bool:
        sock = self._sockets.get(sid)
        return sock is not None and sock.rooms is not None and room in sock.rooms

    def room_members(self, room: str, namespace: str = "/") -> set[str]:
        return {s.sid for s in self._rooms.get(namespace, {}).get(room, ())}

    # -- sending -------------------------------------------------------------

    def emit(
        self,
        event: str,
        *args: Any,
        to: str | None = None,
        skip_sid: str | Iterable[str] | None = None,
        namespace: str = "/",
        callback: Callable[..., Any] | None = None,
    ) -> None:
        """Send ``event`` to one socket (``to`` = its sid), a room, or the whole
        namespace (``to=None``).  Never blocks; a recipient that cannot keep up is
        disconnected as a slow consumer instead of delaying the others."""
        if to is not None:
            single = self._sockets.get(to)
            if single is not None and single.namespace == namespace:
                if skip_sid is None or not _skipped(single.sid, skip_sid):
                    self._emit_one(single, event, args, callback)
                return
            if callback is not None:
                raise ValueError("callback needs a single recipient sid")
            members: Iterable[Socket] = self._rooms.get(namespace, {}).get(to, ())
        else:
            if callback is not None:
                raise ValueError("callback needs a single recipient sid")
            members = self._namespace_sockets.get(namespace, {}).values()
        if not members:
            return
        # The common case skips one sid (the sender); compare strings directly.
        skip_one = skip_sid if isinstance(skip_sid, str) else None
        skip_many = None if skip_sid is None or skip_one is not None else set(skip_sid)
        prepared = self.prepare(event, *args, namespace=namespace)
        send = self._send_prepared
        # Sending only queues bytes (nothing is written or closed here), so the
        # member collection cannot change while we iterate over it.
        for sock in members:
            if sock.sid != skip_one and (skip_many is None or sock.sid not in skip_many):
                send(sock, prepared)

    def prepare(self, event: str, *args: Any, namespace: str = "/") -> PreparedEvent:
        """Encode an event once, to send it to many sockets with ``send_prepared``."""
        text = encode_event_text(namespace, event, args)
        if text is None:
            return PreparedEvent(
                namespace, None, encode(SioPacket(SioType.EVENT, namespace, [event, *args]))
            )
        return PreparedEvent(namespace, "4" + text, None)

    def send_prepared(self, sid: str, prepared: object) -> None:
        """Send a ``PreparedEvent`` to one socket; the frame is built once and reused."""
        sock = self._sockets.get(sid)
        if sock is not None and isinstance(prepared, PreparedEvent):
            self._send_prepared(sock, prepared)

    def _send_prepared(self, sock: Socket, prepared: PreparedEvent) -> None:
        """The per-recipient step of every broadcast."""
        packet = prepared.packet
        if packet is None:
            assert prepared.parts is not None
            _send_to(sock, prepared.parts)
            return
        if sock.pending is not None:
            sock.pending.append([packet[1:]])
            return
        handle = sock.handle
        ws = handle.ws
        if ws is None:
            handle.send_text(packet)
            return
        # A handle's ws is set only while the session runs on that WebSocket
        # (and its ws_out is always drained before application code runs), so
        # this is Connection.send_frame inlined: the per-recipient cost of a
        # broadcast is one list append of the shared frame bytes.
        frame = prepared.frame
        if frame is None:
            frame = prepared.frame = ws_frame(packet)
        buf = ws.wbuf
        if not buf:
            self.engine.schedule_flush(ws)
        buf.append(frame)

    def send(self, sid: str, event: str, *args: Any) -> None:
        """Send ``event`` to one socket (``emit(..., to=sid)`` for the gateway interface)."""
        sock = self._sockets.get(sid)
        if sock is not None:
            self._emit_one(sock, event, args, None)

    def _emit_one(
        self, sock: Socket, event: str, args: tuple[Any, ...], callback: Callable[..., Any] | None
    ) -> None:
        ack_id = sock.next_ack_id(callback) if callback is not None else None
        parts = encode(SioPacket(SioType.EVENT, sock.namespace, [event, *args], ack_id))
        _send_to(sock, parts)

    def disconnect(self, sid: str, namespace: str = "/") -> None:
        """Remove the client from ``namespace`` (it receives DISCONNECT)."""
        sock = self._sockets.get(sid)
        if sock is None or sock.namespace != namespace:
            return
        state: _SioState = sock.handle.app_state
        if sock.pending and state.session.namespaces.get(namespace) is NsState.CONNECTED:
            self._release_pending(sock)  # CONNECT is out: what followed it goes first
        sock.handle.send_text("4" + state.session.server_disconnect(namespace))
        self._socket_gone(sock, SERVER_NAMESPACE_DISCONNECT)

    # -- EngineApp -----------------------------------------------------------

    def engine_open(self, handle: SessionHandle) -> None:
        now = self.engine.loop_time()
        handle.app_state = _SioState(
            SocketIOSession(now, self.settings.connect_timeout, self.settings.max_attachments),
            now,
        )
        handle.app_deadline = now + self.settings.connect_timeout

    def engine_timer(self, handle: SessionHandle, now: float) -> None:
        state: _SioState = handle.app_state
        if state.session.connect_timed_out(now) and not state.sockets:
            handle.session.close(CloseReason.CONNECT_TIMEOUT)

    def engine_closed(self, handle: SessionHandle, reason: CloseReason) -> None:
        state: _SioState | None = handle.app_state
        if state is None:
            return
        for sock in list(state.sockets.values()):
            self._socket_gone(sock, reason.value)

    def engine_message(self, handle: SessionHandle, data: str | bytes) -> None:
        state: _SioState = handle.app_state
        try:
            event = state.session.receive(data)
        except ProtocolError as exc:
            log.info(
                "closing session: %s",
                exc.message,
                extra={"event": "protocol_error", "sid": handle.log_id, "error": exc.message},
            )
            handle.session.close(CloseReason.PARSE_ERROR)
            return
        if event is None:
            return
        if isinstance(event, EventReceived):
            sock = state.sockets.get(event.namespace)
            if sock is not None:
                self._dispatch_event(sock, event)
        elif isinstance(event, AckReceived):
            sock = state.sockets.get(event.namespace)
            if sock is not None and sock.acks is not None:
                callback = sock.acks.pop(event.ack_id, None)
                if callback is not None:
                    self._call(callback, tuple(event.args), sock, None)
        elif isinstance(event, ConnectRequested):
            self._connect(handle, state, event)
        elif isinstance(event, NamespaceLeft):
            sock = state.sockets.get(event.namespace)
            if sock is not None:
                # The Engine.IO session stays open (the client closes it when
                # it has no namespace left), as the v5 test suite expects.
                self._socket_gone(sock, CLIENT_NAMESPACE_DISCONNECT)

    # -- internals -----------------------------------------------------------

    def _connect(self, handle: SessionHandle, state: _SioState, req: ConnectRequested) -> None:
        nsp = req.namespace
        if nsp not in self._handlers or self.engine.stopping:
            handle.send_text("4" + state.session.refuse(nsp, "Invalid namespace"))
            return
        restore = self._restore
        if restore is not None and isinstance(req.auth, dict):
            pid = req.auth.get("pid")
            if isinstance(pid, str) and 0 < len(pid) <= 64:
                offset = req.auth.get("offset")
                self._spawn(
                    self._connect_resuming(
                        restore,
                        handle,
                        state,
                        req,
                        pid,
                        offset if isinstance(offset, str) else None,
                    )
                )
                return
        self._open_socket(handle, state, req, None, None)

    async def _connect_resuming(
        self,
        restore: Restorer,
        handle: SessionHandle,
        state: _SioState,
        req: ConnectRequested,
        pid: str,
        offset: str | None,
    ) -> None:
        """A CONNECT that asks to resume socket ``pid``: ask the application."""
        assert req.auth is not None
        try:
            sid = await restore(req.namespace, pid, offset, req.auth)
        except Exception:
            log.exception("connection-state recovery failed")
            sid = None
        if handle.session.closed:
            return
        if sid is not None and sid in self._sockets:
            sid = None  # still connected here: it is not resumed, a new one is made
        self._open_socket(handle, state, req, sid, pid if sid is not None else None)

    def _open_socket(
        self,
        handle: SessionHandle,
        state: _SioState,
        req: ConnectRequested,
        sid: str | None,
        pid: str | None,
    ) -> None:
        """Make the socket (``sid``/``pid`` given: a resumed one), then run the
        connect handler."""
        nsp = req.namespace
        if sid is None:
            # The connection's first socket is named by the connection's log
            # id, so that one id follows it through every log line.
            if state.named:
                sid = new_id()
            else:
                state.named = True
                sid = handle.log_id or new_id()
        sock = Socket(sid, nsp, handle)
        if pid is not None:
            sock.pid = pid
            sock.recovered = True
        elif self._restore is not None:
            sock.pid = new_id()  # a secret of the client: never logged
        # Registered before the connect handler runs so it can join rooms.
        state.sockets[nsp] = sock
        self._sockets[sock.sid] = sock
        self._namespace_sockets[nsp][sock.sid] = sock
        entry = self._handlers[nsp].get("connect")
        if entry is None:
            self._accept(sock, state)
            return
        fn, is_async = entry
        if is_async:
            self._spawn(self._connect_async(fn, sock, state, req.auth))
            return
        try:
            result = fn(sock.sid, req.auth)
        except Exception as exc:
            self._connect_outcome(sock, state, None, exc)
            return
        self._connect_outcome(sock, state, result, None)

    async def _connect_async(
        self, fn: Handler, sock: Socket, state: _SioState, auth: dict[str, Any] | None
    ) -> None:
        try:
            result = await fn(sock.sid, auth)
        except Exception as exc:
            self._connect_outcome(sock, state, None, exc)
            return
        if not sock.handle.session.closed:
            self._connect_outcome(sock, state, result, None)

    def _connect_outcome(
        self, sock: Socket, state: _SioState, result: object, exc: Exception | None
    ) -> None:
        """Accept or refuse after the connect handler returned ``result`` or raised ``exc``."""
        if isinstance(exc, ConnectionRefused):
            self._refuse(sock, state, exc.message, exc.data)
        elif exc is not None:
            log.error("connect handler failed", exc_info=exc)
            self._refuse(sock, state, "Internal server error", None)
        elif result is False:
            self._refuse(sock, state, "Connection rejected by server", None)
        else:
            self._accept(sock, state)

    def _accept(self, sock: Socket, state: _SioState) -> None:
        handle = sock.handle
        if handle.handshaking and self.observe_handshake is not None:
            self.observe_handshake(self.engine.loop_time() - state.opened_at)
        self.engine.mark_connected(handle)
        handle.send_text("4" + state.session.accept(sock.namespace, sock.sid, sock.pid))
        if not sock.pending:
            sock.pending = None
            return
        # What the connect handler emitted follows CONNECT CONNECT_EMIT_GAP
        # later, in a write of its own; until then emits keep queueing.  A
        # client that takes one message per read (the official test suites:
        # ws 8.5 emits every frame of a read synchronously, and they await each
        # message) misses the second of two frames read together.
        # The gap counts from the write itself, not from when the loop gets to
        # flush it (a late loop would otherwise flush both in one iteration).
        ws = handle.ws
        if ws is not None:
            ws.flush()
        self.engine.loop.call_later(CONNECT_EMIT_GAP, self._release_pending, sock)

    def _release_pending(self, sock: Socket) -> None:
        pending, sock.pending = sock.pending, None
        if self._sockets.get(sock.sid) is not sock:
            return
        for parts in pending or ():
            _send_parts(sock.handle, parts)

    def _refuse(self, sock: Socket, state: _SioState, message: str, data: Any) -> None:
        self._forget(sock)
        sock.handle.send_text("4" + state.session.refuse(sock.namespace, message, data))

    def _forget(self, sock: Socket) -> None:
        state: _SioState = sock.handle.app_state
        if state.sockets.get(sock.namespace) is sock:
            del state.sockets[sock.namespace]
        self._sockets.pop(sock.sid, None)
        self._namespace_sockets[sock.namespace].pop(sock.sid, None)
        if sock.rooms:
            for room in sock.rooms:
                self._leave(sock, room)
            sock.rooms = None

    def _socket_gone(self, sock: Socket, reason: str) -> None:
        if self._sockets.get(sock.sid) is not sock:
            return
        self._forget(sock)
        entry = self._handlers[sock.namespace].get("disconnect")
        if entry is not None:
            self._call(entry[0], (reason,), sock, None, sid_first=True)

    def _dispatch_event(self, sock: Socket, event: EventReceived) -> None:
        entry = self._handlers[sock.namespace].get(event.event)
        if entry is None:
            if event.ack_id is not None:
                # Answer rather than leave the client waiting for its timeout.
                self._send_ack(sock, event.ack_id, _unknown_event(event.event))
            return
        fn, is_async = entry
        if is_async:
            self._spawn(self._run_async(fn, sock, event.args, event.ack_id))
            return
        try:
            result = fn(sock.sid, *event.args)
        except Exception:
            log.exception("handler for %r failed", event.event)
            return
        if isinstance(result, asyncio.Future):
            if event.ack_id is not None:
                self._ack_when_done(sock, event.ack_id, result)
            return
        if inspect.isawaitable(result):
            self._spawn(self._ack_awaitable(sock, result, event.ack_id))
            return
        if event.ack_id is not None:
            self._send_ack(sock, event.ack_id, result)

    def _ack_when_done(self, sock: Socket, ack_id: int, future: asyncio.Future[Any]) -> None:
        """Acknowledge with the future's result once it resolves (no task)."""
        if future.done():
            self._future_acked(sock, ack_id, future)
        else:
            future.add_done_callback(lambda f: self._future_acked(sock, ack_id, f))

    def _future_acked(self, sock: Socket, ack_id: int, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.error("handler failed", exc_info=exc)
            return
        self._send_ack(sock, ack_id, future.result())

    async def _ack_awaitable(
        self, sock: Socket, result: Awaitable[Any], ack_id: int | None
    ) -> None:
        try:
            value = await result
        except Exception:
            log.exception("handler failed")
            return
        if ack_id is not None:
            self._send_ack(sock, ack_id, value)

    async def _run_async(
        self, fn: Handler, sock: Socket, args: list[Any], ack_id: int | None
    ) -> None:
        try:
            result = await fn(sock.sid, *args)
        except Exception:
            log.exception("handler failed")
            return
        if ack_id is not None:
            self._send_ack(sock, ack_id, result)

    def _send_ack(self, sock: Socket, ack_id: int, result: Any) -> None:
        if sock.handle.session.closed:
            return
        args = _ack_args(result)
        text = encode_ack_text(sock.namespace, ack_id, args)
        if text is not None:
            if sock.pending is not None:
                sock.pending.append([text])
            else:
                sock.handle.send_text("4" + text)
            return
        try:
            parts = encode(SioPacket(SioType.ACK, sock.namespace, args, ack_id))
        except TypeError:
            log.exception("acknowledgement is not serializable")
            return
        _send_to(sock, parts)

    def _call(
        self,
        fn: Handler,
        args: tuple[Any, ...],
        sock: Socket,
        ack_id: int | None,
        *,
        sid_first: bool = False,
    ) -> None:
        call_args = (sock.sid, *args) if sid_first else args
        try:
            result = fn(*call_args)
        except Exception:
            log.exception("callback failed")
            return
        if inspect.isawaitable(result):
            self._spawn(_await(result))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self.engine.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _await(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("callback failed")


def _unknown_event(event: str) -> dict[str, Any]:
    """The acknowledgement of an event nobody handles."""
    return {
        "ok": False,
        "error": {"code": "unknown_event", "message": f"no handler for event {event[:100]!r}"},
    }


def _skipped(sid: str, skip: str | Iterable[str]) -> bool:
    return sid == skip if isinstance(skip, str) else sid in set(skip)


def _send_to(sock: Socket, parts: list[str | bytes]) -> None:
    if sock.pending is not None:
        sock.pending.append(parts)
    else:
        _send_parts(sock.handle, parts)


def _send_parts(handle: SessionHandle, parts: list[str | bytes]) -> None:
    head = parts[0]
    assert isinstance(head, str)
    handle.send_text("4" + head)
    for attachment in parts[1:]:
        assert isinstance(attachment, bytes)
        handle.send_binary(attachment)
