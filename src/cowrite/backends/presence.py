"""Presence: who is in each document right now.

Interface only; implementations: ``presence_memory`` (one instance) and, for
several instances, a Redis one.  core/ imports this module, never an
implementation.

Guarantees every implementation gives
=====================================

Counting
    A user may be in a document through several connections (tabs, devices,
    instances).  ``join`` returns ``True`` only for the user's first connection
    in the document and ``leave`` only for the last one, so ``user-joined`` and
    ``user-left`` are announced once per user however many tabs they open.

Atomicity
    ``join`` and ``leave`` are atomic with respect to each other: two
    connections of one user joining at once produce exactly one ``True``.

Staleness
    ``roster`` may lag behind ``join``/``leave`` made on other instances by the
    implementation's propagation delay; entries of an instance that died
    without leaving are removed by ``reap`` within the implementation's stated
    bound (Redis: ``ttl``, 30 s by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    """One user in a document: ``state`` is their latest presence state (cursor,
    selection, status; small JSON, not persisted) or ``None``."""

    user_id: str
    name: str
    state: Any = None


class PresenceStore(Protocol):
    async def join(self, document_id: str, user_id: str, name: str, connection_id: str) -> bool:
        """Record the connection; ``True`` if it is the user's first in the document."""
        ...

    async def join_and_roster(
        self, document_id: str, user_id: str, name: str, connection_id: str
    ) -> tuple[bool, list[PresenceEntry]]:
        """``join``, then ``roster`` (which includes the joiner), as one step: one
        round trip where the store is remote, and no change by others between
        the two."""
        ...

    async def join_and_roster_many(
        self, joins: Sequence[tuple[str, str, str, str]]
    ) -> list[tuple[bool, list[PresenceEntry]]]:
        """``join_and_roster(document_id, user_id, name, connection_id)`` for
        each tuple, in order, in one round trip where the store is remote: the
        joins that arrive together.  Each answer is what ``join_and_roster``
        would have returned at that point of the sequence."""
        ...

    async def leave(self, document_id: str, user_id: str, connection_id: str) -> bool:
        """Forget the connection; ``True`` if it was the user's last in the document."""
        ...

    async def leave_many(self, leaves: Sequence[tuple[str, str, str]]) -> list[bool]:
        """``leave(document_id, user_id, connection_id)`` for each tuple, in
        order, in one round trip where the store is remote: the leaves that
        arrive together (a mass disconnect).  Each answer is what ``leave``
        would have returned at that point of the sequence."""
        ...

    async def set_state(self, document_id: str, user_id: str, state: Any) -> None:
        """Remember the user's latest presence state (no-op if not present)."""
        ...

    async def roster(self, document_id: str) -> list[PresenceEntry]:
        """Everyone in the document, one entry per user, sorted by user id."""
        ...

    async def start(self) -> None:
        """Begin (connect, start any heartbeat)."""
        ...

    async def stop(self) -> list[tuple[str, str]]:
        """Say goodbye: forget this instance's connections.  Returns the
        (document, user) pairs that thereby left their document entirely."""
        ...

    async def reap(self) -> list[tuple[str, str]]:
        """Forget the connections of instances that died without saying
        goodbye; returns the (document, user) pairs that thereby left entirely.
        Across instances each pair is returned to exactly one caller."""
        ...
