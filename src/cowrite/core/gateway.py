"""How core/ reaches clients: an interface the server adapter implements."""

from __future__ import annotations

from typing import Any, Protocol


class ClientGateway(Protocol):
    """Sending to connected clients, by socket id.  Never blocks."""

    def prepare(self, event: str, *args: Any) -> object:
        """Encode ``event`` once; the result can be sent to many sockets."""
        ...

    def send_prepared(self, sid: str, prepared: object) -> None:
        """Send an event made by ``prepare`` to one socket (no-op if gone)."""
        ...

    def send(self, sid: str, event: str, *args: Any) -> None:
        """Encode and send ``event`` to one socket."""
        ...

    def disconnect(self, sid: str) -> None:
        """Disconnect the socket from the server's side (the client does not
        reconnect on its own: Socket.IO's "io server disconnect")."""
        ...
