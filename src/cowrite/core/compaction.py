"""Log compaction: delete the operations the newest snapshot makes unnecessary.

The retention rule (``RetentionSettings``): an operation may be deleted when
the document has a snapshot, the operation is more than ``keep_ops``
operations older than that snapshot's ``seq`` AND was stored more than
``keep_days`` days before the snapshot was.  The store applies it in one
transaction per document (``OperationStore.compact``), never deletes the
newest operation, and keeps the log one contiguous range, so a client whose
``since`` falls before it is detected and answered with the snapshot
(``CollabService._read_from``).

Compaction also forgets idempotency keys: an operation resent (same
``clientOpId``) after its original was compacted is stored again.  Clients
resend only what was not acknowledged, within seconds, so ``keep_days`` (7 by
default) is far beyond that window.

``cowrite compact`` runs it once; with ``compact_interval`` > 0 every instance
also runs it in the background (concurrent runs are safe: each is one
transaction that deletes what is already gone as a no-op).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from cowrite.backends.store import Compaction, OperationStore, StoreError, UnknownDocument

log = logging.getLogger("cowrite.compaction")

DAY = 86_400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionSettings:
    """How much log to keep below the newest snapshot, and how often to compact.

    ``interval`` is seconds between background runs; 0 turns the background
    job off (``cowrite compact`` still works)."""

    keep_ops: int = 10_000
    keep_days: float = 7.0
    interval: float = 0.0

    def __post_init__(self) -> None:
        if self.keep_ops < 0 or self.keep_days < 0 or self.interval < 0:
            raise ValueError("keep_ops, keep_days and interval must not be negative")


async def compact_documents(
    store: OperationStore,
    retention: RetentionSettings,
    documents: Sequence[str] | None = None,
) -> list[Compaction]:
    """Compact ``documents`` (default: every document with a snapshot), one
    transaction each.  Unknown documents are skipped; a store failure raises."""
    names = list(documents) if documents is not None else await store.snapshot_documents()
    done: list[Compaction] = []
    for document_id in names:
        try:
            done.append(
                await store.compact(
                    document_id,
                    keep_ops=retention.keep_ops,
                    keep_seconds=retention.keep_days * DAY,
                )
            )
        except UnknownDocument:
            continue
    return done


async def compaction_loop(store: OperationStore, retention: RetentionSettings) -> None:
    """Compact every ``retention.interval`` seconds (first run after a random
    part of it, so instances started together do not run together) until
    cancelled.  A failed run is logged and retried at the next interval."""
    delay = retention.interval * random.uniform(0.5, 1.0)
    while True:
        await asyncio.sleep(delay)
        delay = retention.interval
        try:
            done = await compact_documents(store, retention)
        except StoreError as exc:
            log.warning("compaction failed: %s", exc)
            continue
        deleted = sum(c.deleted_ops for c in done)
        if deleted:
            log.info(
                "compacted %d operations in %d documents",
                deleted,
                sum(1 for c in done if c.deleted_ops),
                extra={"event": "compacted", "deleted_ops": deleted},
            )
