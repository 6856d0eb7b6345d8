"""The asyncio adapter: one client WebSocket (``cowrite.client.transport``, the
load generator's too) speaking the sans-I/O ``ClientProtocol``.  Thin: bytes in
and out, acknowledgement futures, one timer for the heartbeat and
acknowledgement deadlines."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.exceptions import WebSocketException

from cowrite.client.errors import AuthenticationFailed, ConnectionRejected
from cowrite.client.transport import WebSocketClient, WebSocketURI, parse_uri
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


class _Socket(WebSocketClient):
    """The connection's WebSocket: its hooks hand everything to the ``Connection``."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection, uri: WebSocketURI, max_size: int) -> None:
        super().__init__(uri, max_size=max_size)
        self.conn = conn

    def ws_opened(self) -> None:
        pass  # the Engine.IO OPEN packet follows

    def ws_message(self, payload: bytes, text: bool) -> None:
        self.conn._message(payload, text)

    def ws_closed(self, reason: str, retry_after: float | None) -> None:
        self.conn._socket_closed(reason)


class Connection:
    """One connected Socket.IO session.  ``on_event(name, args)`` gets every
    server event, synchronously, in arrival order; ``closed`` resolves with the
    reason once the connection is over."""

    def __init__(self, on_event: Callable[[str, list[Any]], None]) -> None:
        self._on_event = on_event
        self._socket: _Socket | None = None
        self._proto: ClientProtocol | None = None
        # Until the namespace CONNECT: resolves with None, or with the error
        # ``start`` raises (a result, not an exception: nobody may be waiting).
        self._opening: asyncio.Future[BaseException | None] | None = None
        self._acks: dict[int, tuple[asyncio.Future[Any], float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        # Packets go out once per event-loop iteration (one flush for a burst);
        # until then ``abort`` can still lose them, as a dropped network does.
        self._outbox: list[str | bytes] = []
        self._write_scheduled = False
        self._ack_timeout = 30.0
        self.sid = ""
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def open(self) -> bool:
        return self._opening is not None and self._opening.done() and not self.closed.done()

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
        uri = parse_uri(websocket_url(url, path))
        self._proto = ClientProtocol(loop.time(), handshake_timeout=timeout, auth=auth)
        opening = self._opening = loop.create_future()
        sock = self._socket = _Socket(self, uri, max_size)
        tls = ssl.create_default_context() if uri.secure else None
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: sock, uri.host, uri.port, ssl=tls)
                error = await opening
        except BaseException:
            self._opening = None
            sock.abort()
            raise
        if error is not None:
            self._opening = None
            sock.abort()
            raise error
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
        proto = self._proto
        assert proto is not None
        data = proto.data_to_send()
        if data:
            self._outbox.extend(data)
            if not self._write_scheduled:
                self._write_scheduled = True
                asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        self._write_scheduled = False
        outbox, self._outbox = self._outbox, []
        if self._socket is not None:
            self._socket.send_packets(outbox)

    # -- input -------------------------------------------------------------------

    def _message(self, payload: bytes, text: bool) -> None:
        proto = self._proto
        assert proto is not None
        if self.closed.done():
            return  # frames read together with the one that ended the connection
        try:
            event = proto.receive(
                payload.decode() if text else payload, asyncio.get_running_loop().time()
            )
            self._flush()  # a PONG, or the CONNECT after the OPEN
            if event is None:
                return
            if self._opening is not None and not self._opening.done():
                self._handshake(event)
            elif isinstance(event, EventArrived):
                self._on_event(event.event, event.args)
            elif isinstance(event, AckArrived):
                entry = self._acks.pop(event.ack_id, None)
                if entry is not None and not entry[0].done():
                    entry[0].set_result(event.args[0] if event.args else None)
            elif isinstance(event, Closed):
                self._finish(event.reason)
            else:
                raise ProtocolError(f"unexpected {type(event).__name__} after CONNECT")
        except (ProtocolError, UnicodeDecodeError) as exc:
            log.warning("protocol error from the server: %s", exc)
            self._finish(f"parse error: {exc}")
        except Exception:
            log.exception("event handler failed; dropping the connection")
            self._finish("client error")

    def _handshake(self, event: object) -> None:
        opening = self._opening
        assert opening is not None
        if isinstance(event, Connected):
            self.sid = event.sid
            opening.set_result(None)
        elif isinstance(event, Refused):
            opening.set_result(refusal_error(event))
        elif isinstance(event, Closed):
            opening.set_result(ConnectionClosedDuringHandshake(event.reason))
        elif not isinstance(event, Opened):
            opening.set_result(ProtocolError(f"unexpected {type(event).__name__} before CONNECT"))

    def _socket_closed(self, reason: str) -> None:
        opening = self._opening
        if opening is not None and not opening.done():
            opening.set_result(ConnectionLost(reason))
        elif opening is not None:
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
        self._outbox = []
        acks, self._acks = self._acks, {}
        for future, _ in acks.values():
            if not future.done():
                future.set_exception(ConnectionLost(reason))
                future.exception()  # a caller that went away does not leave a warning behind
        if self._socket is not None:
            self._socket.close()

    def abort(self, reason: str = "aborted") -> None:
        """End the connection at once, without a Socket.IO goodbye (tests use it
        to simulate a dropped network)."""
        if self._socket is not None and self.open:
            self._socket.abort()
        self._finish(reason)

    async def close(self) -> None:
        """Leave the namespace and close the WebSocket (bounded)."""
        sock = self._socket
        if self._proto is not None and sock is not None and self.open:
            self._proto.disconnect()
            self._flush()
            self._write()  # what is queued, then the DISCONNECT, before the close frame
        self._finish("io client disconnect")
        if sock is not None:
            await sock.wait_closed(1.0)
