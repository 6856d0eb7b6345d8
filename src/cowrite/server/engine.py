"""The asyncio Engine.IO server: routes requests to sessions, runs the one timer.

Thin adapter around ``cowrite.protocol.session.EngineSession``: it feeds it
requests, WebSocket messages and the clock, and carries out what comes back.
An application plugs in through ``EngineApp`` (the Socket.IO server does), or
through plain callbacks with ``EngineServer``'s ``on_connect`` / ``on_message``
/ ``on_disconnect`` keywords.

Each server is mounted on an ``HttpServer`` (``server/http.py``) under its
``settings.path``: its own one when none is given (standalone, listening on
``settings.host:port``), or a shared one given as ``server=`` (several apps
on one port).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import socket
from collections.abc import Callable
from typing import Any, Final, Protocol
from urllib.parse import parse_qs

import orjson

from cowrite.config import ServerSettings
from cowrite.core.tasks import running_loop
from cowrite.errors import CloseReason, LocalError, ProtocolError
from cowrite.protocol.session import (
    PARK,
    EngineConfig,
    EngineSession,
    MessageReceived,
    SessionClosed,
    Transport,
    Upgraded,
)
from cowrite.server.connection import Connection, Request, ws_frame
from cowrite.server.http import BODY_OVERHEAD, HttpServer, RouteHandler
from cowrite.server.ids import new_id
from cowrite.server.limits import Admission, Refusal, default_max_connections

log = logging.getLogger("cowrite.engine")

# engine.io's error codes for refused requests (the body of an HTTP 400).
_UNKNOWN_TRANSPORT = (0, "Transport unknown")
_UNKNOWN_SID = (1, "Session ID unknown")
_BAD_HANDSHAKE_METHOD = (2, "Bad handshake method")
_BAD_REQUEST = (3, "Bad request")
_FORBIDDEN = (4, "Forbidden")
_UNSUPPORTED_VERSION = (5, "Unsupported protocol version")

_NEVER = float("inf")

#: The WebSocket close code (RFC 6455 section 7.4) a session's end is sent with.
#: 1000 is for a normal close only; 4000-4999 are private-use codes.
CLOSE_CODES: Final[dict[CloseReason, int]] = {
    CloseReason.CLIENT_CLOSE: 1000,
    CloseReason.FORCED_CLOSE: 1000,
    CloseReason.TRANSPORT_CLOSE: 1000,  # the connection is gone: nothing is sent
    CloseReason.SERVER_SHUTDOWN: 1001,
    CloseReason.PARSE_ERROR: 1002,
    CloseReason.TRANSPORT_ERROR: 1002,
    CloseReason.PAYLOAD_TOO_LARGE: 1009,
    CloseReason.SLOW_CONSUMER: 1008,
    CloseReason.PING_TIMEOUT: 4000,
    CloseReason.CONNECT_TIMEOUT: 4001,
}
#: A second WebSocket for a session that already has one (or is upgrading).
DUPLICATE_WEBSOCKET = (1008, "session already has a websocket")


# Parsed query strings of requests without a session id or cache-buster: every
# WebSocket handshake of socket.io-client sends the same few
# (``EIO=4&transport=websocket``), and parse_qs was 1.5 % of a join's CPU.
_QUERIES: dict[bytes, dict[str, list[str]]] = {}
_QUERIES_MAX = 64


def _parse_query(raw: bytes) -> dict[str, list[str]]:
    """``parse_qs`` of a request's query (``ValueError`` when malformed).  The
    answer may be shared with other requests: read it, never change it."""
    known = _QUERIES.get(raw)
    if known is None:
        known = parse_qs(raw.decode("latin-1"), keep_blank_values=True)
        if "sid" not in known and "t" not in known and len(raw) <= 128:
            if len(_QUERIES) >= _QUERIES_MAX:
                _QUERIES.clear()
            _QUERIES[raw] = known
    return known


class EngineApp(Protocol):
    """What the layer above implements to receive session events."""

    def engine_open(self, handle: SessionHandle) -> None: ...

    def engine_message(self, handle: SessionHandle, data: str | bytes) -> None: ...

    def engine_closed(self, handle: SessionHandle, reason: CloseReason) -> None: ...

    def engine_timer(self, handle: SessionHandle, now: float) -> None: ...

    async def engine_stopped(self) -> None:
        """The server stopped: every session is closed and its sockets are gone."""
        ...


class SessionHandle:
    """An ``EngineSession`` bound to the connections that currently carry it."""

    __slots__ = (
        "app_deadline",
        "app_state",
        "client_address",
        "close_code",
        "handshaking",
        "log_id",
        "origin",
        "poll_conn",
        "scheduled",
        "server",
        "session",
        "ws",
    )

    def __init__(self, server: EngineServerCore, session: EngineSession) -> None:
        self.server = server
        self.session = session
        self.ws: Connection | None = None
        self.poll_conn: Connection | None = None
        self.scheduled = float("inf")
        self.app_deadline = float("inf")
        self.app_state: Any = None
        self.origin: str | None = None
        self.client_address = ""
        self.handshaking = True
        # The one name of this connection in logs (the Engine.IO sid is a
        # session credential and is never logged); the Socket.IO layer uses it
        # as the sid of the connection's first namespace socket.
        self.log_id = ""
        # The WebSocket close code when the peer's connection ended the session.
        self.close_code: int | None = None

    @property
    def sid(self) -> str:
        return self.session.sid

    # -- sending -------------------------------------------------------------

    def send_text(self, packet: str, frame: bytes | None = None) -> None:
        """Send an encoded Engine.IO text packet (``frame``: its WebSocket frame
        bytes when the caller already has them, as a broadcast does)."""
        session = self.session
        ws = self.ws
        if ws is not None and session.transport is Transport.WEBSOCKET and not session.ws_out:
            if session.closed:
                return
            ws.send_frame(frame if frame is not None else ws_frame(packet))
            return
        session.send_packet(packet)
        self.server.schedule_pump(self)

    def send_binary(self, data: bytes) -> None:
        """Send a binary message (raw bytes on WebSocket, base64 on polling)."""
        session = self.session
        ws = self.ws
        if ws is not None and session.transport is Transport.WEBSOCKET and not session.ws_out:
            if not session.closed:
                ws.send_frame(ws_frame(data))
            return
        session.send_packet(data)
        self.server.schedule_pump(self)

    def close(self, reason: CloseReason = CloseReason.FORCED_CLOSE) -> None:
        """Close gracefully: what is queued is delivered first."""
        self.session.close(reason, graceful=True, now=self.server.loop_time())
        self.server.pump(self)

    # -- WsListener ----------------------------------------------------------

    def ws_message(self, conn: Connection, data: str | bytes) -> None:
        server = self.server
        session = self.session
        message = session.receive_ws(data, server.loop_time())
        if message is not None:
            server.app.engine_message(self, message)
        if session.events or session.ws_out or session.closed or self.scheduled == _NEVER:
            server.pump(self)

    def ws_closed(self, conn: Connection, reason: CloseReason) -> None:
        if conn is self.ws:
            self.ws = None
            self.close_code = conn.close_code
            self.session.close(reason)
            self.server.pump(self)


class _Probe:
    """Listener for a WebSocket that is probing an upgrade of a polling session."""

    __slots__ = ("handle",)

    def __init__(self, handle: SessionHandle) -> None:
        self.handle = handle

    def ws_message(self, conn: Connection, data: str | bytes) -> None:
        handle = self.handle
        server = handle.server
        try:
            reply = handle.session.receive_probe(data, server.loop_time())
        except ProtocolError:
            conn.close_websocket(1002, "bad upgrade")
            return
        if reply is not None:
            conn.send_ws(reply)
        elif handle.session.transport is Transport.WEBSOCKET:
            handle.ws = conn
            conn.listener = handle
        server.pump(handle)

    def ws_closed(self, conn: Connection, reason: CloseReason) -> None:
        self.handle.session.probe_lost()


class _Ignored:
    """Listener for a WebSocket accepted only to be closed at once."""

    __slots__ = ()

    def ws_message(self, conn: Connection, data: str | bytes) -> None:
        pass

    def ws_closed(self, conn: Connection, reason: CloseReason) -> None:
        pass


_IGNORED: Final = _Ignored()


class EngineServerCore:
    """Sessions, Engine.IO request handling and the timer, for one app mounted
    on an ``HttpServer`` (its own unless ``server`` is given)."""

    def __init__(
        self, settings: ServerSettings, app: EngineApp, *, server: HttpServer | None = None
    ) -> None:
        self.settings = settings
        self.app = app
        self.config = EngineConfig(
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            max_payload=settings.max_payload,
            upgrades=("websocket",) if "websocket" in settings.transports else (),
        )
        self.sessions: dict[str, SessionHandle] = {}
        self.admission = Admission(
            max_connections=settings.max_connections or default_max_connections(),
            max_handshakes=settings.max_handshakes,
            per_ip_connections=settings.per_ip_connections,
            per_ip_rate=settings.per_ip_rate,
            per_ip_burst=settings.per_ip_burst,
        )
        self.owns_http = server is None
        if server is None:
            server = HttpServer(
                host=settings.host,
                port=settings.port,
                send_buffer_limit=settings.send_buffer_limit,
                announce=False,
            )
        self.http = server
        # Writes are flushed once per loop iteration by the HttpServer for
        # every app on it; bound once here so the hot path pays no indirection.
        self.schedule_flush: Callable[[Connection], None] = server.schedule_flush
        self.schedule_pump: Callable[[SessionHandle], None] = server.schedule_pump
        self._flush_now: Callable[[], None] = server.flush_now
        self._timers: list[tuple[float, int, SessionHandle]] = []
        self._counter = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._resolution = min(
            0.25, max(0.01, min(settings.ping_interval, settings.ping_timeout) / 10)
        )
        self._next_sweep = 0.0
        self.stopping = False
        self.draining = False
        # This app's send buffer limit, when it is not the listener's.
        self._send_limit = (
            None
            if settings.send_buffer_limit == server.send_buffer_limit
            else settings.send_buffer_limit
        )
        server.mount(self)

    # -- lifecycle -----------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the server runs on (without a running-loop lookup: see
        ``core.tasks.running_loop``)."""
        return running_loop(self._loop)

    def loop_time(self) -> float:
        """The event loop's monotonic clock (rebound to ``loop.time`` itself on start)."""
        return asyncio.get_running_loop().time()

    @property
    def port(self) -> int:
        """The port the (possibly shared) listener is bound to."""
        return self.http.port

    @property
    def connections(self) -> set[Connection]:
        """Every connection on the listener (shared by the apps mounted on it)."""
        return self.http.connections

    @property
    def routes(self) -> dict[str, RouteHandler]:
        """The listener's plain HTTP routes."""
        return self.http.routes

    @property
    def accept_pauses(self) -> int:
        """Times accepting paused because the process ran out of descriptors."""
        return self.http.accept_pauses

    def _own_http(self) -> HttpServer:
        if not self.owns_http:
            raise LocalError(
                f"the app at {self.settings.path!r} is mounted on a shared HttpServer: "
                "start and stop that server"
            )
        return self.http

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on ``settings.host:port`` (or ``sock``) and serve (standalone only)."""
        await self._own_http().start(sock)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every session cleanly, wait for the sockets to
        drain (standalone only)."""
        await self._own_http().stop(timeout)

    def stop_accepting(self) -> None:
        """Close the listening socket; existing sessions go on."""
        self.http.stop_accepting()

    def begin_drain(self) -> None:
        """Refuse new sessions while existing ones go on being served: with no
        polling session the listening socket closes at once (the kernel
        refuses new connections, so a load balancer or a client moves on
        without waiting for this process, busy with its drain); while a
        polling session may still send a request on a new connection, the
        listener stays open and new sessions get HTTP 503 (see
        ``wait_sessions_closed``)."""
        self.draining = True
        if not self._polling():
            self.stop_accepting()

    def _polling(self) -> bool:
        return any(h.session.transport is Transport.POLLING for h in self.sessions.values())

    def close_sessions(self, reason: CloseReason) -> None:
        """Close every session gracefully: what is queued is delivered first
        (a polling client collects it, then a CLOSE packet, with its next GET)."""
        for handle in list(self.sessions.values()):
            handle.close(reason)

    async def wait_sessions_closed(self, timeout: float, *, stop_accepting: bool = False) -> bool:
        """Wait until no session is left (True) or ``timeout`` passes (False).

        ``stop_accepting``: close the listening socket as soon as no polling
        session is left (their last GET may come on a new connection), so
        that new connections are refused by the kernel at once and a load
        balancer or client moves on without waiting for this busy process's
        503 (measured: the first 503s of a drain of 5,000 sessions took about
        0.5 s)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if stop_accepting and not self._polling():
                self.stop_accepting()
                stop_accepting = False
            if not self.sessions or loop.time() >= deadline:
                return not self.sessions
            await asyncio.sleep(0.02)

    # -- Mounted (called by the HttpServer) ----------------------------------

    @property
    def mount_path(self) -> str:
        return self.settings.path

    @property
    def max_body(self) -> int:
        return self.settings.max_payload + BODY_OVERHEAD

    def http_started(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.stopping = False
        self.draining = False
        # Called for every message: skip the method indirection.
        self.loop_time = loop.time  # type: ignore[method-assign]
        self._ticker = loop.call_later(self._resolution, self._tick)

    def http_stopping(self) -> None:
        """The listener is stopping: close every session now."""
        self.stopping = True
        for handle in list(self.sessions.values()):
            handle.session.close(CloseReason.SERVER_SHUTDOWN)
            self.pump(handle)

    async def http_stopped(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        await self.app.engine_stopped()

    # -- Router, for a Connection made directly on this app (tests, benchmarks)

    def connection_made(self, conn: Connection) -> None:
        self.http.connection_made(conn)

    def connection_lost(self, conn: Connection) -> None:
        self.http.connection_lost(conn)

    def handle_request(self, conn: Connection, req: Request) -> None:
        self.http.handle_request(conn, req)

    # -- Engine.IO requests --------------------------------------------------

    def _cors_headers(self, origin: str | None) -> list[tuple[str, str]]:
        # Only ever echo an allowed Origin (never the one we are refusing).
        if origin is None or not self.settings.cors_origins:
            return []
        if not self.settings.origin_allowed(origin):
            return []
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]

    def _refuse(
        self, conn: Connection, req: Request, error: tuple[int, str], status: int = 400
    ) -> None:
        body = orjson.dumps({"code": error[0], "message": error[1]})
        conn.respond(
            status,
            body,
            content_type="application/json",
            headers=self._cors_headers(req.header("origin")),
            close=req.upgrade,
        )

    def engine_request(self, conn: Connection, req: Request) -> None:
        """A request (or WebSocket upgrade) for this app's path."""
        if self._send_limit is not None:
            conn.set_send_buffer_limit(self._send_limit)
        origin = req.header("origin")
        if not self.settings.origin_allowed(origin) and not _same_origin(origin, req):
            self._refuse(conn, req, _FORBIDDEN, 403)
            return
        if req.method == "OPTIONS":
            headers = self._cors_headers(origin)
            headers.append(("Access-Control-Allow-Methods", "GET, POST, OPTIONS"))
            requested = req.header("access-control-request-headers")
            if requested:
                headers.append(("Access-Control-Allow-Headers", requested))
            headers.append(("Access-Control-Max-Age", "86400"))
            conn.respond(204, b"", headers=headers)
            return
        try:
            query = _parse_query(req.query)
        except ValueError:
            self._refuse(conn, req, _BAD_REQUEST)
            return
        if query.get("EIO", [""])[0] != "4":
            self._refuse(conn, req, _UNSUPPORTED_VERSION)
            return
        transport = query.get("transport", [""])[0]
        if transport not in self.settings.transports:
            self._refuse(conn, req, _UNKNOWN_TRANSPORT)
            return
        sid_values = query.get("sid")
        sid = sid_values[0] if sid_values else None
        if req.upgrade:
            self._websocket_request(conn, req, transport, sid)
            return
        if transport == "websocket":
            self._refuse(conn, req, _BAD_REQUEST)
            return
        if sid is None:
            if req.method != "GET":
                self._refuse(conn, req, _BAD_HANDSHAKE_METHOD)
                return
            address = self._admit(conn, req)
            if address is None:
                return
            handle = self._new_session(Transport.POLLING, origin, address)
            text = handle.session.open(self.loop_time())
            conn.respond(200, text.encode(), headers=self._cors_headers(origin))
            self.app.engine_open(handle)
            self.pump(handle)
            return
        found = self.sessions.get(sid)
        if found is None:
            self._refuse(conn, req, _UNKNOWN_SID)
            return
        handle = found
        now = self.loop_time()
        headers = self._cors_headers(origin)
        if req.method == "GET":
            reply = handle.session.poll(now)
            if reply is PARK:
                handle.poll_conn = conn

                def lost(handle: SessionHandle = handle, conn: Connection = conn) -> None:
                    if handle.poll_conn is conn:
                        handle.poll_conn = None
                        handle.session.poll_aborted()
                        self.pump(handle)

                conn.on_lost = lost
            else:
                conn.respond(reply.status, reply.body or b"", headers=headers)
        elif req.method == "POST":
            reply = handle.session.post(req.body, now)
            conn.respond(reply.status, reply.body or b"", headers=headers)
        else:
            self._refuse(conn, req, _BAD_REQUEST)
            return
        self.pump(handle)

    def _websocket_request(
        self, conn: Connection, req: Request, transport: str, sid: str | None
    ) -> None:
        if transport != "websocket" or (req.header("upgrade") or "").lower() != "websocket":
            self._refuse(conn, req, _BAD_REQUEST)
            return
        if sid is None:
            address = self._admit(conn, req)
            if address is None:
                return
            handle = self._new_session(Transport.WEBSOCKET, req.header("origin"), address)
            if not conn.accept_websocket(handle, self.settings.max_payload):
                self.sessions.pop(handle.sid, None)
                return
            handle.ws = conn
            conn.send_ws(handle.session.open(self.loop_time()))
            self.app.engine_open(handle)
            self.pump(handle)
            return
        existing = self.sessions.get(sid)
        if existing is None:
            self._refuse(conn, req, _UNKNOWN_SID)
            return
        handle = existing
        if not handle.session.begin_upgrade():
            # A second WebSocket for a session that already has one (or is
            # upgrading): as Node's engine.io, complete the handshake and close
            # it at once; the session and its first WebSocket are untouched.
            if conn.accept_websocket(_IGNORED, self.settings.max_payload):
                conn.close_websocket(*DUPLICATE_WEBSOCKET)
            return
        if not conn.accept_websocket(_Probe(handle), self.settings.max_payload):
            handle.session.probe_lost()

    def _admit(self, conn: Connection, req: Request) -> str | None:
        """Apply the admission limits before any session state exists: the
        client's address when admitted, ``None`` when refused (answered)."""
        address = self._address(conn, req)
        key = self._limit_key(address)
        if self.draining or self.stopping:
            # Retry-After 0: another instance can take the client right away.
            refusal: Refusal | None = Refusal(503, "instance draining", 0.0)
        else:
            refusal = self.admission.admit(key, self.loop_time())
        if refusal is None:
            return address
        retry = str(max(0, round(refusal.retry_after + 0.49)) if refusal.retry_after else 0)
        body = orjson.dumps({"code": 3, "message": refusal.reason})
        headers = [*self._cors_headers(req.header("origin")), ("Retry-After", retry)]
        conn.respond(
            refusal.status,
            body,
            content_type="application/json",
            headers=headers,
            close=req.upgrade,
        )
        return None

    def _address(self, conn: Connection, req: Request) -> str:
        return self.settings.client_address(
            conn.client_addr, req.header("x-real-ip"), req.header("x-forwarded-for")
        )

    def mark_connected(self, handle: SessionHandle) -> None:
        """The session connected to a namespace: its handshake is over."""
        if handle.handshaking:
            handle.handshaking = False
            self.admission.connected()

    def _new_session(self, transport: Transport, origin: str | None, address: str) -> SessionHandle:
        # The prefix names this instance (deploy/nginx.conf routes on it).
        prefix = self.settings.sid_prefix
        sid = prefix + new_id()
        while sid in self.sessions:
            sid = prefix + new_id()
        handle = SessionHandle(self, EngineSession(sid, transport, self.config))
        handle.log_id = new_id()
        handle.origin = origin
        handle.client_address = address
        self.admission.opened(self._limit_key(address))
        self.sessions[sid] = handle
        return handle

    # -- carrying out what the session asks ----------------------------------

    def pump(self, handle: SessionHandle) -> None:
        session = handle.session
        ws = handle.ws
        if session.ws_out and ws is not None:
            for packet in session.take_ws_out():
                ws.send_ws(packet)
        if session.poll_parked or session.outbox:
            conn = handle.poll_conn
            if conn is not None:
                body = session.take_poll_response()
                if body is not None:
                    handle.poll_conn = None
                    conn.on_lost = None
                    conn.respond(200, body, headers=self._cors_headers(handle.origin))
        # The application may close the session while handling a message (a
        # malformed Socket.IO packet): loop until no event is left, and do not
        # hand it the rest of that batch.
        app = self.app
        closed_before = session.closed
        while session.events:
            events = session.events
            session.events = []
            for event in events:
                if isinstance(event, MessageReceived):
                    if session.closed and not closed_before:
                        continue
                    app.engine_message(handle, event.data)
                elif isinstance(event, SessionClosed):
                    self._closed(handle, event.reason)
                elif isinstance(event, Upgraded):
                    pass
        if not session.closed:
            deadline = min(session.next_deadline(), handle.app_deadline)
            if deadline < handle.scheduled:
                handle.scheduled = deadline
                heapq.heappush(self._timers, (deadline, next(self._counter), handle))

    def _limit_key(self, address: str) -> str | None:
        """The per-IP key for ``address``, ``None`` when it is exempt."""
        return address if self.settings.ip_limited(address) else None

    def _closed(self, handle: SessionHandle, reason: CloseReason) -> None:
        if self.sessions.get(handle.sid) is handle:
            del self.sessions[handle.sid]
            self.admission.closed(
                self._limit_key(handle.client_address), handshaking=handle.handshaking
            )
        conn = handle.poll_conn
        if conn is not None:
            handle.poll_conn = None
            conn.on_lost = None
            conn.respond(400, b"session closed")
        ws = handle.ws
        if ws is not None:
            handle.ws = None
            sent = CLOSE_CODES[reason]
            ws.close_websocket(sent, reason.value)
            code: int | None = sent
            transport = "websocket"
        else:
            # Ended by the peer's side (its close frame, a frame we refused
            # with 1007/1009, or the TCP connection dropped: no code).
            code = handle.close_code
            transport = handle.session.transport.value
        log.info(
            "session closed: %s",
            reason.value,
            extra={
                "event": "session_closed",
                "sid": handle.log_id,
                "reason": reason.value,
                "code": code,
                "transport": transport,
            },
        )
        self.app.engine_closed(handle, reason)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, handle = heapq.heappop(timers)
            if handle.scheduled != deadline or handle.session.closed:
                continue
            handle.scheduled = float("inf")
            handle.session.on_timer(now)
            if handle.app_deadline <= now:
                handle.app_deadline = float("inf")
                self.app.engine_timer(handle, now)
            self.pump(handle)
        self.http.flush_now()
        if now >= self._next_sweep:
            self._next_sweep = now + 10.0
            self.admission.sweep(now)
            if len(timers) > 2 * len(self.sessions) + 1024:
                # Entries of closed sessions wait for their deadline before
                # they are dropped; under heavy churn compact so that they do
                # not keep thousands of dead sessions alive.
                self._timers = [t for t in timers if not t[2].session.closed]
                heapq.heapify(self._timers)
        self._ticker = loop.call_later(self._resolution, self._tick)


def _same_origin(origin: str | None, req: Request) -> bool:
    """A page served by this host talking to it (same scheme-less host:port):
    not cross-site, so allowed without being listed."""
    host = req.header("host")
    if origin is None or not host:
        return False
    _, sep, rest = origin.partition("://")
    return bool(sep) and rest.rstrip("/") == host


class _CallbackApp:
    """Adapts plain sid-based callbacks to ``EngineApp``."""

    def __init__(
        self,
        on_connect: Callable[[str], None] | None,
        on_message: Callable[[str, str | bytes], None] | None,
        on_disconnect: Callable[[str, str], None] | None,
    ) -> None:
        self.on_connect = on_connect
        self.on_message = on_message
        self.on_disconnect = on_disconnect

    def engine_open(self, handle: SessionHandle) -> None:
        if self.on_connect is not None:
            self.on_connect(handle.sid)

    def engine_message(self, handle: SessionHandle, data: str | bytes) -> None:
        if self.on_message is not None:
            self.on_message(handle.sid, data)

    def engine_closed(self, handle: SessionHandle, reason: CloseReason) -> None:
        if self.on_disconnect is not None:
            self.on_disconnect(handle.sid, reason.value)

    def engine_timer(self, handle: SessionHandle, now: float) -> None:
        pass

    async def engine_stopped(self) -> None:
        pass


class EngineServer(EngineServerCore):
    """The Engine.IO layer on its own: a message callback per session.

    ``send(sid, data)`` sends a message (``str`` as text, ``bytes`` as binary).
    With ``server=`` it is mounted on that shared ``HttpServer`` at
    ``settings.path`` instead of listening on its own.
    """

    def __init__(
        self,
        settings: ServerSettings,
        *,
        server: HttpServer | None = None,
        on_connect: Callable[[str], None] | None = None,
        on_message: Callable[[str, str | bytes], None] | None = None,
        on_disconnect: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(
            settings, _CallbackApp(on_connect, on_message, on_disconnect), server=server
        )

    def send(self, sid: str, data: str | bytes) -> None:
        handle = self.sessions.get(sid)
        if handle is None:
            return
        if isinstance(data, bytes):
            handle.send_binary(data)
        else:
            handle.send_text("4" + data)

    def disconnect(self, sid: str) -> None:
        handle = self.sessions.get(sid)
        if handle is not None:
            handle.close(CloseReason.FORCED_CLOSE)
