"""The client end of one WebSocket (RFC 6455) as an ``asyncio.Protocol``.

Shared by the SDK (``cowrite.client.connection``) and the load generator
(``cowrite.loadtest.client``): both subclass ``WebSocketClient`` and implement
its three hooks, ``ws_opened``, ``ws_message`` and ``ws_closed``.  What they
speak on top (Engine.IO/Socket.IO) is the sans-I/O ``cowrite.protocol.client``.

The WebSocket protocol is websockets' sans-I/O ``ClientProtocol``, as the server
uses its server side (``cowrite.server.connection``): it answers pings, runs
the closing handshake, reassembles nothing itself but validates fragments,
and fails the connection on frames it must refuse.

Three shortcuts, measured (``docs/DESIGN.md``, "One client transport"):

* The opening handshake: the request is websockets' own, built once per URI
  with the key cut out, and the response head is parsed by httptools and
  checked here (section 4.1: status 101, ``Upgrade: websocket``,
  ``Connection: Upgrade``, the ``Sec-WebSocket-Accept`` of our key, no
  extension or subprotocol we did not ask for).  websockets' ``ClientProtocol``
  is made, already open, only when a frame needs it (as on the server): its
  construction and its generator-based HTTP parser were a quarter of a load
  generator worker's CPU while its clients reconnected (py-spy).

* Receiving: complete, unfragmented text and binary frames at the front of a
  read (what the server sends) are cut here (section 5.2; a server's frames are
  never masked), 0.35 us per frame instead of 2.3 us through websockets'
  generator parser.  The first frame that is anything else (a control frame, a
  fragment, a masked or oversize frame) hands this connection to websockets for
  good: its parser then owns the stream, as on the server.
* Sending: a data frame is serialized here (section 5.3, websockets' C
  ``apply_mask``), 0.4 us instead of 1.2 us through ``send_text`` +
  ``data_to_send``.  Control frames (pong, close) are websockets'.  The
  masking key must come from a strong source of entropy (section 5.3): it is
  cut from one 4 KiB ``os.urandom`` read at a time (one read per 1,024 frames;
  ``os.urandom(4)`` per frame took 280 ns).
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterable
from typing import cast

import httptools
from websockets.client import ClientProtocol as WsClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State as WsState
from websockets.speedups import apply_mask
from websockets.uri import WebSocketURI, parse_uri
from websockets.utils import accept_key

__all__ = ["WebSocketClient", "WebSocketURI", "parse_uri"]

#: An upgrade response head longer than this is refused (it is not a WebSocket server).
MAX_HEAD_BYTES = 16 * 1024

_MASK_POOL_BYTES = 4096
_mask_pool = b""
_mask_at = 0


def _forget_mask_pool() -> None:
    global _mask_pool, _mask_at
    _mask_pool, _mask_at = b"", 0


# A forked child never reuses its parent's masking or handshake keys (as the
# server's session ids: cowrite.server.ids).
os.register_at_fork(after_in_child=_forget_mask_pool)


def _mask_key() -> bytes:
    """Four bytes from the operating system's CSPRNG, read 4 KiB at a time."""
    global _mask_pool, _mask_at
    if _mask_at >= len(_mask_pool):
        _mask_pool, _mask_at = os.urandom(_MASK_POOL_BYTES), 0
    key = _mask_pool[_mask_at : _mask_at + 4]
    _mask_at += 4
    return key


def _new_key() -> str:
    """A ``Sec-WebSocket-Key``: 16 random bytes, base64 (section 4.1), from
    the operating system's CSPRNG through the masking keys' pool."""
    return base64.b64encode(_mask_key() + _mask_key() + _mask_key() + _mask_key()).decode()


_REQUESTS: dict[tuple[object, ...], tuple[bytes, bytes]] = {}


def _request_around_key(uri: WebSocketURI) -> tuple[bytes, bytes]:
    """websockets' opening request for ``uri``, split where the key goes
    (made once per URI: ``WebSocketURI`` is not hashable, its fields are)."""
    fields = (uri.secure, uri.host, uri.port, uri.path, uri.query, uri.username, uri.password)
    parts = _REQUESTS.get(fields)
    if parts is None:
        request = WsClientProtocol(uri).connect()
        key = request.headers["Sec-WebSocket-Key"].encode()
        before, after = request.serialize().split(key)
        parts = _REQUESTS[fields] = before, after
    return parts


class _Head:
    """httptools callbacks: the status and headers of one response head."""

    __slots__ = ("complete", "headers")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.complete = True

    def values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]


def _handshake_error(head: _Head, key: str) -> str | None:
    """What is wrong with a 101 response's headers (RFC 6455 section 4.1,
    the client's checks 2-6), or None."""
    connection = b",".join(head.values(b"connection")).lower()
    if b"upgrade" not in (token.strip() for token in connection.split(b",")):
        return "invalid Connection header"
    if [v.strip().lower() for v in head.values(b"upgrade")] != [b"websocket"]:
        return "invalid Upgrade header"
    if head.values(b"sec-websocket-accept") != [accept_key(key).encode()]:
        return "invalid Sec-WebSocket-Accept header"
    if head.values(b"sec-websocket-extensions"):
        return "an extension was not requested"
    if head.values(b"sec-websocket-protocol"):
        return "a subprotocol was not requested"
    return None


def _client_frame(b0: int, payload: bytes) -> bytes:
    """One final, masked client frame (``b0`` = FIN|opcode), RFC 6455 section 5.2."""
    n = len(payload)
    mask = _mask_key()
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = bytes((b0, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 0xFF)) + n.to_bytes(8, "big")
    return head + mask + apply_mask(payload, mask)


class WebSocketClient(asyncio.Protocol):
    """One client WebSocket over one TCP connection (see the module docstring).

    Life: ``connection_made`` sends the upgrade request; then exactly one
    ``ws_opened`` (the 101 response) and any number of ``ws_message``; and
    ``ws_closed`` once, whatever ended it (a refused upgrade, a close frame,
    a frame websockets refused, the TCP connection).  After ``ws_closed``
    nothing is delivered.
    """

    __slots__ = (
        "_fast",
        "_fragment_text",
        "_fragments",
        "_head",
        "_key",
        "_max_size",
        "_partial",
        "_tcp_closed",
        "_tcp_waiter",
        "_uri",
        "_ws",
        "refused_status",
        "transport",
        "ws_ended",
    )

    def __init__(self, uri: WebSocketURI, *, max_size: int) -> None:
        self._uri = uri
        self._key = _new_key()
        # websockets' protocol, made (open) when a frame needs it: see _protocol.
        self._ws: WsClientProtocol | None = None
        self.transport: asyncio.Transport | None = None
        self._max_size = max_size
        self._head: bytes | None = b""  # bytes of the upgrade response; None once opened
        self._fast = False  # see _receive_fast; on once open
        self._partial = b""
        self._fragments: list[bytes] | None = None
        self._fragment_text = False
        self._tcp_closed = False
        self._tcp_waiter: asyncio.Future[None] | None = None
        #: The status of a refused upgrade (``ws_closed`` follows).
        self.refused_status: int | None = None
        self.ws_ended = False

    @property
    def key(self) -> str:
        """The ``Sec-WebSocket-Key`` of the upgrade request (section 4.1)."""
        return self._key

    def _protocol(self) -> WsClientProtocol:
        """websockets' protocol for this open connection (made on first use)."""
        ws = self._ws
        if ws is None:
            ws = self._ws = WsClientProtocol(self._uri, state=WsState.OPEN, max_size=self._max_size)
        return ws

    # -- hooks ---------------------------------------------------------------

    def ws_opened(self) -> None:
        """The server accepted the upgrade."""

    def ws_message(self, payload: bytes, text: bool) -> None:
        """One complete message (a text message's UTF-8 is not checked here)."""

    def ws_closed(self, reason: str, retry_after: float | None) -> None:
        """The WebSocket is over.  ``reason`` is a short label (``upgrade: HTTP
        503``, ``websocket close``, ``transport close``...); ``retry_after`` the
        seconds of a refusal's ``Retry-After``."""

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        before, after = _request_around_key(self._uri)
        self.transport.write(before + self._key.encode() + after)

    def data_received(self, data: bytes) -> None:
        if self._fast:
            data = self._receive_fast(data)
            if not data:
                return
        if self.ws_ended:
            return
        if self._head is not None:
            self._receive_head(data)
        else:
            self._receive_slow(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._tcp_closed = True
        if self._tcp_waiter is not None and not self._tcp_waiter.done():
            self._tcp_waiter.set_result(None)
        if self._ws is not None:
            self._ws.receive_eof()
        self._end("transport close")

    # -- sending -------------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        """Send one text message (``payload`` is its UTF-8)."""
        transport = self.transport
        if transport is not None and not self.ws_ended:
            transport.write(_client_frame(0x81, payload))

    def send_binary(self, payload: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.ws_ended:
            transport.write(_client_frame(0x82, payload))

    def send_packets(self, packets: Iterable[str | bytes]) -> None:
        """Send what a ``ClientProtocol`` queued: text packets as text
        messages, binary attachments as binary messages."""
        for packet in packets:
            if isinstance(packet, str):
                self.send_text(packet.encode())
            else:
                self.send_binary(packet)

    def close(self, code: int = 1000) -> None:
        """Send a close frame and close the TCP connection once it is written;
        ``ws_closed`` follows from ``connection_lost``."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._head is None and not self.ws_ended:  # open: the closing handshake
            ws = self._protocol()
            if ws.state is WsState.OPEN:
                ws.send_close(code)
                self._write_pending()
        transport.close()

    async def wait_closed(self, timeout: float) -> None:
        """Wait until the TCP connection is over, at most ``timeout`` seconds
        (then abort it)."""
        if self._tcp_closed or self.transport is None:
            return
        if self._tcp_waiter is None:
            self._tcp_waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._tcp_waiter)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection now, discarding what is unsent."""
        if self.transport is not None:
            self.transport.abort()

    def fail(self, reason: str, retry_after: float | None = None) -> None:
        """Abort the connection and report ``reason`` (the subclass gave up on it)."""
        self.abort()
        self._end(reason, retry_after)

    def _write_pending(self) -> None:
        transport = self.transport
        for chunk in self._protocol().data_to_send():
            if transport is None:
                return
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()  # websockets' SEND_EOF: half-close

    def _end(self, reason: str, retry_after: float | None = None) -> None:
        if self.ws_ended:
            return
        self.ws_ended = True
        self._fast = False
        self.ws_closed(reason, retry_after)

    # -- receiving -----------------------------------------------------------

    def _receive_head(self, data: bytes) -> None:
        """The upgrade response.  Its head (up to the blank line, RFC 9112
        section 2.1) is parsed and checked here; the frames after it take the
        fast path.  A refusal's body is not waited for."""
        head = self._head
        assert head is not None
        buf = head + data if head else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                self.fail("upgrade: response head too large")
            else:
                self._head = buf
            return
        self._head = None
        parsed = _Head()
        parser = httptools.HttpResponseParser(parsed)
        try:
            parser.feed_data(buf[: end + 4])
        except httptools.HttpParserUpgrade:
            pass  # a 101 with Upgrade: what we hope for
        except httptools.HttpParserError as exc:
            # llhttp also stops after a complete head that announces an
            # upgrade it cannot follow (a 101 without Connection: upgrade):
            # the checks below name what is wrong with it.
            if not parsed.complete:
                self.fail(f"upgrade: invalid HTTP response ({exc})")
                return
        status = parser.get_status_code()
        if status != 101:
            self.refused_status = status
            retry_after = parsed.values(b"retry-after")
            self.fail(
                f"upgrade: HTTP {status}",
                _seconds(retry_after[0].decode("latin-1")) if retry_after else None,
            )
            return
        error = _handshake_error(parsed, self._key)
        if error is not None:
            self.fail(f"upgrade: {error}")
            return
        self._fast = True
        self.ws_opened()
        rest = buf[end + 4 :]
        if rest and not self.ws_ended:
            self.data_received(rest)

    def _receive_fast(self, data: bytes) -> bytes:
        """Deliver the complete, final, unmasked text and binary frames at the
        front of ``data``; return what websockets must parse (from the first
        other frame on), ``b""`` when all was handled.

        Section 5.2: byte 0 is FIN|RSV|opcode, 0x81 (text) or 0x82 (binary)
        with the RSV bits clear; byte 1 is MASK|length, the length 126 or 127
        reading a 16- or 64-bit extension.
        """
        if self._partial:
            data = self._partial + data
            self._partial = b""
        pos = 0
        n = len(data)
        max_size = self._max_size
        deliver = self.ws_message
        while n - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1]
            if (b0 != 0x81 and b0 != 0x82) or length & 0x80:
                self._fast = False
                return data[pos:]
            head = pos + 2
            if length == 126:
                if n - head < 2:
                    break
                length = (data[head] << 8) | data[head + 1]
                head += 2
            elif length == 127:
                if n - head < 8:
                    break
                length = int.from_bytes(data[head : head + 8], "big")
                head += 8
            if length > max_size:
                self._fast = False
                return data[pos:]
            end = head + length
            if end > n:
                break
            pos = end
            deliver(data[head:end], b0 == 0x81)
            if not self._fast:  # the hook ended the connection
                return b""
        if pos < n:
            self._partial = data[pos:]
        return b""

    def _receive_slow(self, data: bytes) -> None:
        ws = self._protocol()
        ws.receive_data(data)
        for event in ws.events_received():
            frame = cast(Frame, event)  # an open protocol yields only frames
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    self.ws_message(bytes(frame.data), opcode is Opcode.TEXT)
                else:
                    self._fragments = [bytes(frame.data)]
                    self._fragment_text = opcode is Opcode.TEXT
            elif opcode is Opcode.CONT and self._fragments is not None:
                self._fragments.append(bytes(frame.data))
                if frame.fin:
                    message = b"".join(self._fragments)
                    self._fragments = None
                    self.ws_message(message, self._fragment_text)
            if self.ws_ended:
                return
        self._write_pending()  # a pong, a close frame
        if ws.state is not WsState.OPEN:
            sent = ws.close_sent
            if ws.close_rcvd is None and sent is not None:  # websockets refused a frame
                reason = f"websocket: {sent.reason or sent.code}"
            else:
                reason = "websocket close"
            if self.transport is not None:
                self.transport.close()
            self._end(reason)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
