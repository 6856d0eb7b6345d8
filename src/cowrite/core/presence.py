"""Who is in a document, and what each of them shows: the presence relay.

Between this instance's members, the shared ``PresenceStore`` (every
instance's connections) and the other instances (the broker).

Invariant: the store holds one entry per joined member (by the connection's
presence id) until that member leaves, and a user is announced
``user-joined`` when their first connection in a document enters and
``user-left`` when their last one leaves, on whichever instance that was
(the store counts across instances; a dead instance's users are reaped).
A leave waits for its member's join to finish, so a connection is never left
behind in the store.  State updates are coalesced: each member's latest
state reaches its room at most once per ``presence_interval``.  Presence
never touches a document's operations or their order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from cowrite.backends.broker import BrokerMessage, PresenceMessage
from cowrite.backends.presence import PresenceEntry, PresenceStore
from cowrite.core.batch import Coalescer
from cowrite.core.gateway import ClientGateway
from cowrite.core.members import Conn, Member
from cowrite.core.sequencer import Room
from cowrite.core.settings import CollabSettings

# The collaboration service's logger: its name is in every line it logs.
log = logging.getLogger("cowrite.collab")


def roster_of(entries: list[PresenceEntry]) -> list[dict[str, Any]]:
    """The roster as clients see it."""
    return [{"userId": e.user_id, "name": e.name, "state": e.state} for e in entries]


def _presence_joined(member: Member) -> None:
    """The member's presence join is over: release a leave waiting for it."""
    waiting, member.presence_joining = member.presence_joining, False
    if isinstance(waiting, asyncio.Future) and not waiting.done():
        waiting.set_result(None)


class PresenceRelay:
    def __init__(
        self,
        *,
        store: PresenceStore,
        gateway: ClientGateway,
        settings: CollabSettings,
        rooms: dict[str, Room],
        publish: Callable[[BrokerMessage], None],
        instance_id: str,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.settings = settings
        # The sequencer's open rooms (their members are who is here).
        self._rooms = rooms
        self._publish = publish
        self.instance_id = instance_id
        # Members whose state changed since the last flush.
        self.dirty: set[Member] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        # Joins that arrive together share one presence pipeline (core/batch.py).
        self._joins: Coalescer[tuple[str, str, str, str], tuple[bool, list[PresenceEntry]]] = (
            Coalescer(store.join_and_roster_many)
        )
        # And so do leaves (a mass disconnect: one pipeline, not a script
        # call per connection).
        self._leaves: Coalescer[tuple[str, str, str], bool] = Coalescer(self._leave_many)
        # The instance is going away (``stop_leaving``).
        self._leaving_stopped = False

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(
            self._reap_loop(), name="presence-reaper"
        )

    def stop_leaving(self) -> None:
        """The instance is going away: leaves still waiting for a batch are
        answered "not the user's last" without a call, since the goodbye
        (``PresenceStore.stop``) removes every connection of the instance and
        reports who left for good.  Without this, leaves queued behind a mass
        disconnect's batch ran after the presence had stopped, each logging
        a failure."""
        self._leaving_stopped = True

    async def _leave_many(self, leaves: list[tuple[str, str, str]]) -> list[bool]:
        if self._leaving_stopped:
            return [False] * len(leaves)
        return await self.store.leave_many(leaves)

    def cancel(self) -> None:
        for task in (self._flusher, self._reaper):
            if task is not None:
                task.cancel()
        self._joins.cancel()
        self._leaves.cancel()

    # -- joining and leaving -------------------------------------------------

    async def join(self, member: Member) -> tuple[bool, list[PresenceEntry]]:
        """Join the shared presence (maybe in a batch with other joins); a
        leave that runs meanwhile waits for it (``leave``)."""
        identity = member.conn.identity
        member.presence_joining = True
        try:
            return await self._joins.run(
                (member.document_id, identity.user_id, identity.name, member.conn.presence_id)
            )
        finally:
            _presence_joined(member)

    def arrived(self, conn: Conn, doc_id: str) -> None:
        """The connection's user is now in the document (their first connection
        there): tell the room, here and on the other instances."""
        identity = conn.identity
        self._announce_joined(doc_id, identity.user_id, identity.name, exclude=conn.sid)
        self._publish(
            PresenceMessage(
                doc_id, self.instance_id, identity.user_id, identity.name, "joined", None
            )
        )

    def forget(self, member: Member) -> None:
        """The member is gone: no state update of its is sent any more."""
        self.dirty.discard(member)

    async def leave(self, member: Member) -> None:
        """Remove the member's connection from the shared presence (after its
        join, if that is still under way); the user's last one there leaves."""
        conn = member.conn
        doc_id = member.document_id
        try:
            if member.presence_joining is True:
                member.presence_joining = asyncio.get_running_loop().create_future()
            if isinstance(member.presence_joining, asyncio.Future):
                await member.presence_joining
            last = await self._leaves.run((doc_id, conn.identity.user_id, conn.presence_id))
        except Exception:
            log.exception("presence leave failed")
            return
        if last:
            self._announce_left(doc_id, conn.identity.user_id)
            self._publish(
                PresenceMessage(
                    doc_id,
                    self.instance_id,
                    conn.identity.user_id,
                    conn.identity.name,
                    "left",
                    None,
                )
            )

    def departures(self, pairs: list[tuple[str, str]]) -> None:
        """Users who left documents for good (this instance is going away)."""
        for doc_id, user_id in pairs:
            self._announce_left(doc_id, user_id)
            self._publish(PresenceMessage(doc_id, self.instance_id, user_id, user_id, "left", None))

    async def roster(self, doc_id: str) -> list[dict[str, Any]]:
        """Who is in the document, on every instance."""
        return roster_of(await self.store.roster(doc_id))

    # -- state updates -------------------------------------------------------

    def update(self, member: Member, state: Any) -> None:
        """The member's new state, sent with the next flush."""
        member.presence_state = state
        member.presence_dirty = True
        self.dirty.add(member)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Coalesce presence: every ``presence_interval``, send each member's latest state."""
        while self.dirty:
            await asyncio.sleep(self.settings.presence_interval)
            dirty, self.dirty = self.dirty, set()
            for member in dirty:
                if not member.presence_dirty:
                    continue
                member.presence_dirty = False
                if member.conn.docs.get(member.document_id) is not member:
                    continue
                user_id = member.conn.identity.user_id
                try:
                    await self.store.set_state(member.document_id, user_id, member.presence_state)
                except Exception:
                    log.exception("presence update failed")
                prepared = self.gateway.prepare(
                    "presence",
                    {
                        "documentId": member.document_id,
                        "userId": user_id,
                        "state": member.presence_state,
                    },
                )
                self._to_room(member.document_id, prepared, exclude=member.sid)
                self._publish(
                    PresenceMessage(
                        member.document_id,
                        self.instance_id,
                        user_id,
                        member.conn.identity.name,
                        "state",
                        member.presence_state,
                    )
                )

    # -- other instances -----------------------------------------------------

    def receive(self, message: PresenceMessage) -> None:
        """Another instance's presence message for an open document."""
        if message.kind == "joined":
            self._announce_joined(message.document_id, message.user_id, message.name)
        elif message.kind == "left":
            self._announce_left(message.document_id, message.user_id)
        else:
            prepared = self.gateway.prepare(
                "presence",
                {
                    "documentId": message.document_id,
                    "userId": message.user_id,
                    "state": message.state,
                },
            )
            self._to_room(message.document_id, prepared)

    async def _reap_loop(self) -> None:
        """Users of instances that died without saying goodbye leave the roster."""
        reap = getattr(self.store, "reap", None)
        if reap is None:
            return
        while True:
            await asyncio.sleep(self.settings.presence_reap_interval)
            try:
                gone: list[tuple[str, str]] = await reap()
            except Exception:
                log.exception("presence reap failed")
                continue
            for doc_id, user_id in gone:
                self._announce_left(doc_id, user_id)
                self._publish(
                    PresenceMessage(doc_id, self.instance_id, user_id, user_id, "left", None)
                )

    def _announce_joined(
        self, doc_id: str, user_id: str, name: str, exclude: str | None = None
    ) -> None:
        prepared = self.gateway.prepare(
            "user-joined", {"documentId": doc_id, "userId": user_id, "name": name}
        )
        self._to_room(doc_id, prepared, exclude=exclude)

    def _announce_left(self, doc_id: str, user_id: str) -> None:
        prepared = self.gateway.prepare("user-left", {"documentId": doc_id, "userId": user_id})
        self._to_room(doc_id, prepared)

    def _to_room(self, doc_id: str, prepared: object, exclude: str | None = None) -> None:
        room = self._rooms.get(doc_id)
        if room is None:
            return
        send = self.gateway.send_prepared
        for sid in room.members:
            if sid != exclude:
                send(sid, prepared)
