"""In-process presence for a single instance (the embedded default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cowrite.backends.presence import PresenceEntry


class _User:
    __slots__ = ("connections", "name", "state")

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections: set[str] = set()
        self.state: Any = None


class MemoryPresence:
    """Implements ``PresenceStore`` in this process's memory.

    Everything happens on the event loop thread without awaiting, so each call
    is atomic.  Nothing is kept for a document nobody is in.
    """

    def __init__(self) -> None:
        self._docs: dict[str, dict[str, _User]] = {}

    async def join(self, document_id: str, user_id: str, name: str, connection_id: str) -> bool:
        users = self._docs.setdefault(document_id, {})
        user = users.get(user_id)
        first = user is None
        if user is None:
            user = users[user_id] = _User(name)
        user.connections.add(connection_id)
        return first

    async def join_and_roster(
        self, document_id: str, user_id: str, name: str, connection_id: str
    ) -> tuple[bool, list[PresenceEntry]]:
        first = await self.join(document_id, user_id, name, connection_id)
        return first, await self.roster(document_id)

    async def join_and_roster_many(
        self, joins: Sequence[tuple[str, str, str, str]]
    ) -> list[tuple[bool, list[PresenceEntry]]]:
        return [await self.join_and_roster(*join) for join in joins]

    async def leave_many(self, leaves: Sequence[tuple[str, str, str]]) -> list[bool]:
        return [await self.leave(*leave) for leave in leaves]

    async def leave(self, document_id: str, user_id: str, connection_id: str) -> bool:
        users = self._docs.get(document_id)
        if users is None:
            return False
        user = users.get(user_id)
        if user is None or connection_id not in user.connections:
            return False
        user.connections.discard(connection_id)
        if user.connections:
            return False
        del users[user_id]
        if not users:
            del self._docs[document_id]
        return True

    async def set_state(self, document_id: str, user_id: str, state: Any) -> None:
        user = self._docs.get(document_id, {}).get(user_id)
        if user is not None:
            user.state = state

    async def roster(self, document_id: str) -> list[PresenceEntry]:
        users = self._docs.get(document_id, {})
        return [PresenceEntry(uid, u.name, u.state) for uid, u in sorted(users.items())]

    async def start(self) -> None:
        pass

    async def stop(self) -> list[tuple[str, str]]:
        """One instance: nobody else to tell; everything is forgotten."""
        gone = [(doc, user) for doc, users in self._docs.items() for user in users]
        self._docs.clear()
        return gone

    async def reap(self) -> list[tuple[str, str]]:
        """No other instances can die here."""
        return []

    def document_count(self) -> int:
        return len(self._docs)
