"""The broker: moves typed messages about documents between cowrite instances.

Interface only.  Implementations live one per module: ``broker_memory`` (one
process; the default) and ``broker_redis`` (several instances sharing Redis
pub/sub).  One contract suite (``tests/contract/test_broker_contract.py``) runs
against both; core/ imports this module and never an implementation.

The broker is not the truth.  The operation log (``backends.store``) is; the
broker only carries news of it between instances fast, and says honestly when
it could not.  Core fills every gap from the log.

Guarantees every implementation gives
=====================================

Channels
    There is one channel per document.  An instance receives the messages of
    exactly the documents it is subscribed to: from the moment ``subscribe``
    returns (see *Subscribing*) until ``unsubscribe`` is called.  Nothing
    queued for a document is delivered after ``unsubscribe`` was called for it.

No self-delivery
    An instance never receives a message whose ``origin`` is its own
    ``instance_id``, even when it is subscribed to the document.  Core delivers
    to its local members itself.

Ordering
    Messages one publisher publishes on one document reach one subscriber in
    the order of the ``publish`` calls (the order in which the calls were
    made, even when several are awaited concurrently), as long as the
    subscriber's connection stays up.  There is no order between documents or
    between publishers, and none across an outage.

Delivery
    At most once.  A message can be lost: when the subscriber's connection is
    down, when ``publish`` returned ``False``, or when an instance is slower
    than the implementation's own buffers allow.  It is never duplicated.
    Messages that cannot be decoded are dropped and logged.

Availability
    ``available`` is ``False`` while the instance cannot receive (the
    subscriber connection is down, or before ``start``/after ``stop``).  The
    listener hears of every change between ``start`` and ``stop``, the first
    connection included: the broker subscribes every subscribed document and
    THEN calls ``listener.on_availability(True)``; each loss of the subscriber
    adds one to ``outages`` and calls ``listener.on_availability(False)``.
    After ``on_availability(True)`` the instance must assume it missed
    messages for every subscribed document and catch up from the operation
    log.  A first connection that fails is not an outage (nothing was lost):
    ``available`` stays ``False`` and the broker keeps trying.

Publishing
    ``publish`` returns ``True`` once the message was handed to the transport
    (for Redis: the server acknowledged the PUBLISH).  It returns ``False`` when
    it could not confirm that within a short bound (about a second), and never
    raises for a transport failure.  ``True`` does not mean anyone received
    it.  Implementations buffer a bounded number of outgoing messages and
    return ``False`` beyond that.

Subscribing
    ``subscribe`` and ``unsubscribe`` are idempotent and keep no count: core
    counts a document's local members.  Subscribing twice is subscribing once;
    unsubscribing a document that is not subscribed does nothing.  When
    ``subscribe`` returns while ``available`` is true, the subscription is in
    place: every message published after that is delivered.  While the broker
    is unavailable the subscription is recorded and made on recovery (which
    ends with ``on_availability(True)``).  Neither raises for a transport
    failure.

Callbacks
    ``BrokerListener`` methods are called on the event loop thread, one at a
    time, never from inside ``publish``, ``subscribe`` or ``unsubscribe``.  An
    exception a listener raises is logged and otherwise ignored.

Instance messages
    ``publish_instances`` sends an ``InstanceMessage`` (no document) to every
    other started instance, whatever it subscribes, or, for an ``InfoReply``,
    to its ``target`` instance only.  The same at-most-once delivery, no
    self-delivery, no order with document messages.  It returns how many
    instances the transport handed it to (for Redis the count PUBLISH
    reports, this instance's own subscriber not counted; 0 when it could not
    publish), so a caller that waits for answers knows how many to expect.
    They reach ``listener.on_instance_message``.  The server API uses them to
    act on every instance (``DisconnectMessage``) and to gather what every
    instance has open (``InfoRequest``/``InfoReply``).

Messages are immutable dataclasses.  Every implementation passes them through
the wire format below (``encode``/``decode``), even in memory, so that a value
behaves the same whatever the broker: ``PresenceMessage.state`` must be a JSON
value (``dict`` with ``str`` keys, ``list``, ``str``, ``int`` of at most 64
bits, ``float``, ``bool``, ``None``) and arrives as a fresh copy, with tuples
turned into lists.  ``publish`` raises ``MessageEncodingError`` (a bug of the
caller) for anything else.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, assert_never

import orjson

from cowrite.errors import LocalError
from cowrite.records import record

PresenceKind = Literal["joined", "left", "state"]


@record
class OperationMessage:
    """Operation ``seq`` of a document was committed by ``user_id``.

    ``payload`` is the operation as the store holds it: opaque bytes, carried
    byte for byte (any size up to a few hundred KiB).
    """

    document_id: str
    origin: str
    seq: int
    user_id: str
    client_op_id: str | None
    payload: bytes


@record
class PresenceMessage:
    """A user joined or left a document, or changed their presence ``state``.

    ``state`` is a JSON value (see the module docstring), ``None`` allowed.
    """

    document_id: str
    origin: str
    user_id: str
    name: str
    kind: PresenceKind
    state: Any


@dataclass(frozen=True, slots=True)
class RoleMessage:
    """A user's role on a document changed; ``None`` means it was revoked."""

    document_id: str
    origin: str
    user_id: str
    role: str | None


BrokerMessage = OperationMessage | PresenceMessage | RoleMessage


@dataclass(frozen=True, slots=True)
class DisconnectMessage:
    """Disconnect every connection of ``user_id`` (every instance acts on its own).

    ``code`` and ``reason`` are told to the clients before they are cut off."""

    origin: str
    user_id: str
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class InfoRequest:
    """Every instance answers ``origin`` with an ``InfoReply`` carrying ``request_id``."""

    origin: str
    request_id: str


@dataclass(frozen=True, slots=True)
class InfoReply:
    """What instance ``origin`` has open, for the ``InfoRequest`` of ``target``.

    ``documents`` maps a document id to its local members (at most a bounded
    number of documents; ``document_count`` is the true total)."""

    origin: str
    target: str
    request_id: str
    connections: int
    document_count: int
    documents: dict[str, int]


InstanceMessage = DisconnectMessage | InfoRequest | InfoReply
AnyMessage = BrokerMessage | InstanceMessage


class BrokerListener(Protocol):
    """What a broker calls back into (core implements it)."""

    def on_message(self, message: BrokerMessage) -> None:
        """A message from another instance for a subscribed document.

        Called on the event loop, never concurrently, never re-entrantly.
        """
        ...

    def on_instance_message(self, message: InstanceMessage) -> None:
        """A message from another instance for every instance (or for this one).

        Called on the event loop, never concurrently, never re-entrantly.
        """
        ...

    def on_availability(self, available: bool) -> None:
        """The broker lost (``False``) or regained (``True``) its subscriber.

        After ``True`` every subscribed document is subscribed again, and
        messages published while it was down are lost: catch up from the log.
        """
        ...


class Broker(Protocol):
    """Moves ``BrokerMessage`` values between instances.

    See the module docstring for the guarantees.  Lifecycle: ``start`` once,
    then any of the other methods, then ``stop`` (idempotent).  After ``stop``,
    ``publish`` returns ``False`` and ``subscribe``/``unsubscribe`` do nothing.
    """

    @property
    def instance_id(self) -> str:
        """This instance's id: the ``origin`` of what it publishes."""
        ...

    @property
    def available(self) -> bool:
        """Whether this instance can receive now (its subscriber is connected)."""
        ...

    @property
    def outages(self) -> int:
        """How many times the subscriber was lost since ``start``."""
        ...

    async def start(self, listener: BrokerListener) -> None:
        """Connect and begin delivering to ``listener``.

        Does not raise when the transport is unreachable: ``available`` stays
        ``False`` and the broker keeps trying.  Raises ``LocalError`` if called
        twice.
        """
        ...

    async def stop(self) -> None:
        """Stop delivering, fail pending publishes, release every resource.

        Idempotent.  Does not call ``on_availability``.  No task of the broker
        outlives this call.
        """
        ...

    async def subscribe(self, document_id: str) -> None:
        """Receive the document's messages from now on (see *Subscribing*)."""
        ...

    async def unsubscribe(self, document_id: str) -> None:
        """Stop receiving the document's messages, effective immediately."""
        ...

    async def publish(self, message: BrokerMessage) -> bool:
        """Send ``message`` to the other instances subscribed to its document.

        ``True`` when handed over, ``False`` when that could not be confirmed
        within the implementation's short timeout.  ``message.origin`` must be
        this broker's ``instance_id`` (``LocalError`` otherwise).
        """
        ...

    async def publish_many(self, messages: Sequence[BrokerMessage]) -> int:
        """``publish`` for each message, in order, as one hand-over: the same
        guarantees (ordering as if ``publish`` had been called for each in turn),
        one wait for all of them.  Returns how many were handed over; the ones
        that were not are a suffix or all of them for a transport failure, but
        the caller may only rely on the count."""
        ...

    async def publish_instances(self, message: InstanceMessage) -> int:
        """Send ``message`` to every other instance, or to an ``InfoReply``'s
        ``target``.  Returns how many instances it was handed to (0 when it
        could not be published).  Never raises for a transport failure;
        ``LocalError`` for a foreign ``origin``."""
        ...

    async def ping(self) -> bool:
        """Whether the transport answers now.  Never raises, bounded in time."""
        ...


# --- the wire format ------------------------------------------------------------
#
# Shared by every implementation (and by every version of cowrite talking to one
# Redis, so change it only by adding a VERSION).  A frame is
#
#     b"cw"  version:u8  kind:u8  header_length:u32be  header  payload
#
# where header is a JSON object (short keys) and payload the raw operation bytes
# (empty for presence and role messages).  Binary-safe, no pickle, no base64.

MAGIC: Final = b"cw"
VERSION: Final = 1
_PREFIX = struct.Struct(">2sBBI")
_KIND_OPERATION: Final = ord("O")
_KIND_PRESENCE: Final = ord("P")
_KIND_ROLE: Final = ord("R")
_KIND_DISCONNECT: Final = ord("D")
_KIND_INFO_REQUEST: Final = ord("Q")
_KIND_INFO_REPLY: Final = ord("A")


class MessageEncodingError(LocalError):
    """A message cannot be encoded (its ``state`` is not a JSON value, say)."""


class MalformedMessage(ValueError):
    """Bytes received from the transport are not a frame this version reads."""


def check_origin(message: AnyMessage, instance_id: str) -> None:
    """Raise ``LocalError`` unless ``message`` was made by ``instance_id``."""
    if message.origin != instance_id:
        raise LocalError(
            f"message origin {message.origin!r} is not this broker's instance id {instance_id!r}"
        )


def encode(message: AnyMessage) -> bytes:
    """The wire frame of ``message``.  Raises ``MessageEncodingError``."""
    payload = b""
    header: dict[str, Any]
    if isinstance(message, OperationMessage):
        kind = _KIND_OPERATION
        header = {
            "d": message.document_id,
            "o": message.origin,
            "s": message.seq,
            "u": message.user_id,
            "c": message.client_op_id,
        }
        payload = message.payload
    elif isinstance(message, PresenceMessage):
        kind = _KIND_PRESENCE
        header = {
            "d": message.document_id,
            "o": message.origin,
            "u": message.user_id,
            "n": message.name,
            "k": message.kind,
            "st": message.state,
        }
    elif isinstance(message, RoleMessage):
        kind = _KIND_ROLE
        header = {
            "d": message.document_id,
            "o": message.origin,
            "u": message.user_id,
            "r": message.role,
        }
    elif isinstance(message, DisconnectMessage):
        kind = _KIND_DISCONNECT
        header = {"o": message.origin, "u": message.user_id, "c": message.code, "m": message.reason}
    elif isinstance(message, InfoRequest):
        kind = _KIND_INFO_REQUEST
        header = {"o": message.origin, "q": message.request_id}
    elif isinstance(message, InfoReply):
        kind = _KIND_INFO_REPLY
        header = {
            "o": message.origin,
            "t": message.target,
            "q": message.request_id,
            "n": message.connections,
            "dn": message.document_count,
            "ds": message.documents,
        }
    else:
        assert_never(message)
    try:
        head = orjson.dumps(header)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise MessageEncodingError(f"cannot encode {type(message).__name__}: {exc}") from exc
    return b"".join((_PREFIX.pack(MAGIC, VERSION, kind, len(head)), head, payload))


def decode(frame: bytes) -> AnyMessage:
    """The message a frame holds.  Raises ``MalformedMessage``."""
    if len(frame) < _PREFIX.size:
        raise MalformedMessage("frame shorter than its prefix")
    magic, version, kind, length = _PREFIX.unpack_from(frame)
    if magic != MAGIC or version != VERSION:
        raise MalformedMessage(f"unknown frame magic/version {magic!r}/{version}")
    start = _PREFIX.size
    if start + length > len(frame):
        raise MalformedMessage("header runs past the end of the frame")
    try:
        header = orjson.loads(memoryview(frame)[start : start + length])
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MalformedMessage("header is not a JSON object")
    payload = frame[start + length :]
    if kind in (_KIND_DISCONNECT, _KIND_INFO_REQUEST, _KIND_INFO_REPLY):
        if payload:
            raise MalformedMessage("payload on a message kind that has none")
        return _decode_instance(kind, header)
    document_id, origin = _str(header, "d"), _str(header, "o")
    if kind == _KIND_OPERATION:
        seq = header.get("s")
        if type(seq) is not int:
            raise MalformedMessage("operation seq is not an integer")
        return OperationMessage(
            document_id=document_id,
            origin=origin,
            seq=seq,
            user_id=_str(header, "u"),
            client_op_id=_optional_str(header, "c"),
            payload=payload,
        )
    if payload:
        raise MalformedMessage("payload on a message kind that has none")
    if kind == _KIND_PRESENCE:
        presence_kind = header.get("k")
        if presence_kind == "joined" or presence_kind == "left" or presence_kind == "state":
            return PresenceMessage(
                document_id=document_id,
                origin=origin,
                user_id=_str(header, "u"),
                name=_str(header, "n"),
                kind=presence_kind,
                state=header.get("st"),
            )
        raise MalformedMessage(f"unknown presence kind {presence_kind!r}")
    if kind == _KIND_ROLE:
        return RoleMessage(
            document_id=document_id,
            origin=origin,
            user_id=_str(header, "u"),
            role=_optional_str(header, "r"),
        )
    raise MalformedMessage(f"unknown message kind {kind}")


def _decode_instance(kind: int, header: dict[str, Any]) -> InstanceMessage:
    origin = _str(header, "o")
    if kind == _KIND_DISCONNECT:
        return DisconnectMessage(origin, _str(header, "u"), _str(header, "c"), _str(header, "m"))
    if kind == _KIND_INFO_REQUEST:
        return InfoRequest(origin, _str(header, "q"))
    connections, count, documents = header.get("n"), header.get("dn"), header.get("ds")
    if type(connections) is not int or type(count) is not int:
        raise MalformedMessage("info counts are not integers")
    if not isinstance(documents, dict) or any(type(v) is not int for v in documents.values()):
        raise MalformedMessage("info documents is not an object of integers")
    return InfoReply(origin, _str(header, "t"), _str(header, "q"), connections, count, documents)


def _str(header: dict[str, Any], key: str) -> str:
    value = header.get(key)
    if not isinstance(value, str):
        raise MalformedMessage(f"header field {key!r} is not a string")
    return value


def _optional_str(header: dict[str, Any], key: str) -> str | None:
    value = header.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedMessage(f"header field {key!r} is not a string or null")
    return value
