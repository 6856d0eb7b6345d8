"""The operation store: a durable, per-document ordered log of operations, plus
the table of who may do what to each document.

This module is the interface only.  Implementations live one per module
(``store_sqlite``, ``store_postgres``) and are checked by one shared contract
suite (``tests/contract/test_store_contract.py``); core/ imports this module and
never an implementation.

Guarantees every implementation gives
=====================================

Ordering
    Each document has its own sequence of operation numbers (``seq``): 1, 2, 3,
    ... with no gaps and no duplicates, however many processes or store
    instances append to that document at once.  Numbers are given in commit
    order, so no hole is ever visible: a read that sees ``seq`` n of a document
    also sees every smaller ``seq`` of it, and ``head`` is the last of them.
    ``read_ops`` returns operations in ``seq`` order.  There is no order between
    documents.

Atomicity
    ``append_batch`` is one transaction: either every request of the batch is
    stored (or recognised as a duplicate) or none is.  ``create_document``
    creates the document and grants its owner role in one transaction;
    ``create_documents`` does so for all its documents in one transaction.

Durability
    When ``append_batch``, ``create_document(s)``, ``set_role`` or ``revoke``
    returns, its effect has been committed and will be seen by every later call
    on any instance, including after a crash or a restart of the process.  What
    survives a power loss is stated by each implementation (SQLite: yes, with
    its default settings; PostgreSQL: yes when the server runs with
    ``fsync = on`` and ``synchronous_commit`` not ``off``).

Idempotency
    An ``AppendRequest`` with a ``client_op_id`` is stored at most once per
    ``(document_id, user_id, client_op_id)``.  Appending it again, in a later
    batch or later in the same batch, stores nothing and returns the ``seq`` it
    was first given with ``duplicate=True``.  A request whose ``client_op_id``
    is ``None`` is never deduplicated.

Unknown outcome
    If ``append_batch`` raises ``StoreUnavailable`` or is cancelled, the batch
    may or may not have been committed.  Sending the same requests again is
    safe for those that carry a ``client_op_id``: that is what the idempotency
    guarantee is for.

Read-your-writes
    A read started after a write returned sees that write, on the same instance
    and on any other instance of the same database.

Snapshots and compaction
    A snapshot is a client's opaque encoding of a document's state at one
    ``seq`` (bytes, e.g. a Yjs state update).  ``store_snapshot`` accepts it
    only for ``1 <= seq <= head`` and above the newest snapshot's ``seq``,
    checked and written in one transaction with the document's writers, so
    snapshots of a document have strictly increasing ``seq``.  ``compact``
    deletes old operations that the newest snapshot covers, and older
    snapshots; it never deletes the newest operation (so ``head`` stays what
    it was) nor one after the newest snapshot.  The log then starts after
    the deleted prefix: ``read_ops``/``read_page`` for a ``since`` below it
    return operations from the first kept one, which callers detect (the first
    returned ``seq`` is above ``since + 1``) and answer with the snapshot.

``plan_append`` states the sequencing and idempotency rules as a pure function;
implementations read the document heads and the already stored idempotency
keys under their write lock, call it, and write what it returns.

Documents are never deleted by this interface, so once ``create_document`` or
``document_exists`` has said a document exists, appending to it cannot fail
with ``UnknownDocument``.  Callers that group many clients' operations into one
``append_batch`` (group commit) should check existence before queueing: one
request for an unknown document makes the whole batch fail.

Errors
======

::

    StoreError                 base of every error a store raises on purpose
    ├── UnknownDocument        the document was never created
    ├── SnapshotRefused        store_snapshot's seq is beyond the head or not
    │                          above the newest snapshot (``code`` says which)
    ├── StoreNotOpen           used before open() or after close()
    └── StoreUnavailable       the database failed or could not be reached;
                               the outcome of a write is unknown (see above)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from cowrite.records import record


class StoreError(Exception):
    """Base of every error an operation store raises on purpose."""


class UnknownDocument(StoreError):
    """The document was never created with ``create_document``."""

    def __init__(self, document_id: str) -> None:
        super().__init__(f"unknown document: {document_id!r}")
        self.document_id = document_id


class SnapshotRefused(StoreError):
    """``store_snapshot`` refused the ``seq``: ``code`` is ``invalid_seq`` (below
    1 or beyond the document's head) or ``stale_snapshot`` (not above the
    newest snapshot's ``seq``, which is ``latest``)."""

    def __init__(self, code: str, message: str, latest: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.latest = latest


class StoreNotOpen(StoreError):
    """The store was used before ``open()`` or after ``close()``."""


class StoreUnavailable(StoreError):
    """The database failed or could not be reached.

    For a write, the outcome is unknown: it may have been committed.  The
    original exception is chained as ``__cause__``.
    """


class Role(StrEnum):
    """What a user may do to a document.  Stored by value."""

    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"


@record
class AppendRequest:
    """One operation to append to ``document_id`` on behalf of ``user_id``.

    ``client_op_id`` is the client's own id for the operation, unique per
    (document, user); it makes a retried append idempotent.  ``payload`` is
    stored and returned byte for byte.
    """

    document_id: str
    user_id: str
    client_op_id: str | None
    payload: bytes


@record
class AppendResult:
    """Where an ``AppendRequest`` landed.

    ``seq`` is the operation's number in its document.  ``duplicate`` is true
    when the operation had already been stored (same document, user and
    ``client_op_id``) and ``seq`` is the number it was first given.
    """

    seq: int
    duplicate: bool


@record
class StoredOp:
    """An operation as read back from the log.

    ``created_at`` is the time (seconds since the Unix epoch) at which the batch
    that stored it was committed, as the appending process's clock saw it.
    """

    document_id: str
    seq: int
    user_id: str
    client_op_id: str | None
    payload: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A document's state at ``seq`` as a client encoded it; ``data`` is stored
    and returned byte for byte.  ``created_at`` is when it was stored (seconds
    since the Unix epoch, the storing process's clock)."""

    document_id: str
    seq: int
    user_id: str
    data: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class Compaction:
    """What one ``compact`` call did: ``deleted_ops`` operations and
    ``deleted_snapshots`` older snapshots removed; ``kept_from`` is the first
    ``seq`` the log still holds (1 when nothing was ever deleted)."""

    document_id: str
    deleted_ops: int
    deleted_snapshots: int
    kept_from: int


def compaction_cutoff(snapshot_seq: int, head: int, keep_ops: int) -> int:
    """The highest ``seq`` ``compact`` may delete by count: ``keep_ops``
    operations are kept below the newest snapshot, and the newest operation
    (``head``) is always kept.  0 means nothing."""
    return max(0, min(snapshot_seq - keep_ops, head - 1))


def check_snapshot_seq(seq: int, head: int, latest: int) -> None:
    """``store_snapshot``'s rule: raise ``SnapshotRefused`` unless
    ``1 <= seq <= head`` and ``seq > latest`` (the newest snapshot's seq)."""
    if not 1 <= seq <= head:
        raise SnapshotRefused(
            "invalid_seq", f"seq {seq} is not between 1 and the head ({head})", latest
        )
    if seq <= latest:
        raise SnapshotRefused(
            "stale_snapshot", f"seq {seq} is not above the newest snapshot's ({latest})", latest
        )


#: The idempotency key of a request: (document_id, user_id, client_op_id).
IdempotencyKey = tuple[str, str, str]


def check_limit(limit: int) -> None:
    """``read_ops``/``read_page``'s rule for ``limit``, for every implementation."""
    if limit < 0:
        raise ValueError(f"limit must not be negative: {limit}")


def idempotency_key(request: AppendRequest) -> IdempotencyKey | None:
    """The key a request is deduplicated by; ``None`` when it has no client op id."""
    if request.client_op_id is None:
        return None
    return (request.document_id, request.user_id, request.client_op_id)


@record
class AppendPlan:
    """What one ``append_batch`` must write; see ``plan_append``.

    ``results`` answers the batch, ``new_ops`` pairs each request to store with
    its ``seq``, and ``heads`` maps each document whose head moved to its new
    head.
    """

    results: list[AppendResult]
    new_ops: list[tuple[AppendRequest, int]]
    heads: dict[str, int]


def plan_append(
    requests: Sequence[AppendRequest],
    heads: Mapping[str, int],
    stored: Mapping[IdempotencyKey, int],
) -> AppendPlan:
    """The sequencing and idempotency rules of ``append_batch``, as a pure function.

    ``heads`` holds the committed head of every document the batch names, read
    while the writer holds the documents' write lock; ``stored`` holds the
    ``seq`` of every already stored op whose idempotency key occurs in the
    batch.  Implementations read those two, call this, and write the plan in
    the same transaction.  Raises ``UnknownDocument`` for the first request
    whose document is missing from ``heads``.
    """
    current = dict(heads)
    seen = dict(stored)
    results: list[AppendResult] = []
    new_ops: list[tuple[AppendRequest, int]] = []
    for request in requests:
        head = current.get(request.document_id)
        if head is None:
            raise UnknownDocument(request.document_id)
        key = idempotency_key(request)
        if key is not None and key in seen:
            results.append(AppendResult(seq=seen[key], duplicate=True))
            continue
        head += 1
        current[request.document_id] = head
        if key is not None:
            seen[key] = head
        new_ops.append((request, head))
        results.append(AppendResult(seq=head, duplicate=False))
    moved = {doc: head for doc, head in current.items() if head != heads[doc]}
    return AppendPlan(results=results, new_ops=new_ops, heads=moved)


class OperationStore(Protocol):
    """The durable operation log and document access table.

    See the module docstring for the ordering, atomicity, durability and
    idempotency guarantees.  Every method but ``open``, ``close`` and ``ping``
    raises ``StoreNotOpen`` when the store is not open, and ``StoreUnavailable``
    when the database fails.
    """

    async def open(self) -> None:
        """Connect and bring the schema up to date (runs ``migrate``).

        Raises ``StoreUnavailable`` when the database cannot be reached and
        ``StoreError`` when it holds a schema newer than this code knows.
        """
        ...

    async def close(self) -> None:
        """Release connections and threads.  Idempotent.

        Writes that returned are durable; calls in flight may fail.
        """
        ...

    async def migrate(self) -> None:
        """Apply the schema migrations this database lacks.

        Idempotent, and safe when several processes migrate the same database
        at once: each migration is applied exactly once, in one transaction
        together with its row in the ``schema_version`` table.
        """
        ...

    async def ping(self) -> bool:
        """Whether the database answers a trivial query now.  Never raises."""
        ...

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Append ``requests`` (any documents) in ONE durable transaction.

        Returns one ``AppendResult`` per request, in order.  Requests are
        handled in order: a duplicate (see *Idempotency*) gets the ``seq`` it
        was first given and ``duplicate=True`` and stores nothing; any other
        request gets its document's next ``seq``.  Two requests for the same
        document in one batch get increasing numbers in batch order.

        Raises ``UnknownDocument`` if any request names a document that does not
        exist; then nothing of the batch is stored.  An empty batch returns
        ``[]``.
        """
        ...

    async def read_ops(self, document_id: str, since: int, limit: int) -> list[StoredOp]:
        """At most ``limit`` operations with ``seq > since``, in ``seq`` order.

        Pass the last ``seq`` seen as ``since`` to page through the log.  Raises
        ``UnknownDocument`` for a document that does not exist and
        ``ValueError`` for a negative ``limit``.
        """
        ...

    async def read_page(
        self, document_id: str, since: int, limit: int
    ) -> tuple[list[StoredOp], int]:
        """``read_ops`` and the document's head, read together (one statement
        or one snapshot): the head is at least the last returned ``seq``.
        What a join needs in one round trip.  Raises like ``read_ops``.
        """
        ...

    async def read_pages(
        self, pages: Sequence[tuple[str, int, int]]
    ) -> list[tuple[list[StoredOp], int] | None]:
        """``read_page(document_id, since, limit)`` for each triple, in one
        round trip: one answer per triple, in order, ``None`` for a document
        that does not exist (where ``read_page`` raises ``UnknownDocument``).
        Each answer is consistent on its own (its head is at least its last
        ``seq``); joins that arrive together read their pages with it.
        """
        ...

    async def head(self, document_id: str) -> int:
        """The highest ``seq`` of the document: 0 before its first operation.

        Raises ``UnknownDocument`` for a document that does not exist.
        """
        ...

    async def create_document(self, document_id: str, owner_id: str) -> bool:
        """Create an empty document and make ``owner_id`` its owner, atomically.

        Returns ``True`` if this call created it and ``False`` (changing
        nothing) if it already existed.  Of several concurrent calls for one
        document exactly one returns ``True``.
        """
        ...

    async def create_documents(self, documents: Sequence[tuple[str, str]]) -> set[str]:
        """``create_document`` for each ``(document_id, owner_id)`` pair, in one
        transaction: the ids this call created.

        A document that already exists is left as it is; of several pairs for
        one document only the first can create it.  All pairs take effect or
        none does.  Joins that arrive together create their documents with one
        commit instead of one each.
        """
        ...

    async def document_exists(self, document_id: str) -> bool:
        """Whether ``create_document`` has created the document."""
        ...

    async def get_role(self, document_id: str, user_id: str) -> Role | None:
        """The user's role on the document; ``None`` if they have none.

        Also ``None`` for a document that does not exist.
        """
        ...

    async def set_role(self, document_id: str, user_id: str, role: Role) -> None:
        """Grant ``role``, replacing any role the user had on the document.

        Raises ``UnknownDocument`` for a document that does not exist.  The store
        enforces no policy (e.g. that a document keeps an owner): core does.
        """
        ...

    async def revoke(self, document_id: str, user_id: str) -> bool:
        """Remove the user's role.  ``True`` if they had one, else ``False``."""
        ...

    async def list_roles(self, document_id: str) -> dict[str, Role]:
        """Every user's role on the document, keyed by user id.

        Raises ``UnknownDocument`` for a document that does not exist.
        """
        ...

    async def store_snapshot(
        self, document_id: str, seq: int, user_id: str, data: bytes
    ) -> Snapshot:
        """Store ``data`` as the document's state at ``seq``, durably.

        In one transaction with the document's appends: raises
        ``SnapshotRefused`` (``invalid_seq``) unless ``1 <= seq <= head``, and
        (``stale_snapshot``) unless ``seq`` is above the newest snapshot's.
        Raises ``UnknownDocument`` for a document that does not exist.
        """
        ...

    async def latest_snapshot(self, document_id: str) -> Snapshot | None:
        """The snapshot with the highest ``seq``, or ``None``.

        ``None`` also for a document that does not exist.
        """
        ...

    async def compact(self, document_id: str, *, keep_ops: int, keep_seconds: float) -> Compaction:
        """Delete what the newest snapshot makes unnecessary, in one transaction.

        An operation is deleted when its ``seq`` is at most
        ``compaction_cutoff(snapshot.seq, head, keep_ops)`` AND it was stored
        more than ``keep_seconds`` before the newest snapshot was; snapshots
        older than the newest are deleted.  Without a snapshot nothing is
        deleted.  Operations are deleted oldest first with no holes: the log
        stays one contiguous range ending at ``head``.  Raises
        ``UnknownDocument`` for a document that does not exist and
        ``ValueError`` for a negative ``keep_ops`` or ``keep_seconds``.
        """
        ...

    async def snapshot_documents(self) -> list[str]:
        """Every document that has at least one snapshot (what ``compact``
        can act on), in id order."""
        ...
