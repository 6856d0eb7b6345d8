"""The client side of Engine.IO v4 + Socket.IO v5 over one WebSocket (sans-I/O).

Built on cowrite's own codecs (``cowrite.protocol.engineio``/``socketio``); like
them it does no I/O and reads no clock: time comes in as ``now``.  Its adapters,
the SDK's ``cowrite.client.connection`` and the load generator's
``cowrite.loadtest.client`` (both on the one client WebSocket,
``cowrite.client.transport``), feed every WebSocket message to ``receive`` and
write what ``data_to_send`` returns.

Phases (one table, ``_NEXT``)::

    OPENING    --OPEN packet "0{sid,pingInterval,...}"--> CONNECTING ("40{auth}" queued)
    CONNECTING --CONNECT "40{sid}"----------------------> CONNECTED
    CONNECTING --CONNECT_ERROR "44{message,data}"-------> CLOSED
    any        --CLOSE "1" / DISCONNECT "41" / close()--> CLOSED

Only the WebSocket transport is spoken (``?EIO=4&transport=websocket``,
engine.io-protocol v4 "WebSocket only"): over it a text frame is one packet and
a binary frame is one binary message (a Socket.IO attachment).

Heartbeat (engine.io-protocol v4 "Heartbeat"): the server sends PING every
``pingInterval``; the client answers PONG.  Silence longer than
``pingInterval + pingTimeout`` means the connection is dead (``expired``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import orjson

from cowrite.errors import ProtocolError
from cowrite.protocol.engineio import PONG_TEXT, Handshake, PacketType, decode_text
from cowrite.protocol.socketio import Decoder, SioPacket, SioType, encode


class Phase(Enum):
    OPENING = "opening"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


_NEXT: Final[dict[tuple[Phase, str], Phase]] = {
    (Phase.OPENING, "open"): Phase.CONNECTING,
    (Phase.CONNECTING, "connect"): Phase.CONNECTED,
    (Phase.CONNECTING, "refused"): Phase.CLOSED,
    (Phase.OPENING, "close"): Phase.CLOSED,
    (Phase.CONNECTING, "close"): Phase.CLOSED,
    (Phase.CONNECTED, "close"): Phase.CLOSED,
}


@dataclass(frozen=True, slots=True)
class Opened:
    sid: str
    ping_interval: float
    ping_timeout: float
    max_payload: int


@dataclass(frozen=True, slots=True)
class Connected:
    sid: str


@dataclass(frozen=True, slots=True)
class Refused:
    message: str
    data: Any


@dataclass(frozen=True, slots=True)
class EventArrived:
    event: str
    args: list[Any]


@dataclass(frozen=True, slots=True)
class AckArrived:
    ack_id: int
    args: list[Any]


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


ClientEvent = Opened | Connected | Refused | EventArrived | AckArrived | Closed


class ClientProtocol:
    """One Engine.IO session and its main-namespace Socket.IO connection."""

    __slots__ = (
        "_auth",
        "_decoder",
        "_next_ack",
        "_out",
        "deadline",
        "max_payload",
        "phase",
        "ping_interval",
        "ping_timeout",
    )

    def __init__(self, now: float, *, handshake_timeout: float, auth: dict[str, Any]) -> None:
        self.phase = Phase.OPENING
        self._auth = auth
        self._decoder = Decoder(max_attachments=64)
        self._out: list[str | bytes] = []
        self._next_ack = 0
        self.ping_interval = 25.0
        self.ping_timeout = 20.0
        self.max_payload = 1_000_000
        #: When silence means the connection is dead.
        self.deadline = now + handshake_timeout

    def _move(self, action: str) -> None:
        nxt = _NEXT.get((self.phase, action))
        if nxt is None:
            raise ProtocolError(f"{action} in phase {self.phase.value}")
        self.phase = nxt

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def data_to_send(self) -> list[str | bytes]:
        out, self._out = self._out, []
        return out

    # -- input -------------------------------------------------------------------

    def receive(self, message: str | bytes, now: float) -> ClientEvent | None:
        """One WebSocket message; raises ``ProtocolError`` on input the spec forbids."""
        if self.phase is Phase.CLOSED:
            return None
        if self.phase is not Phase.OPENING:
            self.deadline = now + self.ping_interval + self.ping_timeout
        if isinstance(message, bytes):
            return self._socketio(self._decoder.feed(message))
        if message[:1] == "4":  # MESSAGE: the hot path
            return self._socketio(self._decoder.feed(message[1:]))
        packet = decode_text(message)
        ptype = packet.type
        if ptype is PacketType.PING:
            self._out.append(PONG_TEXT)
            return None
        if ptype is PacketType.OPEN:
            return self._opened(str(packet.data), now)
        if ptype is PacketType.CLOSE:
            self._move("close")
            return Closed("transport close")
        if ptype is PacketType.NOOP:
            return None
        raise ProtocolError(f"unexpected {ptype.name} packet from the server")

    def _opened(self, data: str, now: float) -> Opened:
        self._move("open")
        handshake = Handshake.decode(data)
        opened = Opened(
            handshake.sid, handshake.ping_interval, handshake.ping_timeout, handshake.max_payload
        )
        self.ping_interval = opened.ping_interval
        self.ping_timeout = opened.ping_timeout
        self.max_payload = opened.max_payload
        self.deadline = now + self.ping_interval + self.ping_timeout
        self._out.append("40" + orjson.dumps(self._auth).decode())
        return opened

    def _socketio(self, packet: SioPacket | None) -> ClientEvent | None:
        if packet is None:
            return None  # waiting for binary attachments
        if packet.namespace != "/":
            raise ProtocolError(f"packet for namespace {packet.namespace!r}, never joined")
        ptype = packet.type
        if ptype is SioType.EVENT and self.phase is Phase.CONNECTED:
            data = packet.data
            return EventArrived(str(data[0]), data[1:])
        if ptype is SioType.ACK and self.phase is Phase.CONNECTED:
            assert packet.id is not None  # the decoder checks it
            return AckArrived(packet.id, packet.data)
        if ptype is SioType.CONNECT:
            self._move("connect")
            data = packet.data if isinstance(packet.data, dict) else {}
            return Connected(str(data.get("sid", "")))
        if ptype is SioType.CONNECT_ERROR:
            self._move("refused")
            data = packet.data
            if isinstance(data, dict):
                return Refused(str(data.get("message", "")), data.get("data"))
            return Refused(str(data), None)
        if ptype is SioType.DISCONNECT:
            self._move("close")
            return Closed("io server disconnect")
        raise ProtocolError(f"unexpected {ptype.name} packet in phase {self.phase.value}")

    # -- output ------------------------------------------------------------------

    def emit(self, event: str, payload: Any, *, ack: bool) -> int | None:
        """Queue EVENT ``[event, payload]``; returns its ack id when ``ack``."""
        if self.phase is not Phase.CONNECTED:
            raise ProtocolError("emit before the namespace is connected")
        ack_id: int | None = None
        if ack:
            ack_id = self._next_ack
            self._next_ack += 1
        try:
            # Without binary data (orjson refuses bytes) an EVENT is "2<id>[...]".
            body = orjson.dumps([event, payload]).decode()
        except TypeError:
            text, *attachments = encode(SioPacket(SioType.EVENT, "/", [event, payload], ack_id))
            self._out.append("4" + str(text))
            self._out.extend(attachments)
            return ack_id
        self._out.append(f"42{body}" if ack_id is None else f"42{ack_id}{body}")
        return ack_id

    def disconnect(self) -> None:
        """Leave the namespace (DISCONNECT "41"); the adapter then closes the socket."""
        if self.phase is Phase.CONNECTED:
            self._out.append("41")
        if self.phase is not Phase.CLOSED:
            self._move("close")


def check_encodable(value: Any) -> None:
    """Raise ``TypeError`` now for a value that could not be sent later."""
    encode(SioPacket(SioType.EVENT, "/", ["check", value], None))
