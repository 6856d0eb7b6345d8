"""CollabSettings: the collaboration service's limits and timings.

One frozen object, built once from flags, environment and file
(``config.py``); every part of the service reads the same one and nothing
changes it at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cowrite.core.compaction import RetentionSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class CollabSettings:
    auto_create: bool = True
    docs_claim: bool = False
    max_operation_bytes: int = 64 * 1024
    # A stored snapshot's size (its JSON plus binary parts); it travels in one
    # Socket.IO message, so keep it under the server's max_payload.
    max_snapshot_bytes: int = 900 * 1024
    # What compaction keeps below the newest snapshot, and how often this
    # instance runs it (core/compaction.py).
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    page_size: int = 100
    max_page_size: int = 1000
    presence_interval: float = 0.05  # at most ~20 presence updates per second per user
    max_presence_bytes: int = 4096
    role_cache_seconds: float = 5.0
    max_pending: int = 10_000
    max_documents_per_connection: int = 100
    gap_fill_delay: float = 0.05  # wait this long for a late broker message before reading the log
    tail_check_delay: float = 0.5  # after remote operations go quiet, check the log's head once
    presence_reap_interval: float = 10.0
    # Group commit pacing: a store transaction starts commit_interval seconds
    # after the previous one started, or as soon as commit_enough operations
    # wait (0: commit as soon as the previous transaction is done).  Each
    # transaction pays an fsync (~120-250 us of CPU here, docs/PERFORMANCE.md),
    # so at a few thousand edits/s pacing cuts the commit count 2-4x for at most
    # commit_interval of added latency (none for an edit after a pause).
    # cowrite serve's default depends on the store (config.default_commit_interval).
    commit_interval: float = 0.002
    commit_enough: int = 8
    # Per-connection rate limits (token buckets); 0 disables one.
    edit_rate: float = 200.0
    edit_burst: int = 1000
    presence_rate: float = 30.0
    presence_burst: int = 60
    # A connection refused this many times within flood_window seconds is
    # disconnected ("rate limit exceeded").
    flood_refusals: int = 100
    flood_window: float = 10.0
    # Socket.IO connection-state recovery (core/recovery.py): a lost socket
    # can be resumed for this many seconds (Node's default, 2 minutes).  On
    # only when the service is given a RecoveryStore.
    recovery_window: float = 120.0
