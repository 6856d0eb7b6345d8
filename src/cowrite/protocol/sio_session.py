"""The Socket.IO v5 side of one Engine.IO session (sans-I/O).

It tracks which namespaces the client is connected to and turns decoded
packets into small events.  What to accept is the application's business: a
``ConnectRequested`` is answered by calling ``accept`` or ``refuse``, which
return the packet to send.

Rules (socket.io-protocol v5, "Connection to a namespace"):

* The client must connect to a namespace within ``connect_timeout`` seconds of
  the Engine.IO session opening, or the session closes ("connect timeout").
* A CONNECT for a namespace already connected (or being connected), and any
  other packet for a namespace not connected, is an invalid state: the whole
  session is closed, as Node's server does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from cowrite.errors import ProtocolError
from cowrite.protocol.socketio import Decoder, SioPacket, SioType, encode, fast_event
from cowrite.records import record


class NsState(Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    namespace: str
    auth: dict[str, Any] | None


@record
class EventReceived:
    namespace: str
    event: str
    args: list[Any]
    ack_id: int | None


@record
class AckReceived:
    namespace: str
    ack_id: int
    args: list[Any]


@dataclass(frozen=True, slots=True)
class NamespaceLeft:
    namespace: str


SioEvent = ConnectRequested | EventReceived | AckReceived | NamespaceLeft


class SocketIOSession:
    """Namespace bookkeeping and packet dispatch for one Engine.IO session."""

    __slots__ = ("connect_deadline", "decoder", "namespaces")

    def __init__(self, now: float, connect_timeout: float, max_attachments: int = 10) -> None:
        self.namespaces: dict[str, NsState] = {}
        self.decoder = Decoder(max_attachments)
        self.connect_deadline: float | None = now + connect_timeout

    def connect_timed_out(self, now: float) -> bool:
        return self.connect_deadline is not None and now >= self.connect_deadline

    def receive(self, message: str | bytes) -> SioEvent | None:
        """Feed one Engine.IO message; raises ``ProtocolError`` on bad input."""
        if (
            type(message) is str
            and message[:2] == "2["
            and self.namespaces.get("/") is NsState.CONNECTED
            and not self.decoder.awaiting_attachments
        ):
            # Hot path: an EVENT without ack on the connected main namespace.
            # Anything unusual (a numeric event name, bad JSON) takes the
            # general path below, which raises the right error.
            data = fast_event(message)
            if data is not None:
                return EventReceived("/", data[0], data[1:], None)
        packet = self.decoder.feed(message)
        if packet is None:
            return None
        return self._dispatch(packet)

    def _dispatch(self, packet: SioPacket) -> SioEvent:
        ptype = packet.type
        nsp = packet.namespace
        state = self.namespaces.get(nsp)
        if ptype is SioType.EVENT:
            if state is not NsState.CONNECTED:
                raise ProtocolError("event for a namespace that is not connected")
            data = packet.data
            event = data[0]
            return EventReceived(
                nsp, event if isinstance(event, str) else str(event), data[1:], packet.id
            )
        if ptype is SioType.ACK:
            if state is not NsState.CONNECTED or packet.id is None:
                raise ProtocolError("ack for a namespace that is not connected")
            return AckReceived(nsp, packet.id, packet.data)
        if ptype is SioType.CONNECT:
            if state is not None:
                raise ProtocolError("second CONNECT for one namespace")
            self.namespaces[nsp] = NsState.CONNECTING
            return ConnectRequested(nsp, packet.data)
        if ptype is SioType.DISCONNECT:
            if state is None:
                raise ProtocolError("DISCONNECT for a namespace that is not connected")
            del self.namespaces[nsp]
            return NamespaceLeft(nsp)
        raise ProtocolError(f"unexpected {ptype.name} packet from client")

    def accept(self, namespace: str, socket_id: str, pid: str | None = None) -> str:
        """Mark ``namespace`` connected; returns the CONNECT packet to send.

        With connection-state recovery the payload also carries the socket's
        private id ``pid``, which the client sends back in the ``auth`` of its
        next CONNECT (with the ``offset`` of the last event it got) to resume.
        """
        self.namespaces[namespace] = NsState.CONNECTED
        self.connect_deadline = None
        payload = {"sid": socket_id} if pid is None else {"sid": socket_id, "pid": pid}
        text = encode(SioPacket(SioType.CONNECT, namespace, payload))[0]
        assert isinstance(text, str)
        return text

    def refuse(self, namespace: str, message: str, data: Any = None) -> str:
        """Forget ``namespace``; returns the CONNECT_ERROR packet to send."""
        self.namespaces.pop(namespace, None)
        payload: dict[str, Any] = {"message": message}
        if data is not None:
            payload["data"] = data
        prefix = "4" if namespace == "/" else f"4{namespace},"
        return prefix + orjson.dumps(payload).decode()

    def server_disconnect(self, namespace: str) -> str:
        """The server removes the client from ``namespace``; returns DISCONNECT."""
        self.namespaces.pop(namespace, None)
        return "1" if namespace == "/" else f"1{namespace},"
