"""Who may do what in a document, and how a change of role reaches them.

Roles are owner, editor and viewer (``backends/store.py``); a token's
``docs`` claim can grant one without the store (``docs_claim``).

Invariant: a member acts only with a role checked at most
``role_cache_seconds`` ago.  A stored role is re-read in the background for
members who edit, so an edit finds a fresh role in memory and never waits
for a query; only a role older than that (the store was unreachable) is
re-read before the action.  A role changed through ``share-document`` or the
server API is stored first, then enforced at once on every instance that
has the document open (the broker carries it): a member whose access is
revoked gets ``access-revoked`` and is removed.  A revocation made behind
the service's back (``cowrite revoke``) takes effect within
``role_cache_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cowrite.auth import Identity
from cowrite.backends.broker import BrokerMessage, RoleMessage
from cowrite.backends.store import OperationStore, Role, StoreError
from cowrite.core.batch import Coalescer
from cowrite.core.gateway import ClientGateway
from cowrite.core.members import Member
from cowrite.core.sequencer import Room
from cowrite.core.settings import CollabSettings
from cowrite.core.tasks import log_failure

# The collaboration service's logger: its name is in every line it logs.
log = logging.getLogger("cowrite.collab")

# The roles that may change a document (edits, snapshots).
WRITERS = (Role.OWNER, Role.EDITOR)
_ROLE_OF: dict[str, Role] = {role.value: role for role in Role}


class Access:
    def __init__(
        self,
        *,
        store: OperationStore,
        gateway: ClientGateway,
        settings: CollabSettings,
        clock: Callable[[], float],
        rooms: dict[str, Room],
        publish: Callable[[BrokerMessage], None],
        instance_id: str,
        remove: Callable[[Member], Awaitable[None]],
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.settings = settings
        self.clock = clock
        # The sequencer's open rooms (their members are who has access now).
        self._rooms = rooms
        self._publish = publish
        self.instance_id = instance_id
        # Takes a member out of its document (the service's leave).
        self._remove = remove
        # Members whose role comes from the store and who edited lately: their
        # roles are re-read in the background before they go stale, so an
        # edit never waits for a role query (see ``_refresh_loop``).  The
        # service's edit path adds to this very set.
        self.recent_editors: set[Member] = set()
        # Joins and resumes refused for want of a role (the access_denied metric).
        self.denied = 0
        self._refresher: asyncio.Task[None] | None = None
        self._known_docs: set[str] = set()
        # Claim-granted documents that joins open together are created in one
        # ``create_documents`` commit (core/batch.py).
        self._creating: dict[str, asyncio.Future[None]] = {}
        self._creates: Coalescer[tuple[str, str], None] = Coalescer(self._create_documents)

    def start(self) -> None:
        self._refresher = asyncio.get_running_loop().create_task(
            self._refresh_loop(), name="role-refresher"
        )

    def cancel(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        self._creates.cancel()

    # -- reading roles -------------------------------------------------------

    def claim_role(self, identity: Identity, doc_id: str) -> Role | None:
        if not self.settings.docs_claim:
            return None
        return _ROLE_OF.get(identity.docs.get(doc_id))  # type: ignore[arg-type]

    async def resolve_role(self, identity: Identity, doc_id: str, *, create: bool) -> Role | None:
        claimed = self.claim_role(identity, doc_id)
        if claimed is not None:
            # Documents are never deleted: once seen to exist, skip the query.
            if create and doc_id not in self._known_docs:
                # Creating is idempotent (nothing happens when it exists).
                await asyncio.shield(self._create_document(doc_id, identity.user_id))
            return claimed
        role = await self.store.get_role(doc_id, identity.user_id)
        if role is not None:
            return role
        if create and self.settings.auto_create and not await self.store.document_exists(doc_id):
            if await self.store.create_document(doc_id, identity.user_id):
                return Role.OWNER
            return await self.store.get_role(doc_id, identity.user_id)
        return None

    def _create_document(self, doc_id: str, owner_id: str) -> asyncio.Future[None]:
        """Done when ``doc_id`` exists (created with ``owner_id`` as its owner
        if it did not); concurrent joins of one document share one future."""
        future = self._creating.get(doc_id)
        if future is None:
            future = self._creating[doc_id] = asyncio.ensure_future(
                self._creates.run((doc_id, owner_id))
            )
            future.add_done_callback(lambda f: self._created(doc_id, f))
        return future

    def _created(self, doc_id: str, future: asyncio.Future[None]) -> None:
        del self._creating[doc_id]
        if not future.cancelled() and future.exception() is None:
            if len(self._known_docs) >= 100_000:
                self._known_docs.clear()
            self._known_docs.add(doc_id)

    async def _create_documents(self, documents: list[tuple[str, str]]) -> list[None]:
        await self.store.create_documents(documents)
        return [None] * len(documents)

    async def check_role(self, member: Member, allowed: tuple[Role, ...]) -> bool:
        """Enforce the role on every operation; re-read it when the cached one is old."""
        now = self.clock()
        if now - member.role_checked_at > self.settings.role_cache_seconds:
            role = await self.resolve_role(member.conn.identity, member.document_id, create=False)
            member.role_checked_at = now
            if role is None:
                await self.apply_role_change(member.document_id, member.conn.identity.user_id, None)
                return False
            member.role = role
        return member.role in allowed

    # -- changing roles ------------------------------------------------------

    async def change_role(self, doc_id: str, user_id: str, role: Role | None) -> None:
        """Store the user's new role (``None``: revoke) and enforce it at once
        here and, through the broker, on every instance that has the document
        open.  Raises ``StoreError`` (``UnknownDocument`` when granting on a
        document that does not exist)."""
        if role is None:
            await self.store.revoke(doc_id, user_id)
        else:
            await self.store.set_role(doc_id, user_id, role)
        await self.apply_role_change(doc_id, user_id, role)
        self._publish(RoleMessage(doc_id, self.instance_id, user_id, role.value if role else None))

    async def apply_role_change(self, doc_id: str, user_id: str, role: Role | None) -> None:
        """Enforce a new role on the user's open connections at once."""
        room = self._rooms.get(doc_id)
        if room is None:
            return
        now = self.clock()
        for member in list(room.members.values()):
            if member.conn.identity.user_id != user_id:
                continue
            if role is None and self.claim_role(member.conn.identity, doc_id) is None:
                self.gateway.send(member.sid, "error", "Access denied")
                self.gateway.send(member.sid, "access-revoked", {"documentId": doc_id})
                await self._remove(member)
            elif role is not None:
                member.role = role
                member.role_checked_at = now

    def receive(self, message: RoleMessage) -> None:
        """Another instance changed a role in an open document: enforce it here."""
        role = Role(message.role) if message.role in tuple(Role) else None
        task = asyncio.get_running_loop().create_task(
            self.apply_role_change(message.document_id, message.user_id, role)
        )
        task.add_done_callback(log_failure)

    async def _refresh_loop(self) -> None:
        """Re-read, a document at a time, the stored roles of members who edit,
        before their cached role is ``role_cache_seconds`` old: edits then find
        a fresh role in memory.  A revocation made behind our back (``cowrite
        revoke``) still takes effect within ``role_cache_seconds``; ones made
        through ``share-document`` (any instance) take effect at once."""
        period = self.settings.role_cache_seconds / 4
        while True:
            await asyncio.sleep(period)
            try:
                await self._refresh()
            except Exception:
                log.exception("role refresh failed")

    async def _refresh(self) -> None:
        now = self.clock()
        due: dict[str, list[Member]] = {}
        editors = list(self.recent_editors)
        self.recent_editors.clear()
        for member in editors:
            if now - member.role_checked_at >= self.settings.role_cache_seconds / 2:
                due.setdefault(member.document_id, []).append(member)
        for doc_id, members in due.items():
            try:
                roles = await self.store.list_roles(doc_id)
            except StoreError:
                continue  # the edits themselves re-check (and refuse) when stale
            for member in members:
                user_id = member.conn.identity.user_id
                if member.conn.docs.get(doc_id) is not member:
                    continue
                role = roles.get(user_id)
                member.role_checked_at = now
                if role is None:
                    await self.apply_role_change(doc_id, user_id, None)
                else:
                    member.role = role
