"""Engine.IO v4 packet and payload codecs (sans-I/O).

Specification: socketio/engine.io-protocol, v4.

* A packet is ``<type digit><data>`` as text; the types are
  ``0`` open, ``1`` close, ``2`` ping, ``3`` pong, ``4`` message, ``5`` upgrade,
  ``6`` noop.
* Over WebSocket a binary frame carries a *message* whose data is the raw bytes
  (v4: no type byte in front).
* Over HTTP long-polling a payload is packets joined by the record separator
  ``\\x1e``; a binary message is written as ``b`` followed by its base64.
"""

from __future__ import annotations

import binascii
from base64 import b64decode, b64encode
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

import orjson

from cowrite.errors import ProtocolError

SEPARATOR = "\x1e"
SEPARATOR_BYTE = b"\x1e"


class PacketType(IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


class Packet(NamedTuple):
    """One decoded Engine.IO packet.  ``data`` is ``bytes`` only for binary messages."""

    type: PacketType
    data: str | bytes = ""


_TYPES = {str(t.value): t for t in PacketType}

# Encoded forms of the data-less packets, built once.
CLOSE_TEXT = "1"
PING_TEXT = "2"
PONG_TEXT = "3"
NOOP_TEXT = "6"
PONG_PROBE_TEXT = "3probe"


@dataclass(frozen=True, slots=True)
class Handshake:
    """The OPEN packet's data (engine.io-protocol v4 "Handshake"): the server
    encodes it (``EngineSession.open``), the client decodes it
    (``cowrite.protocol.client``).  Durations in seconds here, milliseconds
    on the wire."""

    sid: str
    ping_interval: float
    ping_timeout: float
    max_payload: int
    upgrades: tuple[str, ...] = ()

    def encode(self) -> str:
        """The OPEN packet, ``0{...}``."""
        handshake = {
            "sid": self.sid,
            "upgrades": list(self.upgrades),
            "pingInterval": round(self.ping_interval * 1000),
            "pingTimeout": round(self.ping_timeout * 1000),
            "maxPayload": self.max_payload,
        }
        return "0" + orjson.dumps(handshake).decode()

    @classmethod
    def decode(cls, data: str) -> Handshake:
        """The data of an OPEN packet (after the ``0``); ``ProtocolError`` if invalid.
        ``maxPayload`` is optional (1,000,000 when absent)."""
        try:
            info = orjson.loads(data)
            upgrades = info.get("upgrades")
            return cls(
                str(info["sid"]),
                float(info["pingInterval"]) / 1000.0,
                float(info["pingTimeout"]) / 1000.0,
                int(info.get("maxPayload", 1_000_000)),
                tuple(u for u in upgrades if isinstance(u, str))
                if isinstance(upgrades, list)
                else (),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError("invalid OPEN packet") from exc


def decode_text(text: str) -> Packet:
    """Decode one text packet (a WebSocket text frame or one polling record)."""
    if not text:
        raise ProtocolError("empty packet")
    ptype = _TYPES.get(text[0])
    if ptype is None:
        raise ProtocolError("unknown packet type")
    return Packet(ptype, text[1:])


def encode_text(ptype: PacketType, data: str = "") -> str:
    return f"{ptype.value}{data}"


def decode_payload(body: bytes) -> list[Packet]:
    """Decode an HTTP long-polling request body into packets.

    Raises ``ProtocolError`` for anything that is not a valid v4 payload: the
    caller closes the session (engine.io-protocol v4 test suite, "closes the
    session upon invalid packet format").
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("payload is not UTF-8") from exc
    packets: list[Packet] = []
    for record in text.split(SEPARATOR):
        if record[:1] == "b":
            try:
                raw = b64decode(record[1:], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ProtocolError("invalid base64 in binary packet") from exc
            packets.append(Packet(PacketType.MESSAGE, raw))
        else:
            packets.append(decode_text(record))
    return packets


def encode_payload(records: list[str | bytes]) -> bytes:
    """Encode queued packets for a polling response.

    ``records`` holds encoded text packets (``str``) and binary messages
    (``bytes``, written as ``b<base64>``).
    """
    parts: list[str] = []
    for record in records:
        if isinstance(record, str):
            parts.append(record)
        else:
            parts.append("b" + b64encode(record).decode("ascii"))
    return SEPARATOR.join(parts).encode("utf-8")
