"""``ClientSettings``: the client's one frozen, keyword-only settings object."""

from __future__ import annotations

from dataclasses import dataclass

from cowrite.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """Timing and limits of one ``CowriteClient`` (seconds, counts, bytes).

    The reconnection defaults meet ADR-003's "reconnection time < 2 seconds"
    for a single drop (the first retry comes within ``backoff_base``) while a
    server restart seen by many clients spreads their retries over
    ``[0, min(cap, base * 2**n)]`` (full jitter, no synchronised waves).
    """

    #: Upper bound of the first retry's delay; the bound doubles per failed attempt.
    backoff_base: float = 0.25
    #: The bound never exceeds this.
    backoff_cap: float = 10.0
    #: A connection that stayed up this long resets the attempt count after it drops.
    backoff_reset_after: float = 5.0
    #: Bound of one connection attempt (TCP, WebSocket, Engine.IO open, namespace CONNECT).
    connect_timeout: float = 10.0
    #: ``connect()`` raises ``ConnectTimeout`` when no attempt has succeeded
    #: after this long (``None``: keep retrying).  Reconnections after a
    #: connection was up are not bounded by it.
    first_connect_timeout: float | None = 30.0
    #: An acknowledgement not received within this time means the connection is dead.
    ack_timeout: float = 30.0
    #: ``close()`` waits this long for pending submissions to be acknowledged.
    close_timeout: float = 5.0
    #: ``limit`` of each ``sync`` page while catching up.
    page_size: int = 100
    #: Edits sent and not yet acknowledged, per connection.
    max_in_flight: int = 32
    #: Largest WebSocket message accepted from the server (a page of operations).
    max_message_size: int = 64 * 1024 * 1024
    #: The server's Engine.IO path.
    path: str = "/socket.io/"

    def __post_init__(self) -> None:
        if not self.backoff_base > 0 or not self.backoff_cap >= self.backoff_base:
            raise ConfigError("need backoff_base > 0 and backoff_cap >= backoff_base")
        for name in ("connect_timeout", "ack_timeout", "close_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0")
        if self.first_connect_timeout is not None and not self.first_connect_timeout > 0:
            raise ConfigError("first_connect_timeout must be > 0 or None")
        if self.backoff_reset_after < 0:
            raise ConfigError("backoff_reset_after must be >= 0")
        if self.page_size < 1 or self.max_in_flight < 1 or self.max_message_size < 1024:
            raise ConfigError("page_size and max_in_flight must be >= 1, max_message_size >= 1024")
        if not self.path.startswith("/"):
            raise ConfigError("path must start with '/'")
