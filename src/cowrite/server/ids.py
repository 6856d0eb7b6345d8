"""Unguessable session ids without a system call each.

``secrets.token_urlsafe(15)`` reads the kernel's random source on every call;
a connection needs two ids (Engine.IO sid, the id that names it in logs and
Socket.IO), so a join storm paid two ``getrandom`` calls per connection.  Here
the same source is read 4 KiB at a time and cut into 15-byte ids: the same
120 random bits per id, base64url-encoded to 20 characters as before.
"""

from __future__ import annotations

import base64
import os

_ID_BYTES = 15
_CHUNK = _ID_BYTES * 273  # 4,095 bytes per read

_pool: list[str] = []
# A forked child never hands out its parent's ids (no getpid() per id).
os.register_at_fork(after_in_child=_pool.clear)


def new_id() -> str:
    """A fresh 20-character base64url id carrying 120 random bits."""
    if not _pool:
        text = base64.urlsafe_b64encode(os.urandom(_CHUNK)).decode()
        step = _ID_BYTES * 4 // 3
        _pool.extend(text[i : i + step] for i in range(0, len(text), step))
        _pool.reverse()
    return _pool.pop()
