"""The one exception tree of cowrite.

::

    CowriteError
    ├── LocalError            we (the application or cowrite itself) misused an API
    │   └── ConfigError       settings that cannot work
    └── RemoteError           the peer sent something we cannot accept
        ├── ProtocolError     malformed Engine.IO / Socket.IO input; carries what to do:
        │                     the HTTP status for a request, or the close reason
        │                     for a session (see ``CloseReason``)
        └── ConnectionRefused raised by a connect handler to refuse a namespace
                              connection; becomes a CONNECT_ERROR packet

A ``RemoteError`` never escapes the protocol core: the session that received the
bad input is closed with the reason the error carries.  A ``LocalError`` is a bug
in the caller and is allowed to propagate.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class CloseReason(StrEnum):
    """Why an Engine.IO session ended.  Values are the strings Node's engine.io uses."""

    TRANSPORT_CLOSE = "transport close"
    TRANSPORT_ERROR = "transport error"
    PING_TIMEOUT = "ping timeout"
    PARSE_ERROR = "parse error"
    FORCED_CLOSE = "forced close"
    CLIENT_CLOSE = "client close"  # the client sent an Engine.IO CLOSE packet
    SERVER_SHUTDOWN = "server shutting down"
    SLOW_CONSUMER = "slow consumer"
    CONNECT_TIMEOUT = "connect timeout"
    PAYLOAD_TOO_LARGE = "payload too large"


class CowriteError(Exception):
    """Base of every error cowrite raises on purpose."""


class LocalError(CowriteError):
    """The caller misused an API (a bug on our side, not the peer's)."""


class ConfigError(LocalError):
    """Settings that cannot work together."""


class RemoteError(CowriteError):
    """The peer sent input we cannot accept."""


class ProtocolError(RemoteError):
    """Malformed protocol input.

    ``http_status`` is what a request carrying it gets back; ``close_reason`` is
    the reason its session is closed with (``None`` when the session survives,
    as for a request that names an unknown session).
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int = 400,
        close_reason: CloseReason | None = CloseReason.PARSE_ERROR,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.close_reason = close_reason


class ConnectionRefused(RemoteError):
    """Raised by a namespace connect handler to refuse the connection.

    The client receives CONNECT_ERROR ``{"message": message, "data": data}``
    (``data`` omitted when ``None``), as Socket.IO v5 section "CONNECT_ERROR" says.
    """

    def __init__(self, message: str = "Connection refused", data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
