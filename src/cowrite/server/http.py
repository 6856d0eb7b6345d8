"""One listening socket shared by several apps: ``HttpServer``.

The shape users know from Node (``new Server(httpServer)``, engine.io's
``attach``)::

    http = HttpServer(host="127.0.0.1", port=3000)
    sio = SocketServer(ServerSettings(path="/socket.io/"), server=http)
    eio = EngineServer(ServerSettings(path="/engine.io/", ping_interval=5), server=http,
                       on_message=...)
    http.add_route("/healthz", lambda conn, req: conn.respond(200, b"ok"))
    await http.serve_forever()

Every request on the port, WebSocket upgrades included, goes to the app
mounted at its path (``/socket.io/`` and ``/socket.io`` both name the app at
``/socket.io/``); other paths go to the plain routes, and anything else gets
404.  Each app keeps its own settings (ping timings, payload limit, CORS,
transports, admission limits, send buffer); the listener's own are its
address, its default send buffer and its backlog.  The ``host`` and ``port``
of a mounted app's settings are not used.

This module also owns what every mounted app shares: the set of connections
and the one write flush per event-loop iteration (one ``writelines`` per peer
per iteration, whichever app queued the bytes).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any, Protocol

from cowrite.errors import ConfigError, LocalError
from cowrite.server.connection import Connection, Request
from cowrite.server.listener import Listener

log = logging.getLogger("cowrite.http")


class _PumpOwner(Protocol):
    def pump(self, handle: Any) -> None: ...


class Pumped(Protocol):
    """A session whose queued output ``flush_now`` pumps (an Engine.IO
    ``SessionHandle``: its server's ``pump`` writes it)."""

    @property
    def server(self) -> _PumpOwner: ...


RouteHandler = Callable[[Connection, Request], None]

#: Room for the HTTP framing of a polling body on top of an app's max_payload.
BODY_OVERHEAD = 1024


class Mounted(Protocol):
    """An app served under a path of an ``HttpServer`` (``EngineServerCore``)."""

    @property
    def mount_path(self) -> str: ...

    @property
    def max_body(self) -> int: ...

    def engine_request(self, conn: Connection, req: Request) -> None: ...

    def http_started(self, loop: asyncio.AbstractEventLoop) -> None: ...

    def http_stopping(self) -> None: ...

    async def http_stopped(self) -> None: ...


class HttpServer:
    """One listening socket; apps mounted under their paths; plain routes."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 3000,
        send_buffer_limit: int = 1 << 20,
        backlog: int = 4096,
        announce: bool = True,
    ) -> None:
        """``announce``: log "listening on URL" once started and "stopped
        listening on URL" once stopped (an app with a listener of its own
        announces itself instead)."""
        if not 0 <= port <= 65535:
            raise ConfigError("port out of range")
        if send_buffer_limit < 1024:
            raise ConfigError("send_buffer_limit must be at least 1024 bytes")
        self.host = host
        self.port = port
        self.send_buffer_limit = send_buffer_limit
        self.backlog = backlog
        self.announce = announce
        self.connections: set[Connection] = set()
        self.routes: dict[str, RouteHandler] = {}
        self.prefix_routes: dict[str, RouteHandler] = {}
        self._mounts: dict[str, Mounted] = {}  # both "/x/" and "/x" -> the app at "/x/"
        self._apps: list[Mounted] = []
        self._max_body = BODY_OVERHEAD + 1_000_000
        self._flush_conns: list[Connection] = []
        self._pump_handles: list[Pumped] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: Listener | None = None
        self._accept_pauses = 0
        self._stopping = False

    # -- what is served ------------------------------------------------------

    def mount(self, app: Mounted) -> None:
        """Serve ``app`` under its path (apps call this when given ``server=``)."""
        path = app.mount_path
        bare = path.rstrip("/") or "/"
        for key in {path, bare}:
            if key in self._mounts:
                raise ConfigError(f"an app is already mounted at {path!r}")
            if key in self.routes:
                raise ConfigError(f"{path!r} is already a route")
        self._mounts[path] = app
        self._mounts[bare] = app
        self._apps.append(app)
        self._max_body = max(self._max_body, app.max_body)
        if self._loop is not None and not self._stopping:
            app.http_started(self._loop)

    @property
    def apps(self) -> list[Mounted]:
        return list(self._apps)

    def add_route(self, path: str, handler: RouteHandler) -> None:
        """Serve plain HTTP requests for ``path`` (health, metrics, pages)."""
        if path in self._mounts:
            raise ConfigError(f"an app is mounted at {path!r}")
        self.routes[path] = handler

    def add_prefix_route(self, prefix: str, handler: RouteHandler) -> None:
        """Serve plain HTTP requests for every path under ``prefix`` (ending in
        "/") that no app or exact route takes (the server API's ``/api/``)."""
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ConfigError("a route prefix starts and ends with '/'")
        if prefix in self._mounts:
            raise ConfigError(f"an app is mounted at {prefix!r}")
        self.prefix_routes[prefix] = handler

    # -- lifecycle -----------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._listener is not None

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen (on ``sock`` when given) and start every mounted app."""
        if self._listener is not None:
            raise LocalError("HttpServer is already started")
        loop = self._loop = asyncio.get_running_loop()
        self._stopping = False
        limit = self.send_buffer_limit

        def factory() -> Connection:
            return Connection(self, self._max_body, limit)

        self._listener = Listener(loop, factory, host=self.host, port=self.port, sock=sock)
        self._listener.start()
        self.port = self._listener.port
        for app in self._apps:
            app.http_started(loop)
        if self.announce:
            paths = ", ".join(app.mount_path for app in self._apps) or "no app"
            log.info("listening on %s (%s)", self.url, paths)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def accept_pauses(self) -> int:
        """Times accepting paused because the process ran out of descriptors."""
        listener = self._listener
        return listener.paused_times if listener is not None else self._accept_pauses

    def stop_accepting(self) -> None:
        """Close the listening socket; existing connections go on being served."""
        self._stopping = True
        if self._listener is not None:
            self._listener.close()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every app's sessions cleanly, wait (at most
        ``timeout`` s) for the sockets to drain, then let the apps finish."""
        self.stop_accepting()
        for app in self._apps:
            app.http_stopping()
        self.flush_now()
        loop = self._loop
        if loop is not None:
            deadline = loop.time() + timeout
            while self.connections and loop.time() < deadline:
                for conn in list(self.connections):
                    if not conn.busy and not conn.websocket and conn.transport is not None:
                        conn.transport.close()
                await asyncio.sleep(0.02)
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()
        for app in self._apps:
            await app.http_stopped()
        listener = self._listener
        if listener is not None:
            await listener.wait_closed()
            self._accept_pauses = listener.paused_times
            self._listener = None
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self.announce:
            log.info("stopped listening on %s", self.url)

    async def serve_forever(self) -> None:
        """Start, run until SIGTERM or SIGINT, then stop gracefully."""
        await self.start()
        await self.serve_until_signal()

    async def serve_until_signal(self) -> None:
        """Run (already started) until SIGTERM or SIGINT, then stop gracefully."""
        try:
            await wait_for_signal()
        finally:
            await self.stop()

    # -- Router (called by connections) --------------------------------------

    def connection_made(self, conn: Connection) -> None:
        if self._stopping and conn.transport is not None:
            # Accepted while shutting down (asyncio may still hand us one).
            conn.transport.abort()
            return
        self.connections.add(conn)

    def connection_lost(self, conn: Connection) -> None:
        self.connections.discard(conn)

    def handle_request(self, conn: Connection, req: Request) -> None:
        path = req.path
        app = self._mounts.get(path)
        if app is not None:
            app.engine_request(conn, req)
            return
        route = self.routes.get(path)
        if route is None and self.prefix_routes:
            route = next((h for p, h in self.prefix_routes.items() if path.startswith(p)), None)
        if route is not None and not req.upgrade:
            route(conn, req)
            return
        conn.respond(404, b"not found", close=req.upgrade)

    # -- the one flush per loop iteration ------------------------------------

    def schedule_flush(self, conn: Connection) -> None:
        self._flush_conns.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self.flush_now)

    def schedule_pump(self, handle: Pumped) -> None:
        self._pump_handles.append(handle)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self.flush_now)

    def flush_now(self) -> None:
        self._flush_scheduled = False
        handles = self._pump_handles
        if handles:
            self._pump_handles = []
            for handle in handles:
                handle.server.pump(handle)
        conns = self._flush_conns
        if conns:
            self._flush_conns = []
            for conn in conns:
                conn.flush()


async def wait_for_signal() -> None:
    """Return when the process receives SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
