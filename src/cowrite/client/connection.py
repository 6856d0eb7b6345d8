"""The asyncio adapter: one WebSocket (python-websockets' asyncio client) driven
by a ``ClientProtocol``.  Thin: bytes in and out, acknowledgement futures, one
timer for the heartbeat and acknowledgement deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from cowrite.client.errors import AuthenticationFailed, ConnectionRejected
from cowrite.errors import CowriteError, ProtocolError
from cowrite.protocol.client import (
    AckArrived,
    ClientProtocol,
    Closed,
    Connected,
    EventArrived,
    Opened,
    Refused,
)

log = logging.getLogger("cowrite.client")


class ConnectionLost(CowriteError):
    """Internal: the connection ended before an acknowledgement arrived.

    It never reaches the application; the client resends what it concerned.
    """


class ConnectionClosedDuringHandshake(ConnectionLost):
    """The server closed the session before the namespace CONNECT."""


#: What a failed connection attempt may raise besides the terminal ``ConnectionRejected``.
TRANSIENT = (OSError, TimeoutError, WebSocketException, ProtocolError, ConnectionLost)


def websocket_url(url: str, path: str) -> str:
    """``http://host:port`` -> ``ws://host:port/socket.io/?EIO=4&transport=websocket``."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"unsupported URL scheme in {url!r}")
    return urlunsplit((scheme, parts.netloc, path, "EIO=4&transport=websocket", ""))


def refusal_error(refused: Refused) -> ConnectionRejected:
    data = refused.data if isinstance(refused.data, dict) else {}
    code = str(data.get("code", "connection_refused"))
    if refused.message == "Authentication failed":
        return AuthenticationFailed(code, refused.message, refused.data)
    return ConnectionRejected(code, refused.message, refused.data)


class Connection:
    """One connected Socket.IO session.  ``on_event(name, args)`` gets every
    server event, synchronously, in arrival order; ``closed`` resolves with the
    reason once the connection is over."""

    def __init__(self, on_event: Callable[[str, list[Any]], None]) -> None:
        self._on_event = on_event
        self._ws: ClientConnection | None = None
        self._proto: ClientProtocol | None = None
        self._acks: dict[int, tuple[asyncio.Future[Any], float]] = {}
        self._outbox: deque[str | bytes] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._ack_timeout = 30.0
        self.sid = ""
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def open(self) -> bool:
        return not self.closed.done()

    async def start(
        self,
        url: str,
        auth: dict[str, Any],
        *,
        path: str,
        timeout: float,
        ack_timeout: float,
        max_size: int,
    ) -> None:
        """Connect; raises ``ConnectionRejected`` (terminal) or one of ``TRANSIENT``."""
        loop = asyncio.get_running_loop()
        self._ack_timeout = ack_timeout
        async with asyncio.timeout(timeout):
            ws = await connect(
                websocket_url(url, path),
                open_timeout=None,
                ping_interval=None,  # Engine.IO has its own heartbeat
                close_timeout=1.0,
                compression=None,
                max_size=max_size,
            )
            try:
                proto = ClientProtocol(loop.time(), handshake_timeout=timeout, auth=auth)
                while True:
                    event = proto.receive(await ws.recv(), loop.time())
                    for data in proto.data_to_send():
                        await ws.send(data)
                    if isinstance(event, Connected):
                        self.sid = event.sid
                        break
                    if isinstance(event, Refused):
                        raise refusal_error(event)
                    if isinstance(event, Closed):
                        raise ConnectionClosedDuringHandshake(event.reason)
                    if event is not None and not isinstance(event, Opened):
                        raise ProtocolError(f"unexpected {type(event).__name__} before CONNECT")
            except BaseException:
                await ws.close()
                raise
        self._ws = ws
        self._proto = proto
        self._tasks = [
            loop.create_task(self._read(), name="cowrite-client-read"),
            loop.create_task(self._write(), name="cowrite-client-write"),
        ]
        self._arm_timer()

    # -- output ------------------------------------------------------------------

    def call(self, event: str, payload: Any) -> asyncio.Future[Any]:
        """Emit with an acknowledgement; the future gets the ack's first argument
        or ``ConnectionLost``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._proto is None or not self.open:
            future.set_exception(ConnectionLost("not connected"))
            return future
        ack_id = self._proto.emit(event, payload, ack=True)
        assert ack_id is not None
        self._acks[ack_id] = (future, loop.time())
        self._flush()
        return future

    def send(self, event: str, payload: Any) -> None:
        """Emit without an acknowledgement (dropped when not connected)."""
        if self._proto is not None and self.open:
            self._proto.emit(event, payload, ack=False)
            self._flush()

    def _flush(self) -> None:
        assert self._proto is not None
        data = self._proto.data_to_send()
        if data:
            self._outbox.extend(data)
            self._wake.set()

    async def _write(self) -> None:
        ws = self._ws
        assert ws is not None
        outbox = self._outbox
        try:
            while True:
                while outbox:
                    await ws.send(outbox.popleft())
                self._wake.clear()
                await self._wake.wait()
        except (ConnectionClosed, OSError) as exc:
            self._finish(f"transport error: {exc}")

    # -- input -------------------------------------------------------------------

    async def _read(self) -> None:
        ws, proto = self._ws, self._proto
        assert ws is not None and proto is not None
        loop = asyncio.get_running_loop()
        reason = "transport close"
        try:
            async for message in ws:
                event = proto.receive(message, loop.time())
                if event is None:
                    self._flush()  # a PONG, if it was a PING
                    continue
                if isinstance(event, EventArrived):
                    self._on_event(event.event, event.args)
                elif isinstance(event, AckArrived):
                    entry = self._acks.pop(event.ack_id, None)
                    if entry is not None and not entry[0].done():
                        entry[0].set_result(event.args[0] if event.args else None)
                elif isinstance(event, Closed):
                    reason = event.reason
                    break
                else:
                    raise ProtocolError(f"unexpected {type(event).__name__} after CONNECT")
        except ConnectionClosed as exc:
            reason = f"transport close ({exc})"
        except ProtocolError as exc:
            log.warning("protocol error from the server: %s", exc)
            reason = f"parse error: {exc}"
        except Exception:
            log.exception("event handler failed; dropping the connection")
            reason = "client error"
        self._finish(reason)

    # -- deadlines ---------------------------------------------------------------

    def _arm_timer(self) -> None:
        proto = self._proto
        if proto is None or not self.open:
            return
        tick = max(0.05, min(1.0, proto.ping_interval / 4, self._ack_timeout / 4))
        self._timer = asyncio.get_running_loop().call_later(tick, self._on_timer)

    def _on_timer(self) -> None:
        proto = self._proto
        assert proto is not None
        now = asyncio.get_running_loop().time()
        if proto.expired(now):
            self._finish("ping timeout")
            return
        for future, sent_at in self._acks.values():  # oldest first
            if now - sent_at > self._ack_timeout:
                self._finish("ack timeout")
                return
            if not future.done():
                break
        self._arm_timer()

    # -- ending ------------------------------------------------------------------

    def _finish(self, reason: str) -> None:
        if self.closed.done():
            return
        self.closed.set_result(reason)
        if self._timer is not None:
            self._timer.cancel()
        acks, self._acks = self._acks, {}
        for future, _ in acks.values():
            if not future.done():
                future.set_exception(ConnectionLost(reason))
                future.exception()  # a caller that went away does not leave a warning behind
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if self._ws is not None:
            ws = self._ws
            task = asyncio.get_running_loop().create_task(self._close_ws(ws))
            self._tasks.append(task)

    @staticmethod
    async def _close_ws(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            await ws.close()

    def abort(self, reason: str = "aborted") -> None:
        """End the connection at once, without a Socket.IO goodbye (tests use it
        to simulate a dropped network)."""
        if self._ws is not None and self.open:
            self._ws.transport.abort()
        self._finish(reason)

    async def close(self) -> None:
        """Leave the namespace and close the WebSocket (bounded)."""
        if self._proto is not None and self.open:
            self._proto.disconnect()
            ws = self._ws
            assert ws is not None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    while self._outbox:
                        await ws.send(self._outbox.popleft())
                    for data in self._proto.data_to_send():
                        await ws.send(data)
        self._finish("io client disconnect")
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
