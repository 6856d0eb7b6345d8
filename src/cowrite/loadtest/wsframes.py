"""Client side of RFC 6455 for the load generator (sans-I/O: bytes in, bytes out).

Only what a client of a trusted local server needs: the opening handshake
(section 4.1), masked client frames (section 5.3), and an incremental reader
of server frames that reassembles fragments (section 5.4).  Masking uses
websockets' C ``apply_mask``.  No asyncio and no sockets here: the asyncio
adapter is ``cowrite.loadtest.client``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
from dataclasses import dataclass

from websockets.speedups import apply_mask

from cowrite.errors import RemoteError

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

MAX_HANDSHAKE_BYTES = 16 * 1024
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

_getrandbits = random.getrandbits


class WsProtocolError(RemoteError):
    """The server sent something this client cannot accept."""


def new_key() -> bytes:
    """A Sec-WebSocket-Key: base64 of 16 random bytes (section 4.1)."""
    return base64.b64encode(os.urandom(16))


def accept_for(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept the server must answer ``key`` with (section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def handshake_request(host: str, port: int, target: str, key: bytes) -> bytes:
    return (
        (
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
        ).encode()
        + key
        + b"\r\n\r\n"
    )


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; the last value of a repeated name
    rest: bytes  # bytes after the head: the first frames

    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after", "")
        try:
            return float(value)
        except ValueError:
            return None


def parse_handshake(buffer: bytes) -> HandshakeResponse | None:
    """The response head once complete (``None``: need more bytes)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HANDSHAKE_BYTES:
            raise WsProtocolError("handshake response too large")
        return None
    lines = buffer[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise WsProtocolError(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return HandshakeResponse(int(parts[1]), headers, buffer[end + 4 :])


def check_accept(response: HandshakeResponse, key: bytes) -> None:
    if response.status != 101:
        raise WsProtocolError(f"HTTP {response.status}")
    if response.headers.get("sec-websocket-accept", "").encode() != accept_for(key):
        raise WsProtocolError("bad Sec-WebSocket-Accept")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame with a fresh random masking key (section 5.3)."""
    n = len(payload)
    mask = _getrandbits(32).to_bytes(4, "big")
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    return head + mask + apply_mask(payload, mask)


class FrameReader:
    """Cuts server frames out of a byte stream; reassembles fragmented messages.

    ``feed(data)`` returns the complete messages as ``(opcode, payload)``:
    ``OP_TEXT``/``OP_BINARY`` messages and ``OP_CLOSE``/``OP_PING``/``OP_PONG``
    control frames, in order.  Raises ``WsProtocolError`` on a stray
    continuation, an unknown opcode or an oversized message.
    """

    __slots__ = ("_buf", "_frag_op", "_frags")

    def __init__(self) -> None:
        self._buf = b""
        self._frags: list[bytes] | None = None
        self._frag_op = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes]] = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            off = pos + 2
            if length == 126:
                if n - off < 2:
                    break
                length = (buf[off] << 8) | buf[off + 1]
                off += 2
            elif length == 127:
                if n - off < 8:
                    break
                length = int.from_bytes(buf[off : off + 8], "big")
                off += 8
                if length > MAX_MESSAGE_BYTES:
                    raise WsProtocolError("frame too large")
            masked = b1 & 0x80
            if masked:  # servers must not mask (section 5.1); unmask anyway
                off += 4
            end = off + length
            if end > n:
                break
            payload = buf[off:end]
            if masked:
                payload = apply_mask(payload, buf[off - 4 : off])
            pos = end
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode in (OP_TEXT, OP_BINARY):
                if self._frags is not None:
                    raise WsProtocolError("new message inside a fragmented one")
                if fin:
                    out.append((opcode, payload))
                else:
                    self._frags = [payload]
                    self._frag_op = opcode
            elif opcode == OP_CONT:
                if self._frags is None:
                    raise WsProtocolError("continuation without a message")
                self._frags.append(payload)
                if sum(len(f) for f in self._frags) > MAX_MESSAGE_BYTES:
                    raise WsProtocolError("message too large")
                if fin:
                    out.append((self._frag_op, b"".join(self._frags)))
                    self._frags = None
            elif opcode in (OP_CLOSE, OP_PING, OP_PONG):
                out.append((opcode, payload))
            else:
                raise WsProtocolError(f"unknown opcode {opcode}")
        self._buf = buf[pos:] if pos < n else b""
        return out
