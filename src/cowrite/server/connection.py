"""One TCP connection: HTTP/1.1 requests (httptools), then maybe a WebSocket.

This is I/O glue only.  Requests are handed to the ``Router`` (the Engine.IO
server); after a WebSocket upgrade, frames are parsed by the sans-I/O
``websockets.protocol.Protocol`` and messages handed to the ``WsListener``.

Writes never block the caller: they are collected per connection and flushed
once per event-loop iteration (one ``writelines`` syscall carries every message
queued for this peer in that iteration).  When the kernel cannot take them and
the transport's buffer passes ``send_buffer_limit``, asyncio calls
``pause_writing`` and the connection is dropped as a slow consumer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

import httptools
from websockets.exceptions import ProtocolError as WsProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import Side
from websockets.protocol import State as WsState
from websockets.speedups import apply_mask

from cowrite.errors import CloseReason

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger("cowrite.connection")

_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

_STATUS_TEXT = {
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Request:
    """A parsed HTTP request.  Dropped once answered (nothing is kept per session)."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query", "upgrade")

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        self.query = b""
        self.headers: dict[str, str] = {}
        self.body = b""
        self.keep_alive = True
        self.upgrade = False

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class Router(Protocol):
    """Who handles complete requests (implemented by the Engine.IO server)."""

    def handle_request(self, conn: Connection, request: Request) -> None: ...

    def schedule_flush(self, conn: Connection) -> None: ...

    def connection_made(self, conn: Connection) -> None: ...

    def connection_lost(self, conn: Connection) -> None: ...


class WsListener(Protocol):
    """Who receives a WebSocket's messages (an Engine.IO session handle)."""

    def ws_message(self, conn: Connection, data: str | bytes) -> None: ...

    def ws_closed(self, conn: Connection, reason: CloseReason) -> None: ...


def ws_frame(data: str | bytes) -> bytes:
    """Serialize one unmasked server frame; broadcasts reuse the result for every peer.

    RFC 6455 section 5.2 header: FIN|opcode, then the payload length in 7, 7+16
    or 7+64 bits; server frames carry no mask.
    """
    if isinstance(data, str):
        payload = data.encode()
        b0 = 0x81
    else:
        payload = data
        b0 = 0x82
    n = len(payload)
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 65536:
        return _HEAD16.pack(b0, 126, n) + payload
    return _HEAD64.pack(b0, 127, n) + payload


class Connection(asyncio.Protocol):
    __slots__ = (
        "_body_parts",
        "_body_size",
        "_closing",
        "_fast",
        "_fragment_text",
        "_fragments",
        "_header_name",
        "_max_body",
        "_parser",
        "_partial",
        "_request",
        "_send_buffer_limit",
        "_ws_max",
        "busy",
        "client_addr",
        "close_code",
        "listener",
        "on_lost",
        "router",
        "transport",
        "wbuf",
        "websocket",
        "ws",
    )

    def __init__(self, router: Router, max_body: int, send_buffer_limit: int) -> None:
        self.router = router
        self._max_body = max_body
        self._send_buffer_limit = send_buffer_limit
        self.transport: asyncio.Transport | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._request = Request()
        self._header_name = ""
        self._body_parts: list[bytes] = []
        self._body_size = 0
        self.wbuf: list[bytes] = []
        self._closing = False
        self.busy = False  # a response is owed (e.g. a parked long-poll)
        # In WebSocket framing (after the 101).  ``ws``, websockets' Protocol,
        # is built only when a frame needs it (see _ws_fast): ~1.1 KB per
        # connection that the usual client, whose data frames the fast path
        # reads, never needs (tracemalloc, websockets 15).
        self.websocket = False
        self.ws: WsProtocol | None = None
        self._fragments: list[bytes] | None = None
        self._fast = True  # see _ws_fast
        self._partial = b""
        self._ws_max = 0
        self._fragment_text = False
        self.listener: WsListener | None = None
        self.on_lost: Callable[[], None] | None = None
        self.client_addr = ""
        # The WebSocket close code sent or received (None: no close frame).
        self.close_code: int | None = None

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=self._send_buffer_limit)
        peer = transport.get_extra_info("peername")
        self.client_addr = peer[0] if isinstance(peer, tuple) else ""
        self.router.connection_made(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.wbuf = []
        if self.listener is not None:
            listener, self.listener = self.listener, None
            listener.ws_closed(self, CloseReason.TRANSPORT_CLOSE)
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost()
        self.router.connection_lost(self)
        self.transport = None

    def pause_writing(self) -> None:
        # The peer does not read fast enough: over send_buffer_limit.
        self.drop(CloseReason.SLOW_CONSUMER)

    def resume_writing(self) -> None:
        pass

    def set_send_buffer_limit(self, limit: int) -> None:
        """Use ``limit`` instead of the listener's (the app served here has its own)."""
        if limit != self._send_buffer_limit:
            self._send_buffer_limit = limit
            if self.transport is not None:
                self.transport.set_write_buffer_limits(high=limit)

    def data_received(self, data: bytes) -> None:
        if self.websocket:
            self._ws_data(data)
            return
        parser = self._parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self._on_upgrade(data[offset:])
        except httptools.HttpParserError:
            self.respond(400, b"bad request", close=True)

    # -- httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        self._request = Request()
        self._body_parts = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._request.path += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._request.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        req = self._request
        parser = self._parser
        assert parser is not None
        req.method = parser.get_method().decode("ascii", "replace")
        req.keep_alive = parser.should_keep_alive()
        req.upgrade = parser.should_upgrade()
        raw = req.path
        q = raw.find("?")
        if q != -1:
            req.query = raw[q + 1 :].encode("latin-1")
            req.path = raw[:q]

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body:
            # Stop reading; the request is answered with 413 and the connection closed.
            self._parser = None
            self.respond(413, b"payload too large", close=True)
            return
        self._body_parts.append(body)

    def on_message_complete(self) -> None:
        req = self._request
        if req.upgrade:
            return  # handled in data_received once the parser signals the upgrade
        req.body = b"".join(self._body_parts)
        self._body_parts = []
        self.busy = True
        if self.transport is not None:
            # One request at a time per connection: no pipelining while one is owed.
            self.transport.pause_reading()
        self.router.handle_request(self, req)

    # -- HTTP responses ------------------------------------------------------

    def respond(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "text/plain; charset=UTF-8",
        headers: Iterable[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        keep_alive = self._request.keep_alive and not close
        lines = [
            f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Unknown')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
        ]
        lines.extend(f"{k}: {v}" for k, v in headers)
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        transport.write(head + body)
        self.busy = False
        if keep_alive:
            transport.resume_reading()
        else:
            transport.close()

    # -- WebSocket -----------------------------------------------------------

    def _on_upgrade(self, rest: bytes) -> None:
        self.busy = True
        req = self._request
        self._parser = None
        if rest:
            req.body = rest  # early frames, fed once the upgrade is accepted
        self.router.handle_request(self, req)

    def accept_websocket(self, listener: WsListener, max_size: int) -> bool:
        """Send the 101 response and switch this connection to WebSocket framing."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        req = self._request
        key = req.header("sec-websocket-key")
        if req.header("sec-websocket-version") != "13" or not key:
            self.respond(400, b"bad websocket handshake", close=True)
            return False
        accept = base64.b64encode(hashlib.sha1(key.encode("latin-1") + _WS_GUID).digest())
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.busy = False
        self.websocket = True
        self._ws_max = max_size
        self.listener = listener
        early = req.body
        self._request = Request()
        if early:
            self._ws_data(early)
        return True

    def _ws_data(self, data: bytes) -> None:
        if self._fast:
            data = self._ws_fast(data)
            if not data:
                return
        self._ws_slow(data)

    def _ws_fast(self, data: bytes) -> bytes:
        """Deliver the complete, unfragmented, masked data frames at the front of
        ``data`` (what browsers and socket.io-client send); return the rest.

        RFC 6455 section 5.2: byte 0 is FIN|RSV|opcode — 0x81 (text) or 0x82
        (binary) with RSV bits clear; byte 1 is MASK|length (client frames must
        be masked); lengths 126 read a 16-bit extension.  Anything else — control
        frames, fragments, 64-bit lengths, oversize — goes to websockets'
        Protocol, which then handles this connection for good (it owns the
        parsing state from that point on).  Unmasking uses websockets' C helper.
        """
        if self._partial:
            data = self._partial + data
            self._partial = b""
        pos = 0
        n = len(data)
        max_size = self._ws_max
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            if (b0 != 0x81 and b0 != 0x82) or b1 < 0x80:
                self._fast = False
                return data[pos:]
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (data[head] << 8) | data[head + 1]
                head += 2
            elif length == 127:
                self._fast = False
                return data[pos:]
            if length > max_size:
                self._fast = False
                return data[pos:]
            end = head + 4 + length
            if end > n:
                break
            payload = apply_mask(data[head + 4 : end], data[head : head + 4])
            pos = end
            self._deliver(payload, b0 == 0x81)
            if self.listener is None or not self._fast:
                return b""
        if pos < n:
            self._partial = data[pos:]
        return b""

    def _ws_slow(self, data: bytes) -> None:
        ws = self.ws
        if ws is None:
            # Built at a frame boundary (the fast path hands over whole
            # frames), so it parses from here exactly as if it had been
            # built at the upgrade.
            ws = self.ws = WsProtocol(Side.SERVER, max_size=self._ws_max)
        self._fast = False
        ws.receive_data(data)
        # A server-side Protocol built OPEN yields only frames.
        for frame in cast(list[Frame], ws.events_received()):
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    self._deliver(frame.data, opcode is Opcode.TEXT)
                else:
                    self._fragments = [bytes(frame.data)]
                    self._fragment_text = opcode is Opcode.TEXT
            elif opcode is Opcode.CONT:
                if self._fragments is None:
                    continue  # websockets already failed the connection for this
                self._fragments.append(bytes(frame.data))
                if frame.fin:
                    data_all = b"".join(self._fragments)
                    self._fragments = None
                    self._deliver(data_all, self._fragment_text)
            if self.listener is None:
                break
        out = ws.data_to_send()
        if out and self.transport is not None:
            for chunk in out:
                if chunk:
                    self.transport.write(chunk)
        if ws.state is not WsState.OPEN:
            self._ws_finish(self._ws_close_reason(ws))

    def _ws_close_reason(self, ws: WsProtocol) -> CloseReason:
        """Why websockets ended the connection: a close frame it sent (it
        refused a frame) or the peer's close frame."""
        sent, received = ws.close_sent, ws.close_rcvd
        if sent is not None and (received is None or ws.close_rcvd_then_sent is False):
            self.close_code = sent.code
            if sent.code == 1009:
                return CloseReason.PAYLOAD_TOO_LARGE
            if sent.code in (1002, 1007):
                return CloseReason.PARSE_ERROR
        elif received is not None:
            self.close_code = received.code
        return CloseReason.TRANSPORT_CLOSE

    def _deliver(self, payload: bytes | bytearray | memoryview, text: bool) -> None:
        listener = self.listener
        if listener is None:
            return
        if text:
            try:
                message: str | bytes = bytes(payload).decode("utf-8")
            except UnicodeDecodeError:
                # close_websocket forgets the listener: tell it first-hand.
                self.close_websocket(1007, "invalid utf-8")
                listener.ws_closed(self, CloseReason.PARSE_ERROR)
                return
        else:
            message = bytes(payload)
        listener.ws_message(self, message)

    def _ws_finish(self, reason: CloseReason) -> None:
        listener, self.listener = self.listener, None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if listener is not None:
            listener.ws_closed(self, reason)

    def send_frame(self, frame: bytes) -> None:
        """Queue pre-serialized frame bytes; flushed at the end of this loop iteration."""
        if self._closing:
            return
        if not self.wbuf:
            self.router.schedule_flush(self)
        self.wbuf.append(frame)

    def send_ws(self, data: str | bytes) -> None:
        self.send_frame(ws_frame(data))

    def flush(self) -> None:
        buf = self.wbuf
        if not buf:
            return
        self.wbuf = []
        transport = self.transport
        if transport is None or self._closing:
            return
        if len(buf) == 1:
            transport.write(buf[0])
        else:
            transport.writelines(buf)

    def close_websocket(self, code: int = 1000, reason: str = "") -> None:
        """Flush what is queued, send a close frame, and end the connection."""
        if self._closing:
            return
        self.flush()
        transport = self.transport
        self._closing = True
        self.listener = None
        self.close_code = code
        if transport is None or transport.is_closing():
            return
        if self.websocket:
            try:
                payload = Close(code, reason).serialize()
            except WsProtocolError:
                payload = b""
            transport.write(Frame(Opcode.CLOSE, payload).serialize(mask=False))
        transport.close()

    def drop(self, reason: CloseReason) -> None:
        """Abort the connection now, discarding what is unsent."""
        if self._closing:
            return
        self._closing = True
        self.wbuf = []
        listener, self.listener = self.listener, None
        transport = self.transport
        if transport is not None:
            transport.abort()
        if listener is not None:
            listener.ws_closed(self, reason)
