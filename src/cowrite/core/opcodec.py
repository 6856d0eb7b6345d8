"""How an opaque operation is kept in the log, byte for byte.

An operation is any JSON value, possibly holding binary parts (Socket.IO
binary attachments, as Yjs produces).  The server never interprets it; it only
has to store it and give back exactly the same value.  The stored form is::

    b"J" + <JSON>                                    no binary parts
    b"B" + <u32 n> + n * (<u32 len> + <bytes>) + <JSON with placeholders>

where a placeholder is ``{"_placeholder": true, "num": i}`` (the Socket.IO
convention, so nothing new to learn).  Integers are big-endian.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from cowrite.errors import ProtocolError
from cowrite.protocol.socketio import extract_binary

_U32 = struct.Struct(">I")


def _restore(value: Any, parts: list[bytes]) -> Any:
    if isinstance(value, list):
        return [_restore(v, parts) for v in value]
    if isinstance(value, dict):
        if value.get("_placeholder") is True and len(value) == 2:
            num = value.get("num")
            if isinstance(num, int) and 0 <= num < len(parts):
                return parts[num]
        return {k: _restore(v, parts) for k, v in value.items()}
    return value


def encode_operation(operation: Any) -> bytes:
    """Encode ``operation`` for storage.  Raises ``ProtocolError`` for values
    JSON cannot carry (for instance non-string keys or NaN)."""
    try:
        return b"J" + orjson.dumps(operation)
    except TypeError:
        pass  # binary parts inside (orjson refuses bytes): take the slow path
    parts: list[bytes] = []
    try:
        skeleton = orjson.dumps(extract_binary(operation, parts))
    except TypeError as exc:
        raise ProtocolError("operation is not a JSON value") from exc
    chunks = [b"B", _U32.pack(len(parts))]
    for part in parts:
        chunks.append(_U32.pack(len(part)))
        chunks.append(part)
    chunks.append(skeleton)
    return b"".join(chunks)


def decode_operation(stored: bytes) -> Any:
    """The operation exactly as it was given to ``encode_operation``."""
    kind = stored[:1]
    if kind == b"J":
        return orjson.loads(stored[1:])
    if kind != b"B":
        raise ValueError("unknown stored operation format")
    (count,) = _U32.unpack_from(stored, 1)
    offset = 5
    parts: list[bytes] = []
    for _ in range(count):
        (length,) = _U32.unpack_from(stored, offset)
        offset += 4
        parts.append(stored[offset : offset + length])
        offset += length
    return _restore(orjson.loads(stored[offset:]), parts)


def operation_size(stored: bytes) -> int:
    """The size the ``max_operation_bytes`` limit applies to: the operation's
    JSON plus its binary parts, without this format's framing bytes."""
    if stored[:1] == b"J":
        return len(stored) - 1
    count: int = _U32.unpack_from(stored, 1)[0]
    return len(stored) - 5 - 4 * count


def attachment_count(stored: bytes) -> int:
    """How many binary parts the operation carries (Socket.IO attachments)."""
    if stored[:1] != b"B":
        return 0
    count: int = _U32.unpack_from(stored, 1)[0]
    return count


def depth_within(stored: bytes, limit: int) -> bool:
    """Whether the operation nests at most ``limit`` arrays/objects deep.

    Counting brackets is a cheap upper bound: only an operation with at least
    ``limit`` of them is walked.
    """
    if stored.count(b"[") + stored.count(b"{") < limit:
        return True
    root = decode_operation(stored)
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, list | dict):
            if depth > limit:
                return False
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return True
