"""Socket.IO v5 packet codec (sans-I/O).

Specification: socketio/socket.io-protocol, v5.  A packet is encoded as::

    <type>[<#attachments>-][<namespace>,][<ack id>][JSON payload]

followed, for BINARY_EVENT and BINARY_ACK, by ``#attachments`` binary Engine.IO
messages that replace the ``{"_placeholder": true, "num": N}`` objects.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple

import orjson

from cowrite.errors import ProtocolError


class SioType(IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


# Event names a client may not emit (socket.io-parser's reserved list).
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)

_MAX_ACK_ID_DIGITS = 15  # stays an exact integer in a JavaScript number


class SioPacket(NamedTuple):
    type: SioType
    namespace: str = "/"
    data: Any = None
    id: int | None = None


_TYPES = {str(t.value): t for t in SioType}


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("invalid JSON payload") from exc


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise TypeError(f"cannot encode {type(value).__name__} in a Socket.IO packet") from exc


def decode_header(text: str) -> tuple[SioType, int, str, int | None, str]:
    """Split a text packet into (type, attachments, namespace, ack id, payload text)."""
    if not text:
        raise ProtocolError("empty Socket.IO packet")
    ptype = _TYPES.get(text[0])
    if ptype is None:
        raise ProtocolError("unknown Socket.IO packet type")
    i = 1
    n = len(text)
    attachments = 0
    if ptype is SioType.BINARY_EVENT or ptype is SioType.BINARY_ACK:
        dash = text.find("-", i)
        digits = text[i:dash] if dash != -1 else ""
        if not digits.isdigit() or not digits.isascii() or len(digits) > 6:
            raise ProtocolError("invalid attachment count")
        attachments = int(digits)
        i = dash + 1
    namespace = "/"
    if i < n and text[i] == "/":
        comma = text.find(",", i)
        if comma == -1:
            namespace = text[i:]
            i = n
        else:
            namespace = text[i:comma]
            i = comma + 1
    j = i
    while j < n and "0" <= text[j] <= "9":
        j += 1
    ack_id: int | None = None
    if j > i:
        if j - i > _MAX_ACK_ID_DIGITS:
            raise ProtocolError("ack id too large")
        ack_id = int(text[i:j])
    return ptype, attachments, namespace, ack_id, text[j:]


def _valid_payload(ptype: SioType, data: Any, has_payload: bool, ack_id: int | None) -> bool:
    # Validation rules follow socket.io-parser's isPayloadValid.
    if ptype is SioType.CONNECT:
        return not has_payload or isinstance(data, dict)
    if ptype is SioType.DISCONNECT:
        return not has_payload
    if ptype is SioType.CONNECT_ERROR:
        return isinstance(data, str | dict)
    if ptype is SioType.EVENT or ptype is SioType.BINARY_EVENT:
        return (
            isinstance(data, list)
            and len(data) > 0
            and (
                (isinstance(data[0], str) and data[0] not in RESERVED_EVENTS)
                or (isinstance(data[0], int | float) and not isinstance(data[0], bool))
            )
        )
    # ACK / BINARY_ACK need an id and an array
    return ack_id is not None and isinstance(data, list)


class Decoder:
    """Turns Engine.IO messages into Socket.IO packets, reassembling binary ones.

    ``feed`` returns a complete packet or ``None`` while attachments are awaited;
    it raises ``ProtocolError`` on anything malformed (the caller closes the
    session).
    """

    __slots__ = ("_attachments", "_attachments_expected", "_max_attachments", "_pending")

    def __init__(self, max_attachments: int = 10) -> None:
        self._max_attachments = max_attachments
        self._pending: SioPacket | None = None
        self._attachments: list[bytes] = []
        self._attachments_expected = 0

    @property
    def awaiting_attachments(self) -> bool:
        return self._pending is not None

    def feed(self, message: str | bytes) -> SioPacket | None:
        if isinstance(message, bytes):
            return self._feed_binary(message)
        if self._pending is not None:
            raise ProtocolError("text packet while awaiting binary attachments")
        ptype, attachments, namespace, ack_id, payload = decode_header(message)
        has_payload = payload != ""
        data = _loads(payload) if has_payload else None
        if not _valid_payload(ptype, data, has_payload, ack_id):
            raise ProtocolError(f"invalid {ptype.name} payload")
        if ptype is SioType.BINARY_EVENT or ptype is SioType.BINARY_ACK:
            if attachments > self._max_attachments:
                raise ProtocolError("too many binary attachments")
            packet = SioPacket(ptype, namespace, data, ack_id)
            if attachments == 0:
                return _to_plain(packet, [])
            self._pending = packet
            self._attachments = []
            self._attachments_expected = attachments
            return None
        return SioPacket(ptype, namespace, data, ack_id)

    def _feed_binary(self, chunk: bytes) -> SioPacket | None:
        pending = self._pending
        if pending is None:
            raise ProtocolError("unexpected binary attachment")
        self._attachments.append(chunk)
        if len(self._attachments) < self._attachments_expected:
            return None
        self._pending = None
        attachments = self._attachments
        self._attachments = []
        return _to_plain(pending, attachments)


def _to_plain(packet: SioPacket, attachments: list[bytes]) -> SioPacket:
    """Replace placeholders by their attachments; BINARY_* become EVENT/ACK."""
    used: set[int] = set()
    data = _fill(packet.data, attachments, used)
    if len(used) != len(attachments):
        raise ProtocolError("attachment count does not match placeholders")
    ptype = SioType.EVENT if packet.type is SioType.BINARY_EVENT else SioType.ACK
    return SioPacket(ptype, packet.namespace, data, packet.id)


def _fill(value: Any, attachments: list[bytes], used: set[int], depth: int = 0) -> Any:
    if depth > 64:
        raise ProtocolError("payload nested too deeply")
    if isinstance(value, list):
        return [_fill(v, attachments, used, depth + 1) for v in value]
    if isinstance(value, dict):
        if value.get("_placeholder") is True and "num" in value and len(value) == 2:
            num = value["num"]
            if not isinstance(num, int) or isinstance(num, bool) or not 0 <= num < len(attachments):
                raise ProtocolError("invalid attachment placeholder")
            used.add(num)
            return attachments[num]
        return {k: _fill(v, attachments, used, depth + 1) for k, v in value.items()}
    return value


def fast_event(message: str) -> list[Any] | None:
    """``2[...]`` decoded when it is a valid EVENT whose name is a non-reserved
    string, else ``None`` (the caller then uses ``Decoder``)."""
    try:
        data = orjson.loads(message[1:])
    except orjson.JSONDecodeError:
        return None
    if type(data) is list and data and type(data[0]) is str and data[0] not in RESERVED_EVENTS:
        return data
    return None


# -- encoding ----------------------------------------------------------------


def _has_binary(value: Any, depth: int = 0) -> bool:
    if isinstance(value, bytes | bytearray | memoryview):
        return True
    if depth > 64:
        return False
    if isinstance(value, list | tuple):
        return any(_has_binary(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_has_binary(v, depth + 1) for v in value.values())
    return False


def extract_binary(value: Any, out: list[bytes]) -> Any:
    """``value`` with every binary part replaced by a placeholder ``{"_placeholder":
    true, "num": i}``; the parts are appended to ``out`` (i = their index)."""
    return _extract(value, out)


def _extract(value: Any, out: list[bytes]) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        out.append(bytes(value))
        return {"_placeholder": True, "num": len(out) - 1}
    if isinstance(value, list | tuple):
        return [_extract(v, out) for v in value]
    if isinstance(value, dict):
        return {k: _extract(v, out) for k, v in value.items()}
    return value


def encode(packet: SioPacket) -> list[str | bytes]:
    """Encode a packet: the text header+payload first, then binary attachments.

    EVENT and ACK packets whose data holds ``bytes`` become BINARY_EVENT /
    BINARY_ACK automatically.
    """
    ptype = packet.type
    data = packet.data
    attachments: list[bytes] = []
    if (ptype is SioType.EVENT or ptype is SioType.ACK) and _has_binary(data):
        data = _extract(data, attachments)
        ptype = SioType.BINARY_EVENT if ptype is SioType.EVENT else SioType.BINARY_ACK
    parts = [str(ptype.value)]
    if attachments:
        parts.append(f"{len(attachments)}-")
    if packet.namespace != "/":
        parts.append(packet.namespace)
        parts.append(",")
    if packet.id is not None:
        parts.append(str(packet.id))
    if data is not None:
        parts.append(_dumps(data))
    return ["".join(parts), *attachments]


def encode_ack_text(namespace: str, ack_id: int, args: list[Any]) -> str | None:
    """Fast path for an ACK without binary: ``3<id>[...]``, or ``None`` when the
    arguments hold binary data (use ``encode``).  Like ``encode_event_text``,
    orjson's refusal of ``bytes`` is the binary check."""
    try:
        payload = orjson.dumps(args).decode()
    except TypeError:
        return None
    if namespace == "/":
        return f"3{ack_id}{payload}"
    return f"3{namespace},{ack_id}{payload}"


def encode_event_text(namespace: str, event: str, args: tuple[Any, ...]) -> str | None:
    """Fast path for the common broadcast: an EVENT without binary and without
    ack.  Returns ``None`` when the arguments hold binary data (use ``encode``).

    orjson refuses ``bytes``, so trying it first costs nothing in the common
    case and detects binary arguments for free.
    """
    try:
        payload = orjson.dumps([event, *args]).decode()
    except TypeError:
        return None
    if namespace == "/":
        return "2" + payload
    return f"2{namespace},{payload}"
