"""Fixtures shared by the conformance and integration suites.

Everything here talks to a cowrite server over loopback with plain aiohttp: raw
HTTP requests (long-polling) and raw WebSocket connections, no Socket.IO client
library.  Every wait is bounded.

The cowrite server modules are imported lazily (inside fixtures) so that the
unit tests keep collecting while the server layer does not exist yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

#: Default bound, in seconds, for one network wait.
WAIT = 5.0


class WebSocketClosed(Exception):
    """The raw WebSocket was closed (or failed) while a message was expected."""

    def __init__(self, msg: aiohttp.WSMessage | None = None) -> None:
        super().__init__(f"websocket closed: {msg!r}")
        self.msg = msg


@dataclass
class HttpResult:
    status: int
    body: bytes
    headers: Any

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class Http:
    """Raw HTTP requests against one server (``base`` is ``http://127.0.0.1:<port>``)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def request(
        self,
        method: str,
        path: str,
        *,
        data: str | bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = WAIT,
    ) -> HttpResult:
        async with asyncio.timeout(timeout):
            async with self.session.request(
                method, self.base + path, data=data, headers=headers
            ) as resp:
                body = await resp.read()
                return HttpResult(resp.status, body, resp.headers)

    async def get(self, path: str, **kw: Any) -> HttpResult:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, data: str | bytes | None = None, **kw: Any) -> HttpResult:
        return await self.request("POST", path, data=data, **kw)

    async def put(self, path: str, data: str | bytes | None = None, **kw: Any) -> HttpResult:
        return await self.request("PUT", path, data=data, **kw)


class RawWebSocket:
    """A thin wrapper over an aiohttp client WebSocket with bounded waits."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self.ws.send_str(data)
        else:
            await self.ws.send_bytes(data)

    async def recv(self, timeout: float = WAIT) -> str | bytes:
        """Next text (``str``) or binary (``bytes``) frame; ``WebSocketClosed`` on close."""
        msg = await self.ws.receive(timeout=timeout)
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return msg.data  # type: ignore[no-any-return]
        raise WebSocketClosed(msg)

    async def recv_or_none(self, timeout: float = WAIT) -> str | bytes | None:
        """Like ``recv`` but returns ``None`` when the connection is closed."""
        try:
            return await self.recv(timeout=timeout)
        except WebSocketClosed:
            return None

    async def recv_packets(self, count: int, timeout: float = WAIT) -> list[str | bytes]:
        """``count`` frames, ignoring Engine.IO PING packets (``"2"``)."""
        packets: list[str | bytes] = []
        async with asyncio.timeout(timeout):
            while len(packets) < count:
                data = await self.recv(timeout=timeout)
                if data == "2":
                    continue
                packets.append(data)
        return packets

    async def wait_closed(self, timeout: float = WAIT) -> list[str | bytes]:
        """Read until the connection closes; return the frames seen before that.

        Raises ``TimeoutError`` when it is still open after ``timeout`` seconds.
        """
        seen: list[str | bytes] = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    seen.append(await self.recv(timeout=timeout))
                except WebSocketClosed:
                    return seen

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2.0)


@pytest.fixture
async def client_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
async def ws_connect(
    client_session: aiohttp.ClientSession,
) -> AsyncIterator[Callable[..., Awaitable[RawWebSocket]]]:
    """Factory: ``await ws_connect(url, headers=None)`` opens a raw WebSocket.

    A refused handshake raises ``aiohttp.WSServerHandshakeError``; every socket
    opened is closed at teardown.
    """
    opened: list[RawWebSocket] = []

    async def connect(url: str, *, headers: dict[str, str] | None = None) -> RawWebSocket:
        ws = await asyncio.wait_for(
            client_session.ws_connect(
                url,
                headers=headers,
                autoping=True,
                heartbeat=None,
                max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0),
            ),
            WAIT,
        )
        raw = RawWebSocket(ws)
        opened.append(raw)
        return raw

    yield connect
    for raw in opened:
        await raw.close()


@pytest.fixture
def make_settings() -> Callable[..., Any]:
    """Factory for ``cowrite.config.ServerSettings`` on an ephemeral loopback port."""

    def make(**overrides: Any) -> Any:
        from cowrite.config import ServerSettings

        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "path": "/socket.io/",
            "ping_interval": 25.0,
            "ping_timeout": 20.0,
            "max_payload": 1_000_000,
            "connect_timeout": 45.0,
            "cors_origins": ("*",),
            "transports": ("polling", "websocket"),
            "send_buffer_limit": 1_048_576,
        }
        values.update(overrides)
        return ServerSettings(**values)

    return make


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[[Any], Awaitable[Any]]]:
    """``await start_server(server)`` starts a cowrite server; it is stopped at teardown."""
    started: list[Any] = []

    async def start(server: Any) -> Any:
        await asyncio.wait_for(server.start(), WAIT)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        await asyncio.wait_for(server.stop(), 10.0)


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll ``predicate`` every 10 ms until it holds; ``TimeoutError`` after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """``await eventually(lambda: cond, timeout=5)``."""
    return wait_until


@pytest.fixture
def http_for(client_session: aiohttp.ClientSession) -> Callable[[int], Http]:
    """Factory: ``http_for(port)`` gives raw HTTP access to a loopback server."""

    def make(port: int) -> Http:
        return Http(client_session, f"http://127.0.0.1:{port}")

    return make
