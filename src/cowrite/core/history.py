"""A document's history as clients read it: pages of the log, its head, snapshots.

Invariant: a page never has a hole.  It starts right after the position
asked for or, for a client that understands snapshots, with the newest
snapshot and the operations after it; a log compacted past that position is
``HistoryCompacted`` for a client without snapshots (never a page with a
gap).  A page carries at most ``MAX_PAGE_ATTACHMENTS`` binary attachments
(and at least one operation), and the reads that arrive while one is under
way share the next store call (core/batch.py).
"""

from __future__ import annotations

from typing import Any

from cowrite.backends.store import OperationStore, Snapshot, StoredOp, StoreError, UnknownDocument
from cowrite.core.batch import Coalescer
from cowrite.core.opcodec import attachment_count, decode_operation

# The official JavaScript client's default limit of binary attachments per packet.
MAX_PAGE_ATTACHMENTS = 10


def edit_body(
    document_id: str, seq: int, user_id: str, client_op_id: str | None, operation: Any
) -> dict[str, Any]:
    """One operation as clients see it, in ``remote-edit`` and in catch-up pages."""
    return {
        "documentId": document_id,
        "seq": seq,
        "userId": user_id,
        "clientOpId": client_op_id,
        "operation": operation,
    }


def op_dict(op: StoredOp) -> dict[str, Any]:
    return edit_body(
        op.document_id, op.seq, op.user_id, op.client_op_id, decode_operation(op.payload)
    )


def snapshot_dict(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "seq": snapshot.seq,
        "userId": snapshot.user_id,
        "data": decode_operation(snapshot.data),
    }


class HistoryCompacted(Exception):
    """The log no longer holds the operations after the ``since`` asked for."""

    def __init__(self, kept_from: int) -> None:
        super().__init__(kept_from)
        self.kept_from = kept_from


class LogReader:
    """Reads pages and heads of documents' logs for joins, syncs, room opens
    and the server API."""

    def __init__(self, store: OperationStore) -> None:
        self.store = store
        self._page_reads: Coalescer[tuple[str, int, int], tuple[list[StoredOp], int]] = Coalescer(
            self._read_pages
        )

    def cancel(self) -> None:
        self._page_reads.cancel()

    async def read_from(
        self, doc_id: str, since: int, limit: int, snapshots: bool, at_zero: bool
    ) -> tuple[Snapshot | None, list[StoredOp], int, bool]:
        """The first page a client at ``since`` needs: the newest snapshot and
        the operations after it (when it asked for snapshots and ``since`` is
        0 with ``at_zero``, or older than the kept log), else the operations
        after ``since``.  A page that does not start right after where it was
        asked to is a compacted log: ``HistoryCompacted`` for a client without
        snapshots (never a page with a hole)."""
        snapshot = None
        if snapshots and since == 0 and at_zero:
            snapshot = await self.store.latest_snapshot(doc_id)
        for _attempt in range(3):
            start = snapshot.seq if snapshot is not None else since
            ops, head, more = await self.read_page(doc_id, start, limit)
            kept_from = ops[0].seq if ops else head + 1
            if kept_from <= start + 1:
                return snapshot, ops, head, more
            if not snapshots:
                raise HistoryCompacted(kept_from)
            # Compacted after ``start``: a newer snapshot covers the hole.
            snapshot = await self.store.latest_snapshot(doc_id)
            if snapshot is None:
                break
        raise StoreError(f"{doc_id}: the log has a hole no snapshot covers")

    async def read_page(
        self, doc_id: str, since: int, limit: int
    ) -> tuple[list[StoredOp], int, bool]:
        page, head = await self._page_reads.run((doc_id, since, limit + 1))
        ops = page
        more = len(ops) > limit
        if more:
            ops = ops[:limit]
        # socket.io-client's decoder refuses a packet with more than 10 binary
        # attachments (and drops the connection): end the page before that.
        parts = 0
        for i, op in enumerate(ops):
            parts += attachment_count(op.payload)
            if parts > MAX_PAGE_ATTACHMENTS and i > 0:
                ops = ops[:i]
                more = True
                break
        return ops, head, more

    async def head(self, doc_id: str) -> int:
        """The document's head, read with the page reads under way (an empty
        page carries the head): one statement for a burst of room opens and
        tail checks."""
        _, head = await self._page_reads.run((doc_id, 0, 0))
        return head

    async def _read_pages(
        self, pages: list[tuple[str, int, int]]
    ) -> list[tuple[list[StoredOp], int] | BaseException]:
        answers = await self.store.read_pages(pages)
        return [
            UnknownDocument(doc_id) if answer is None else answer
            for (doc_id, _, _), answer in zip(pages, answers, strict=True)
        ]
