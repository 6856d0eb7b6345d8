"""Servers for the official protocol test suites, re-expressed in Python.

* ``eio`` -- an Engine.IO-only echo server at ``/engine.io/`` (every message
  received is sent back), as the engine.io-protocol v4 test suite expects.
* ``sio`` -- a Socket.IO server at ``/socket.io/`` with the handlers the
  socket.io-protocol v5 test suite expects.

Both use the suites' timings: pingInterval 300 ms, pingTimeout 200 ms,
maxPayload 1 000 000 bytes.

Where an upstream test relies on the order in which two of its requests reach
the server (``sleep(5)`` between two GETs, ``Promise.all`` of a GET and a
POST, WebSocket frames sent just before a GET), ours waits for the server to
have processed the first one (``wait_parked``, ``wait_upgraded``): the same
order, without a timing margin.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

PING_INTERVAL = 0.3
PING_TIMEOUT = 0.2
MAX_PAYLOAD = 1_000_000
#: Bound for one network wait.
WAIT = 5.0
#: The Socket.IO fixture's connect timeout (the suite only needs "some" timeout;
#: it must be longer than the three ping/pong rounds of the heartbeat tests).
SIO_CONNECT_TIMEOUT = 2.0


async def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    """Check ``predicate`` every millisecond until it holds (bounded)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


@dataclass
class Target:
    """One running server plus raw clients pointed at it."""

    server: Any
    port: int
    path: str
    http: Any
    _ws_connect: Callable[..., Awaitable[Any]]
    connects: list[Any] = field(default_factory=list)
    disconnects: list[tuple[str, str]] = field(default_factory=list)
    #: arguments of the acks the client sent for server->client emits (extras)
    acks: list[tuple[Any, ...]] = field(default_factory=list)

    def q(self, query: str) -> str:
        """Request path for ``query`` (``"EIO=4&transport=polling"``)."""
        return f"{self.path}?{query}" if query else self.path

    def ws_url(self, query: str = "EIO=4&transport=websocket") -> str:
        return f"ws://127.0.0.1:{self.port}{self.q(query)}"

    async def ws(self, query: str = "EIO=4&transport=websocket", **kw: Any) -> Any:
        return await self._ws_connect(self.ws_url(query), **kw)

    def _engine(self) -> Any:
        return getattr(self.server, "engine", self.server)

    async def wait_parked(self, sid: str) -> None:
        """Until the server holds a polling GET for ``sid`` (parked, unanswered)."""
        engine = self._engine()
        await wait_until(
            lambda: sid in engine.sessions and engine.sessions[sid].poll_conn is not None, WAIT
        )

    async def wait_upgraded(self, sid: str) -> None:
        """Until the server has processed the upgrade (``5``) of session ``sid``."""
        engine = self._engine()
        await wait_until(
            lambda: (
                sid in engine.sessions
                and engine.sessions[sid].session.transport.value == "websocket"
            ),
            WAIT,
        )

    async def wait_closed_session(self, sid: str) -> None:
        """Until the server has forgotten session ``sid``."""
        engine = self._engine()
        await wait_until(lambda: sid not in engine.sessions, WAIT)

    async def ws_accepted_then_closed(self, query: str) -> None:
        """The WebSocket at ``query`` completes its handshake, then is closed by
        the server without any packet (upstream: ``await waitFor(socket2,
        "close")`` where Node's ``ws`` would report a refused handshake as an
        error, not a close)."""
        ws = await self.ws(query)
        seen = await ws.wait_closed(timeout=WAIT)
        assert seen == [], f"expected no packet on the duplicate WebSocket, got {seen!r}"

    async def ws_fails(self, query: str) -> None:
        """The WebSocket at ``query`` is refused, or closed without any packet."""
        try:
            ws = await self.ws(query)
        except aiohttp.WSServerHandshakeError as exc:
            assert 400 <= exc.status < 500, exc
            return
        seen = await ws.wait_closed(timeout=WAIT)
        assert seen == [], f"expected no packet on a refused connection, got {seen!r}"

    def polling(self, sid: str | None = None) -> str:
        query = "EIO=4&transport=polling"
        return self.q(query if sid is None else f"{query}&sid={sid}")

    async def init_long_polling_session(self) -> str:
        res = await self.http.get(self.polling())
        assert res.status == 200, res
        assert res.text.startswith("0"), res.text
        sid = json.loads(res.text[1:])["sid"]
        assert isinstance(sid, str)
        return sid


@pytest.fixture
async def eio(
    make_settings: Callable[..., Any],
    start_server: Callable[[Any], Awaitable[Any]],
    http_for: Callable[[int], Any],
    ws_connect: Callable[..., Awaitable[Any]],
) -> AsyncIterator[Target]:
    from cowrite.server import EngineServer

    settings = make_settings(
        path="/engine.io/",
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
        max_payload=MAX_PAYLOAD,
    )
    connects: list[Any] = []
    disconnects: list[tuple[str, str]] = []
    box: dict[str, Any] = {}

    def on_message(sid: str, data: Any) -> None:
        box["server"].send(sid, data)

    server = EngineServer(
        settings,
        on_connect=lambda sid: connects.append(sid),
        on_message=on_message,
        on_disconnect=lambda sid, reason: disconnects.append((sid, reason)),
    )
    box["server"] = server
    await start_server(server)
    yield Target(
        server, server.port, "/engine.io/", http_for(server.port), ws_connect, connects, disconnects
    )


@pytest.fixture
async def sio(
    make_settings: Callable[..., Any],
    start_server: Callable[[Any], Awaitable[Any]],
    http_for: Callable[[int], Any],
    ws_connect: Callable[..., Awaitable[Any]],
) -> AsyncIterator[Target]:
    from cowrite.server import SocketServer

    settings = make_settings(
        path="/socket.io/",
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
        max_payload=MAX_PAYLOAD,
        connect_timeout=SIO_CONNECT_TIMEOUT,
    )
    server = SocketServer(settings)
    connects: list[Any] = []
    disconnects: list[tuple[str, str]] = []

    def register(ns: str) -> None:
        def on_connect(sid: str, auth: Any) -> None:
            connects.append((ns, sid, auth))
            server.emit("auth", auth if auth is not None else {}, to=sid, namespace=ns)

        def on_disconnect(sid: str, reason: str) -> None:
            disconnects.append((sid, reason))

        def on_message(sid: str, *args: Any) -> None:
            server.emit("message-back", *args, to=sid, namespace=ns)

        def on_message_with_ack(sid: str, *args: Any) -> tuple[Any, ...]:
            return args

        server.on("connect", namespace=ns)(on_connect)
        server.on("disconnect", namespace=ns)(on_disconnect)
        server.on("message", namespace=ns)(on_message)
        server.on("message-with-ack", namespace=ns)(on_message_with_ack)

    register("/")
    register("/custom")

    # Beyond the official suite (see test_socketio_extras.py).
    from cowrite.errors import ConnectionRefused

    acks: list[tuple[Any, ...]] = []

    def on_request_ack(sid: str, *args: Any) -> None:
        server.emit("ack-me", *args, to=sid, callback=lambda *ack: acks.append(ack))

    def on_refused_connect(sid: str, auth: Any) -> None:
        raise ConnectionRefused("not allowed", {"code": 42})

    server.on("request-ack")(on_request_ack)
    server.on("connect", namespace="/refused")(on_refused_connect)

    await start_server(server)
    yield Target(
        server,
        server.port,
        "/socket.io/",
        http_for(server.port),
        ws_connect,
        connects,
        disconnects,
        acks,
    )
