"""Recovery records: what a disconnected socket needs to be resumed elsewhere.

Interface only; implementations: ``recovery_memory`` (one instance) and
``recovery_redis`` (several instances).  core/ imports this module, never an
implementation.

Socket.IO's connection-state recovery (socket.io-protocol v5, CONNECT with
``{pid, offset}``) lets a client that lost its connection resume its socket:
same sid, same rooms, the events it missed.  A *record* is keyed by the
socket's private id ``pid`` (a secret only that client knows) and says whose
socket it was, its sid, and for each document it had joined the last
operation ``seq`` the client is known to have.  The instance that owns the
socket keeps the record current; any instance can claim it when the client
comes back.

Guarantees every implementation gives
=====================================

Expiry
    A record lives ``ttl`` seconds after it was last saved (each save gives
    its own ``ttl``); after that ``claim`` does not see it.

Ownership (epochs)
    ``claim`` atomically reads a record and raises its ``epoch`` by one: the
    caller is the new owner.  A ``save`` whose record carries a lower epoch
    than the stored one is ignored, so an old owner (an instance that has not
    yet noticed that its socket is gone) can never overwrite what the new
    owner wrote.  ``discard`` removes a record only when the epochs match.

Atomicity
    ``claim``, and each record of ``save``, are atomic with respect to each
    other; ``save`` of several records is not a transaction (each record is
    independent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RecoveryRecord:
    """One socket as it can be resumed.

    ``documents`` maps each document the socket had joined (and finished
    catching up in) to the last ``seq`` its client is known to have.
    """

    sid: str
    user_id: str
    epoch: int = 0
    documents: dict[str, int] = field(default_factory=dict)


class RecoveryStore(Protocol):
    async def save(self, items: Sequence[tuple[str, RecoveryRecord, float]]) -> None:
        """For each ``(pid, record, ttl)``: store ``record`` for ``ttl`` seconds,
        unless the stored one has a higher epoch (then leave it)."""
        ...

    async def claim(self, pid: str, ttl: float) -> RecoveryRecord | None:
        """The record with its epoch raised by one (stored so, expiring in
        ``ttl`` seconds), or ``None`` if there is none or it expired."""
        ...

    async def discard(self, pid: str, epoch: int) -> None:
        """Remove the record if its epoch is ``epoch``."""
        ...

    async def start(self) -> None:
        """Connect (if remote)."""
        ...

    async def stop(self) -> None:
        """Disconnect; records stay (other instances may claim them)."""
        ...
