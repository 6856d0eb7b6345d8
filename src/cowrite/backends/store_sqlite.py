"""``OperationStore`` on an SQLite file: the embedded default.

Threads
    The store owns two connections: a *writer* through which every write
    transaction goes, and a *reader* for every query.  Each runs its calls on
    the event loop's thread when SQLite can answer without waiting for
    another connection's lock (the common case: microseconds from the page
    cache, plus the commit's fsync), and in its own dedicated thread (a
    one-worker executor) otherwise: when the database is busy (another
    process or connection holds a lock; the thread waits up to the busy
    timeout), while an earlier call is still running there, and for a while
    after an inline call was slow (a stalling disk must not stall the loop).
    See ``_Connection``.  A whole ``append_batch`` is one call, so concurrent
    writers of one store never interleave statements inside one transaction.
    In WAL mode the reader sees the last committed state.  The WAL
    checkpoints run in threads, never inline in a commit: a third
    connection copies the bulk, the writer's thread the rest
    (``SqliteStore._checkpoint``).

Sequencing
    Write transactions start with ``BEGIN IMMEDIATE``, which takes SQLite's
    single write lock before the document heads are read.  That serialises
    writers across threads, store instances and processes sharing the file, so
    ``seq`` numbers stay gapless.  A writer that finds the lock taken waits (the
    busy timeout, ``busy_timeout`` seconds) and then fails with
    ``StoreUnavailable``.

Durability: ``synchronous=FULL`` (the default here)
    In WAL mode SQLite offers ``NORMAL`` (commits are durable against a crash
    of the process, but the last transactions may vanish on power loss or an
    OS crash, because the WAL is only synced at checkpoints) and ``FULL`` (the
    WAL is synced at every commit).  The interface promises that an
    acknowledged append is durable, so ``FULL`` is the default: with group
    commit the fsync is paid once per batch, not once per operation, and
    ``bench/store_bench.py`` measures what it costs.  ``synchronous="normal"``
    is offered for deployments that accept losing the last moments of work on
    power loss in exchange for speed; it does not change any other guarantee.

Opening together
    Several instances (a supervisor starting N workers) may open one new file at
    the same moment.  Switching it to WAL and applying the first migration take
    exclusive locks, and there SQLite does not always call the busy handler: a
    connection that holds a shared lock and wants more while another waits for
    the exclusive one gets ``SQLITE_BUSY`` at once, because waiting could
    deadlock (sqlite.org, ``sqlite3_busy_handler``: "the presence of a busy
    handler does not guarantee that it will be invoked").  The statement has
    then released its locks, so ``open`` retries those steps, with a short
    jittered back-off, until ``busy_timeout``.

The path must name a file (not ``":memory:"``): the two connections share the
database through it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

from cowrite.backends.store import (
    AppendPlan,
    AppendRequest,
    AppendResult,
    Compaction,
    IdempotencyKey,
    Role,
    Snapshot,
    StoredOp,
    StoreError,
    StoreNotOpen,
    StoreUnavailable,
    UnknownDocument,
    check_limit,
    check_snapshot_seq,
    compaction_cutoff,
    idempotency_key,
    plan_append,
)

_T = TypeVar("_T")

#: Schema migrations; ``MIGRATIONS[i]`` brings the schema from version i to i + 1.
#: Kept inline rather than in .sql files so that they ship with the module.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE documents (
            document_id TEXT PRIMARY KEY,
            head        INTEGER NOT NULL DEFAULT 0 CHECK (head >= 0),
            created_at  REAL NOT NULL
        ) WITHOUT ROWID
        """,
        # Clustered on (document_id, seq): read_ops is one range scan.
        """
        CREATE TABLE ops (
            document_id  TEXT NOT NULL REFERENCES documents (document_id),
            seq          INTEGER NOT NULL CHECK (seq > 0),
            user_id      TEXT NOT NULL,
            client_op_id TEXT,
            payload      BLOB NOT NULL,
            created_at   REAL NOT NULL,
            PRIMARY KEY (document_id, seq)
        ) WITHOUT ROWID
        """,
        # The idempotency key; also what append_batch looks duplicates up by.
        """
        CREATE UNIQUE INDEX ops_client_op_id ON ops (document_id, user_id, client_op_id)
        WHERE client_op_id IS NOT NULL
        """,
        """
        CREATE TABLE roles (
            document_id TEXT NOT NULL REFERENCES documents (document_id),
            user_id     TEXT NOT NULL,
            role        TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
            PRIMARY KEY (document_id, user_id)
        ) WITHOUT ROWID
        """,
    ),
    # 2: snapshots (store.Snapshot); the newest of a document is the one with
    # the highest seq, the last row of its primary-key range.
    (
        """
        CREATE TABLE snapshots (
            document_id TEXT NOT NULL REFERENCES documents (document_id),
            seq         INTEGER NOT NULL CHECK (seq > 0),
            user_id     TEXT NOT NULL,
            data        BLOB NOT NULL,
            created_at  REAL NOT NULL,
            PRIMARY KEY (document_id, seq)
        ) WITHOUT ROWID
        """,
    ),
    # 3: a document's head is its last op's seq (the last row of its
    # primary-key range; compaction never deletes the newest op) instead of a
    # column every batch updated.  That UPDATE was a statement per document
    # per batch and dirtied pages of documents that the commit wrote to the
    # WAL: about 20 % of the CPU per commit with ops spread over 2,000
    # documents (docs/DESIGN.md, "No head column in SQLite either").
    ("ALTER TABLE documents DROP COLUMN head",),
)

# A document's head: the seq of its last op, 0 before the first.  ``d`` is
# the documents row; an index seek to the end of the document's ops range.
_HEAD_OF_D = """coalesce((SELECT o.seq FROM ops AS o WHERE o.document_id = d.document_id
                 ORDER BY o.seq DESC LIMIT 1), 0)"""
_SELECT_HEAD = f"SELECT {_HEAD_OF_D} FROM documents AS d WHERE d.document_id = ?"
_SELECT_OPS = """
    SELECT document_id, seq, user_id, client_op_id, payload, created_at FROM ops
    WHERE document_id = ? AND seq > ? ORDER BY seq LIMIT ?
"""
_INSERT_OP = """
    INSERT INTO ops (document_id, seq, user_id, client_op_id, payload, created_at)
    VALUES (?, ?, ?, ?, ?, ?)
"""
# {values} is "(?, ?, ?), ..." with one triple per idempotency key.
_FIND_DUPLICATES = """
    SELECT o.document_id, o.user_id, o.client_op_id, o.seq
    FROM (VALUES {values}) AS k
    JOIN ops AS o ON o.document_id = k.column1 AND o.user_id = k.column2
     AND o.client_op_id = k.column3
"""
# INSERT ... SELECT inserts nothing for an unknown document (rowcount 0) instead
# of raising; the WHERE also resolves SQLite's ON CONFLICT parsing ambiguity.
_UPSERT_ROLE = """
    INSERT INTO roles (document_id, user_id, role)
    SELECT document_id, ?, ? FROM documents WHERE document_id = ?
    ON CONFLICT (document_id, user_id) DO UPDATE SET role = excluded.role
"""


#: An inline call slower than this (a stalled fsync, a long page read; commits
#: take 0.4 ms at the median here and up to ~12 ms at the worst) sends the
#: connection's calls to its thread for ``_THREAD_COOLDOWN`` seconds, so a
#: stalling disk does not stall the event loop.
_SLOW_INLINE = 0.02
_THREAD_COOLDOWN = 0.5


log = logging.getLogger("cowrite.store")

#: Writes between two checkpoints under load (SQLite's own automatic
#: checkpoint runs every 1,000 WAL pages; an append of a few operations
#: dirties 3-5 pages), and the delay of a checkpoint after fewer writes.
#: See ``SqliteStore._checkpoint``.
_CHECKPOINT_EVERY = 250
_CHECKPOINT_PERIOD = 1.0


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code): another connection holds a lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _Connection:
    """One sqlite3 connection, used inline on the event loop when it can, else
    from its one dedicated thread (never from two threads at once).

    Inline first: a statement answered from SQLite's page cache and the WAL
    takes microseconds, while a hop to a thread and back costs ~170 µs of CPU
    (GIL hand-offs, the worker's wake-up, the loop's self-pipe;
    ``bench/micro/collabpath.py``).  An inline call never waits for another
    connection's lock (the busy handler is off: ``busy_timeout`` 0 while
    inline): SQLITE_BUSY sends the call to the thread, which waits up to the
    configured busy timeout.  A call in flight in the thread routes the later
    ones there too, and an inline call slower than ``_SLOW_INLINE`` sends
    calls to the thread for ``_THREAD_COOLDOWN`` seconds.  Every function
    given to ``call`` must be safe to run again after SQLITE_BUSY (a write
    transaction is rolled back by ``_write`` before the error leaves it).
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None
        self._busy_ms = 0
        self._in_thread = 0
        self._thread_until = 0.0
        self.inline_calls = 0
        self.thread_calls = 0
        # Called after each call that returned (the writer's checkpoint count).
        self.after_call: Callable[[], None] | None = None

    async def call(self, fn: Callable[[sqlite3.Connection], _T], *, inline: bool = True) -> _T:
        """Run ``fn(connection)``: inline, or in the connection's thread
        (always there with ``inline=False``: ``fn`` may wait)."""
        conn = self._conn
        if conn is None:
            raise StoreNotOpen("sqlite connection is closed")
        if inline and self._in_thread == 0 and time.monotonic() >= self._thread_until:
            started = time.monotonic()
            try:
                result = fn(conn)
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    raise StoreUnavailable(f"sqlite: {exc}") from exc
            else:
                self.inline_calls += 1
                if time.monotonic() - started > _SLOW_INLINE:
                    self._thread_until = time.monotonic() + _THREAD_COOLDOWN
                return self._called(result)
        return self._called(await self.call_in_thread(fn))

    def _called(self, result: _T) -> _T:
        if self.after_call is not None:
            self.after_call()
        return result

    async def call_in_thread(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn(connection)`` in the connection's thread (calls made
        meanwhile queue behind it there), without ``after_call``."""
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, self._run, fn)
        except RuntimeError as exc:  # the executor was shut down by close()
            raise StoreNotOpen("sqlite connection is closed") from exc
        self._in_thread += 1
        self.thread_calls += 1
        try:
            return await future
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        finally:
            self._in_thread -= 1

    def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        if conn is None:
            raise StoreNotOpen("sqlite connection is closed")
        # In the thread the call may wait for other connections' locks.
        conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        try:
            return fn(conn)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    async def connect(
        self,
        path: str,
        *,
        busy_timeout: float,
        pragmas: Sequence[str],
        setup: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self._busy_ms = max(0, round(busy_timeout * 1000))

        def connect() -> None:
            # isolation_level=None: no implicit transactions, we BEGIN ourselves.
            # check_same_thread=False: used inline and from its thread, never at once.
            conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                if setup is not None:
                    retry_busy(lambda: setup(conn), busy_timeout)
                for pragma in pragmas:
                    conn.execute(pragma)
                conn.execute("PRAGMA busy_timeout = 0")
            except BaseException:
                conn.close()
                raise
            self._conn = conn

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, connect)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, close)
        finally:
            self._executor.shutdown(wait=True)


def retry_busy(step: Callable[[], _T], timeout: float) -> _T:
    """Run ``step`` again while SQLite answers ``SQLITE_BUSY`` without having
    waited (see "Opening together"), for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        # Jitter: instances that collided once should not collide again.
        time.sleep(min(delay * random.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.1)


def _use_wal(conn: sqlite3.Connection) -> None:
    (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if str(mode).lower() != "wal":
        raise StoreUnavailable(f"sqlite: cannot switch {mode!r} journal to WAL")


def _write(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction; roll back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    (current,) = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    if current > len(MIGRATIONS):
        raise StoreError(
            f"database schema version {current} is newer than this code knows ({len(MIGRATIONS)})"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        for statement in MIGRATIONS[version - 1]:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
            (version, time.time()),
        )


#: Rows looked up per statement; keeps the bound variables under SQLite's
#: historical limit of 999 per statement.
_CHUNK = 300


def _chunks(items: Sequence[_T]) -> list[Sequence[_T]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


class _Heads:
    """The writer's memory of document heads between its transactions.

    Valid only while no other connection committed: ``PRAGMA data_version``
    (read inside the write transaction, when nobody else can commit) changes
    exactly when another connection has.  Filled only after a commit
    succeeded."""

    __slots__ = ("heads", "version")

    def __init__(self) -> None:
        self.version: int | None = None
        self.heads: dict[str, int] = {}

    def forget(self) -> None:
        self.version = None
        self.heads.clear()


class _MaybeDuplicate(Exception):
    """The optimistic append hit a constraint: redo it with the full checks."""


def _read_heads(conn: sqlite3.Connection, docs: Sequence[str], into: dict[str, int]) -> None:
    for chunk in _chunks(docs):
        marks = ", ".join("?" * len(chunk))
        into.update(
            conn.execute(
                f"SELECT d.document_id, {_HEAD_OF_D} FROM documents AS d "
                f"WHERE d.document_id IN ({marks})",
                chunk,
            ).fetchall()
        )


def _write_plan(conn: sqlite3.Connection, plan: AppendPlan) -> None:
    now = time.time()
    conn.executemany(
        _INSERT_OP,
        [
            (req.document_id, seq, req.user_id, req.client_op_id, req.payload, now)
            for req, seq in plan.new_ops
        ],
    )


def _data_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version


def _append_optimistic(
    conn: sqlite3.Connection, requests: Sequence[AppendRequest], cache: _Heads
) -> tuple[AppendPlan, int]:
    """The common append, inside the write transaction: heads from ``cache``
    when still valid, and no duplicate lookup: a stored idempotency key makes
    the insert fail on the unique index (``_MaybeDuplicate``), and the caller
    redoes the batch with ``_append``.  Duplicates within the batch are
    ``plan_append``'s."""
    version = _data_version(conn)
    known = cache.heads if cache.version == version else {}
    docs = list(dict.fromkeys(r.document_id for r in requests))
    heads = {doc: known[doc] for doc in docs if doc in known}
    if len(heads) < len(docs):
        _read_heads(conn, [doc for doc in docs if doc not in heads], heads)
    plan = plan_append(requests, heads, {})
    try:
        _write_plan(conn, plan)
    except sqlite3.IntegrityError as exc:
        raise _MaybeDuplicate from exc
    return plan, version


def _append(conn: sqlite3.Connection, requests: Sequence[AppendRequest]) -> tuple[AppendPlan, int]:
    """``append_batch`` with every check, inside the write transaction.

    Heads and duplicates are read with one statement per chunk of documents or
    keys rather than one per request: statements, not rows, dominate the cost.
    """
    version = _data_version(conn)
    heads: dict[str, int] = {}
    _read_heads(conn, list(dict.fromkeys(r.document_id for r in requests)), heads)
    stored: dict[IdempotencyKey, int] = {}
    keys = list(dict.fromkeys(k for k in map(idempotency_key, requests) if k is not None))
    for chunk in _chunks(keys):
        values = ", ".join(["(?, ?, ?)"] * len(chunk))
        rows = conn.execute(
            _FIND_DUPLICATES.format(values=values), [part for key in chunk for part in key]
        ).fetchall()
        stored.update(((doc, user, op_id), seq) for doc, user, op_id, seq in rows)
    plan = plan_append(requests, heads, stored)
    _write_plan(conn, plan)
    return plan, version


def _append_batch(
    conn: sqlite3.Connection, requests: Sequence[AppendRequest], cache: _Heads
) -> list[AppendResult]:
    """One call of ``_Connection.call``: the optimistic append, else the full one."""
    try:
        plan, version = _write(conn, lambda c: _append_optimistic(c, requests, cache))
    except _MaybeDuplicate:
        cache.forget()
        plan, version = _write(conn, lambda c: _append(c, requests))
    except BaseException:
        cache.forget()
        raise
    if cache.version != version:
        cache.heads.clear()
        cache.version = version
    if len(cache.heads) > 100_000:
        cache.heads.clear()
    cache.heads.update(plan.heads)
    return plan.results


def _read_ops(conn: sqlite3.Connection, document_id: str, since: int, limit: int) -> list[StoredOp]:
    rows = conn.execute(_SELECT_OPS, (document_id, since, limit)).fetchall()
    if not rows and not _exists(conn, document_id):
        raise UnknownDocument(document_id)
    return [StoredOp(*row) for row in rows]


def _read_page(
    conn: sqlite3.Connection, document_id: str, since: int, limit: int
) -> tuple[list[StoredOp], int]:
    # One read transaction, so the head and the page agree.
    conn.execute("BEGIN")
    try:
        row = conn.execute(_SELECT_HEAD, (document_id,)).fetchone()
        if row is None:
            raise UnknownDocument(document_id)
        rows = conn.execute(_SELECT_OPS, (document_id, since, limit)).fetchall()
    finally:
        conn.execute("COMMIT")
    ops = [StoredOp(*r) for r in rows]
    head: int = row[0]
    return ops, max(head, ops[-1].seq if ops else 0)


def _read_pages(
    conn: sqlite3.Connection, pages: Sequence[tuple[str, int, int]]
) -> list[tuple[list[StoredOp], int] | None]:
    answers: list[tuple[list[StoredOp], int] | None] = []
    for document_id, since, limit in pages:
        try:
            answers.append(_read_page(conn, document_id, since, limit))
        except UnknownDocument:
            answers.append(None)
    return answers


def _exists(conn: sqlite3.Connection, document_id: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM documents WHERE document_id = ?", (document_id,)).fetchone()
        is not None
    )


def _head(conn: sqlite3.Connection, document_id: str) -> int:
    row = conn.execute(_SELECT_HEAD, (document_id,)).fetchone()
    if row is None:
        raise UnknownDocument(document_id)
    head: int = row[0]
    return head


def _create_document(conn: sqlite3.Connection, document_id: str, owner_id: str) -> bool:
    cursor = conn.execute(
        "INSERT INTO documents (document_id, created_at) VALUES (?, ?) "
        "ON CONFLICT (document_id) DO NOTHING",
        (document_id, time.time()),
    )
    if cursor.rowcount == 0:
        return False
    conn.execute(
        "INSERT INTO roles (document_id, user_id, role) VALUES (?, ?, ?)",
        (document_id, owner_id, Role.OWNER.value),
    )
    return True


def _set_role(conn: sqlite3.Connection, document_id: str, user_id: str, role: Role) -> None:
    if conn.execute(_UPSERT_ROLE, (user_id, role.value, document_id)).rowcount == 0:
        raise UnknownDocument(document_id)


def _list_roles(conn: sqlite3.Connection, document_id: str) -> dict[str, Role]:
    rows = conn.execute(
        "SELECT user_id, role FROM roles WHERE document_id = ?", (document_id,)
    ).fetchall()
    if not rows and not _exists(conn, document_id):
        raise UnknownDocument(document_id)
    return {user_id: Role(role) for user_id, role in rows}


_SELECT_LATEST_SNAPSHOT = """
    SELECT document_id, seq, user_id, data, created_at FROM snapshots
    WHERE document_id = ? ORDER BY seq DESC LIMIT 1
"""


def _store_snapshot(
    conn: sqlite3.Connection, document_id: str, seq: int, user_id: str, data: bytes
) -> Snapshot:
    head = _head(conn, document_id)
    (latest,) = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM snapshots WHERE document_id = ?", (document_id,)
    ).fetchone()
    check_snapshot_seq(seq, head, latest)
    snapshot = Snapshot(document_id, seq, user_id, data, time.time())
    conn.execute(
        "INSERT INTO snapshots (document_id, seq, user_id, data, created_at) VALUES (?, ?, ?, ?, ?)",
        (document_id, seq, user_id, data, snapshot.created_at),
    )
    return snapshot


def _compact(
    conn: sqlite3.Connection, document_id: str, keep_ops: int, keep_seconds: float
) -> Compaction:
    head = _head(conn, document_id)
    row = conn.execute(_SELECT_LATEST_SNAPSHOT, (document_id,)).fetchone()
    deleted_ops = deleted_snapshots = 0
    if row is not None:
        snapshot = Snapshot(*row)
        cutoff = compaction_cutoff(snapshot.seq, head, keep_ops)
        before = snapshot.created_at - keep_seconds
        # The first op too young to go bounds the deletion, so no hole opens
        # when clocks of several writers disagree.
        (young,) = conn.execute(
            "SELECT min(seq) FROM ops WHERE document_id = ? AND seq <= ? AND created_at >= ?",
            (document_id, cutoff, before),
        ).fetchone()
        if young is not None:
            cutoff = young - 1
        if cutoff > 0:
            deleted_ops = conn.execute(
                "DELETE FROM ops WHERE document_id = ? AND seq <= ?", (document_id, cutoff)
            ).rowcount
        deleted_snapshots = conn.execute(
            "DELETE FROM snapshots WHERE document_id = ? AND seq < ?", (document_id, snapshot.seq)
        ).rowcount
    (first,) = conn.execute(
        "SELECT min(seq) FROM ops WHERE document_id = ?", (document_id,)
    ).fetchone()
    return Compaction(
        document_id, deleted_ops, deleted_snapshots, head + 1 if first is None else first
    )


class SqliteStore:
    """``OperationStore`` on the SQLite file at ``path`` (created if missing).

    See the module docstring for threads, sequencing and the durability choice.
    ``busy_timeout`` (seconds) bounds how long a write waits for another
    connection's write lock.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["full", "normal"] = "full",
        busy_timeout: float = 30.0,
    ) -> None:
        if str(path) in ("", ":memory:") or str(path).startswith("file:"):
            raise ValueError(f"SqliteStore needs a file path, not {str(path)!r}")
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        self._path = str(path)
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._writer: _Connection | None = None
        self._reader: _Connection | None = None
        self._heads = _Heads()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writes = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._checkpoint_timer: asyncio.TimerHandle | None = None
        self._checkpointer: _Connection | None = None
        self.checkpoints = 0

    def __repr__(self) -> str:
        return f"SqliteStore({self._path!r}, synchronous={self._synchronous!r})"

    async def open(self) -> None:
        if self._writer is not None:
            raise StoreError("store is already open")
        writer = _Connection("cowrite-sqlite-writer")
        reader = _Connection("cowrite-sqlite-reader")
        checkpointer = _Connection("cowrite-sqlite-checkpoint")
        common = (f"PRAGMA synchronous = {self._synchronous.upper()}",)
        try:
            await writer.connect(
                self._path,
                busy_timeout=self._busy_timeout,
                setup=_use_wal,
                pragmas=(
                    "PRAGMA foreign_keys = ON",
                    # Checkpoints run in threads (SqliteStore._checkpoint).
                    "PRAGMA wal_autocheckpoint = 0",
                    # The pages an append touches (the ends of the ops table
                    # and of its indexes, the idempotency index's leaves)
                    # stay cached: with SQLite's default 2 MiB the writer
                    # re-read index pages with pread() inside its commits
                    # (9 % of the loop thread at 32,000 msg/s, py-spy).
                    "PRAGMA cache_size = -65536",
                    # A WAL that grew while a long read held it back is cut
                    # back to this size when it starts over.
                    "PRAGMA journal_size_limit = 67108864",
                    *common,
                ),
            )
            self._writer = writer
            await self.migrate()
            await reader.connect(
                self._path,
                busy_timeout=self._busy_timeout,
                pragmas=("PRAGMA query_only = ON", *common),
            )
            self._reader = reader
            await checkpointer.connect(self._path, busy_timeout=self._busy_timeout, pragmas=common)
        except BaseException:
            self._writer = self._reader = None
            await writer.close()
            await reader.close()
            await checkpointer.close()
            raise
        self._checkpointer = checkpointer
        self._loop = asyncio.get_running_loop()
        writer.after_call = self._wrote

    def _wrote(self) -> None:
        """The writer finished a call: checkpoint after ``_CHECKPOINT_EVERY``
        of them, or ``_CHECKPOINT_PERIOD`` seconds after the first."""
        self._writes += 1
        if self._checkpointing is not None:
            return
        if self._writes >= _CHECKPOINT_EVERY:
            self._start_checkpoint()
        elif self._checkpoint_timer is None and self._loop is not None:
            self._checkpoint_timer = self._loop.call_later(
                _CHECKPOINT_PERIOD, self._start_checkpoint
            )

    def _start_checkpoint(self) -> None:
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
        writer, checkpointer, loop = self._writer, self._checkpointer, self._loop
        if (
            writer is None
            or checkpointer is None
            or loop is None
            or self._checkpointing is not None
        ):
            return
        self._writes = 0
        self._checkpointing = loop.create_task(self._checkpoint(writer, checkpointer))

    async def _checkpoint(self, writer: _Connection, checkpointer: _Connection) -> None:
        """Copy the WAL into the database file, off the event loop, in two steps.

        SQLite's automatic checkpoint runs inside the commit that crosses
        1,000 WAL pages, inline on the event loop: py-spy at 32,000 delivered
        msg/s put checkpoints at 10 % of the loop thread, each a stall of
        several milliseconds (reads and writes of ~1,000 pages, two fsyncs)
        in front of every message.  The writer has ``wal_autocheckpoint = 0``;
        instead:

        1. the bulk, from a connection of its own in its own thread, while
           the writer goes on committing (``PASSIVE`` never waits for nor
           blocks it);
        2. what was appended meanwhile, on the writer's connection in the
           writer's thread: its next calls wait behind it there
           (``_Connection``), so the WAL is then wholly copied, and the next
           write transaction starts it over from its beginning.

        Step 1 alone never caught up with a writer that keeps committing: the
        WAL grew past 1 GB in 35 s at 8,000 and 32,000 delivered msg/s; step 2
        alone (the whole copy behind the writer) made the commits wait for it,
        P95 11.8 ms at 32,000/s (measured, docs/PERFORMANCE.md).  Each step is
        crash-safe on its own: SQLite syncs the WAL before copying it and the
        database file after, at the connection's ``synchronous`` level."""

        def passive(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        try:
            await checkpointer.call_in_thread(passive)
            await writer.call_in_thread(passive)
            self.checkpoints += 1
        except StoreError as exc:
            log.warning("sqlite checkpoint failed: %s", exc)
        finally:
            self._checkpointing = None

    async def close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await checkpointer.close()
        if reader is not None:
            await reader.close()
        if writer is not None:
            await writer.close()

    def _write_conn(self) -> _Connection:
        if self._writer is None:
            raise StoreNotOpen(f"{self!r} is not open")
        return self._writer

    def _read_conn(self) -> _Connection:
        if self._reader is None:
            raise StoreNotOpen(f"{self!r} is not open")
        return self._reader

    async def migrate(self) -> None:
        # In the thread: a migration may wait for other instances' locks (and
        # retry_busy sleeps between its attempts).
        timeout = self._busy_timeout
        await self._write_conn().call(
            lambda conn: retry_busy(lambda: _write(conn, _migrate), timeout), inline=False
        )

    async def ping(self) -> bool:
        if self._reader is None:
            return False
        try:
            await self._reader.call(lambda conn: conn.execute("SELECT 1").fetchone())
        except StoreError:
            return False
        return True

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        writer = self._write_conn()
        if not requests:
            return []
        batch = list(requests)  # the caller may mutate its sequence meanwhile
        return await writer.call(lambda conn: _append_batch(conn, batch, self._heads))

    async def read_ops(self, document_id: str, since: int, limit: int) -> list[StoredOp]:
        check_limit(limit)
        return await self._read_conn().call(lambda conn: _read_ops(conn, document_id, since, limit))

    async def read_page(
        self, document_id: str, since: int, limit: int
    ) -> tuple[list[StoredOp], int]:
        check_limit(limit)
        return await self._read_conn().call(
            lambda conn: _read_page(conn, document_id, since, limit)
        )

    async def read_pages(
        self, pages: Sequence[tuple[str, int, int]]
    ) -> list[tuple[list[StoredOp], int] | None]:
        for _, _, limit in pages:
            check_limit(limit)
        return await self._read_conn().call(lambda conn: _read_pages(conn, pages))

    async def head(self, document_id: str) -> int:
        return await self._read_conn().call(lambda conn: _head(conn, document_id))

    async def create_document(self, document_id: str, owner_id: str) -> bool:
        return await self._write_conn().call(
            lambda conn: _write(conn, lambda c: _create_document(c, document_id, owner_id))
        )

    async def create_documents(self, documents: Sequence[tuple[str, str]]) -> set[str]:
        if not documents:
            return set()
        # In the thread: the commit waits for fsync (1-5 ms here), and the
        # joins that arrive meanwhile go into the next call instead of
        # waiting behind a blocked event loop.
        return await self._write_conn().call(
            lambda conn: _write(
                conn,
                lambda c: {d for d, owner in documents if _create_document(c, d, owner)},
            ),
            inline=False,
        )

    async def document_exists(self, document_id: str) -> bool:
        return await self._read_conn().call(lambda conn: _exists(conn, document_id))

    async def get_role(self, document_id: str, user_id: str) -> Role | None:
        row = await self._read_conn().call(
            lambda conn: conn.execute(
                "SELECT role FROM roles WHERE document_id = ? AND user_id = ?",
                (document_id, user_id),
            ).fetchone()
        )
        return None if row is None else Role(row[0])

    async def set_role(self, document_id: str, user_id: str, role: Role) -> None:
        role = Role(role)
        await self._write_conn().call(
            lambda conn: _write(conn, lambda c: _set_role(c, document_id, user_id, role))
        )

    async def revoke(self, document_id: str, user_id: str) -> bool:
        rowcount = await self._write_conn().call(
            lambda conn: _write(
                conn,
                lambda c: (
                    c.execute(
                        "DELETE FROM roles WHERE document_id = ? AND user_id = ?",
                        (document_id, user_id),
                    ).rowcount
                ),
            )
        )
        return rowcount > 0

    async def list_roles(self, document_id: str) -> dict[str, Role]:
        return await self._read_conn().call(lambda conn: _list_roles(conn, document_id))

    async def store_snapshot(
        self, document_id: str, seq: int, user_id: str, data: bytes
    ) -> Snapshot:
        return await self._write_conn().call(
            lambda conn: _write(conn, lambda c: _store_snapshot(c, document_id, seq, user_id, data))
        )

    async def latest_snapshot(self, document_id: str) -> Snapshot | None:
        row = await self._read_conn().call(
            lambda conn: conn.execute(_SELECT_LATEST_SNAPSHOT, (document_id,)).fetchone()
        )
        return None if row is None else Snapshot(*row)

    async def compact(self, document_id: str, *, keep_ops: int, keep_seconds: float) -> Compaction:
        if keep_ops < 0 or keep_seconds < 0:
            raise ValueError("keep_ops and keep_seconds must not be negative")
        # In the thread: deleting a long prefix may take a while.
        return await self._write_conn().call(
            lambda conn: _write(conn, lambda c: _compact(c, document_id, keep_ops, keep_seconds)),
            inline=False,
        )

    async def snapshot_documents(self) -> list[str]:
        rows = await self._read_conn().call(
            lambda conn: conn.execute(
                "SELECT DISTINCT document_id FROM snapshots ORDER BY document_id"
            ).fetchall()
        )
        return [row[0] for row in rows]
