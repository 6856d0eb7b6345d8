"""``OperationStore`` on PostgreSQL, through an asyncpg connection pool.

Sequencing
    ``append_batch`` is one call of the ``cowrite_append`` function (created by
    migration 2): one statement, so one round trip and one implicit
    transaction.  It first locks the rows of every document the batch names
    (``FOR NO KEY UPDATE``, in ``document_id`` order so that two batches naming
    the same documents cannot deadlock; NO KEY so that the foreign-key checks
    of role changes need not wait), then reads their heads (the highest
    stored ``seq``) and the already stored ops with the batch's idempotency
    keys, numbers the requests by ``store.plan_append``'s rules, and writes
    the new ops.  Another
    transaction appending to one of those documents, from this pool or any
    other process, waits for the row lock and then reads the head this one
    committed (every connection of the pool runs READ COMMITTED, whatever the
    server's default isolation), so numbers stay gapless.  Every insert into
    ``ops`` happens under its document's row lock, which is what makes the
    duplicate lookup race-free; the unique index on the idempotency key backs
    it up.  When the store knows every head of a batch from its own last
    commits, one plain statement (``_APPEND_KNOWN``) takes the same locks and
    inserts the batch numbered in Python only if those heads still hold;
    otherwise nothing is written and ``cowrite_append`` runs.

Round trips
    A batch costs one round trip whatever its size (it was five: BEGIN, lock,
    duplicate lookup, write, COMMIT; the database's CPU per batch fell with
    them, docs/PERFORMANCE.md).  Rows travel as arrays and are expanded with
    ``unnest``.  Connections go back to the pool without asyncpg's reset query
    (nothing here leaves session state behind; an open transaction is rolled
    back), which would be one more round trip per call.

Durability
    A commit returns once the server has made it durable as its
    ``synchronous_commit`` setting says.  The store does not override that
    setting, so a server configured for synchronous replication
    (``remote_apply``) keeps that stronger guarantee.  With ``fsync = off`` or
    ``synchronous_commit = off`` on the server, acknowledged appends can be lost
    in a crash: do not run cowrite so.

Schema
    Tables are created in the connection's ``search_path`` schema; pass
    ``server_settings={"search_path": "myschema"}`` to use another one (the
    contract tests give each test its own schema that way).  Migrations run
    under a transaction-scoped advisory lock keyed by the schema, so processes
    starting together apply each migration once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import asyncpg

from cowrite.backends.store import (
    AppendRequest,
    AppendResult,
    Compaction,
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
    plan_append,
)

#: Schema migrations; ``MIGRATIONS[i]`` brings the schema from version i to i + 1.
#: Kept inline rather than in .sql files so that they ship with the module.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE documents (
            document_id text PRIMARY KEY,
            head        bigint NOT NULL DEFAULT 0 CHECK (head >= 0),
            created_at  double precision NOT NULL
        )
        """,
        """
        CREATE TABLE ops (
            document_id  text NOT NULL REFERENCES documents (document_id),
            seq          bigint NOT NULL CHECK (seq > 0),
            user_id      text NOT NULL,
            client_op_id text,
            payload      bytea NOT NULL,
            created_at   double precision NOT NULL,
            PRIMARY KEY (document_id, seq)
        )
        """,
        # The idempotency key; also what append_batch looks duplicates up by.
        """
        CREATE UNIQUE INDEX ops_client_op_id ON ops (document_id, user_id, client_op_id)
        WHERE client_op_id IS NOT NULL
        """,
        """
        CREATE TABLE roles (
            document_id text NOT NULL REFERENCES documents (document_id),
            user_id     text NOT NULL,
            role        text NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
            PRIMARY KEY (document_id, user_id)
        )
        """,
    ),
    # 2: append_batch in one round trip (see "Sequencing" above), and a
    # document's head is its last op's seq (max over the primary key) instead
    # of a column updated by every batch: those updates left dead row versions
    # in a 1-row-per-document table faster than autovacuum removes them, and
    # every later lock walked them (database CPU per batch grew from 0.7 to
    # 4 ms over 12,000 batches, measured).  The rules are
    # store.plan_append's, in PL/pgSQL: lock the documents in id order, refuse
    # the first unknown one (SQLSTATE CWU01, message = its id), number each new
    # op after its document's head in batch order, answer a repeated
    # idempotency key (stored before or earlier in the batch) with its seq.
    # Keys are compared as length-prefixed strings, so no separator can make
    # two different keys equal.  Lookups use the indexes whatever the
    # table's size was when the session first planned them (SET below).
    (
        r"""
        CREATE FUNCTION cowrite_append(
            p_docs text[], p_users text[], p_op_ids text[], p_payloads bytea[],
            p_at double precision
        ) RETURNS TABLE (idx integer, seq bigint, duplicate boolean)
        LANGUAGE plpgsql
        -- PL/pgSQL keeps a session's plans: planned while the tables were
        -- empty, a lookup would stay a sequential scan as the log grows (CPU
        -- per batch grew with the table, measured).  Every statement here has
        -- an index for its lookups; this makes the planner always use it.
        SET enable_seqscan = off
        AS $fn$
        DECLARE
            n integer := coalesce(array_length(p_docs, 1), 0);
            doc_ids text[];
            heads bigint[];
            key_ids text[];
            key_seqs bigint[];
            k text;
            i integer;
            j integer;
            s bigint;
            w_docs text[] := '{}';
            w_seqs bigint[] := '{}';
            w_users text[] := '{}';
            w_op_ids text[] := '{}';
            w_payloads bytea[] := '{}';
        BEGIN
            SELECT coalesce(array_agg(l.document_id ORDER BY l.document_id), '{}')
              INTO doc_ids
              FROM (SELECT d.document_id FROM documents AS d
                     WHERE d.document_id = ANY (p_docs)
                     ORDER BY d.document_id FOR NO KEY UPDATE) AS l;
            FOR i IN 1 .. n LOOP
                IF array_position(doc_ids, p_docs[i]) IS NULL THEN
                    RAISE EXCEPTION USING ERRCODE = 'CWU01', MESSAGE = p_docs[i];
                END IF;
            END LOOP;
            -- Read after the locks are held: the last holder's ops are visible.
            -- One scalar lookup per document and per key (not a join over the
            -- batch's arrays): the session caches each statement's plan, and a
            -- join planned while the log was small stays a scan of the log
            -- (database CPU per batch grew with the table, measured); a scalar
            -- equality on a unique index stays an index lookup.
            heads := array_fill(0::bigint, ARRAY[cardinality(doc_ids)]);
            FOR j IN 1 .. cardinality(doc_ids) LOOP
                SELECT coalesce(max(o.seq), 0) INTO s FROM ops AS o
                 WHERE o.document_id = doc_ids[j];
                heads[j] := s;
            END LOOP;
            key_ids := '{}';
            key_seqs := '{}';
            FOR i IN 1 .. n LOOP
                idx := i - 1;
                k := NULL;
                IF p_op_ids[i] IS NOT NULL THEN
                    k := length(p_docs[i]) || ':' || p_docs[i] || length(p_users[i]) || ':'
                         || p_users[i] || p_op_ids[i];
                    j := array_position(key_ids, k);
                    IF j IS NOT NULL THEN
                        seq := key_seqs[j];
                        duplicate := true;
                        RETURN NEXT;
                        CONTINUE;
                    END IF;
                    SELECT o.seq INTO s FROM ops AS o
                     WHERE o.document_id = p_docs[i] AND o.user_id = p_users[i]
                       AND o.client_op_id = p_op_ids[i];
                    IF FOUND THEN
                        key_ids := key_ids || k;
                        key_seqs := key_seqs || s;
                        seq := s;
                        duplicate := true;
                        RETURN NEXT;
                        CONTINUE;
                    END IF;
                END IF;
                j := array_position(doc_ids, p_docs[i]);
                s := heads[j] + 1;
                heads[j] := s;
                IF k IS NOT NULL THEN
                    key_ids := key_ids || k;
                    key_seqs := key_seqs || s;
                END IF;
                w_docs := w_docs || p_docs[i];
                w_seqs := w_seqs || s;
                w_users := w_users || p_users[i];
                w_op_ids := w_op_ids || p_op_ids[i];
                w_payloads := w_payloads || p_payloads[i];
                seq := s;
                duplicate := false;
                RETURN NEXT;
            END LOOP;
            IF array_length(w_docs, 1) > 0 THEN
                INSERT INTO ops (document_id, seq, user_id, client_op_id, payload, created_at)
                SELECT t.d, t.s, t.u, t.c, t.p, p_at
                  FROM unnest(w_docs, w_seqs, w_users, w_op_ids, w_payloads) AS t (d, s, u, c, p);
            END IF;
        END
        $fn$
        """,
        "ALTER TABLE documents DROP COLUMN head",
    ),
    # 3: snapshots (store.Snapshot).  A document's head stays max(ops.seq):
    # compaction never deletes the newest op (store.compaction_cutoff).
    (
        """
        CREATE TABLE snapshots (
            document_id text NOT NULL REFERENCES documents (document_id),
            seq         bigint NOT NULL CHECK (seq > 0),
            user_id     text NOT NULL,
            data        bytea NOT NULL,
            created_at  double precision NOT NULL,
            PRIMARY KEY (document_id, seq)
        )
        """,
    ),
    # 4: cowrite_append in two statements instead of a PL/pgSQL loop (each
    # statement the loop ran, a head lookup per document, a key lookup per op,
    # an array append per column per op, was one executor start-up), and no
    # foreign key on ops: together 10-15 % less database CPU per op
    # (docs/PERFORMANCE.md).  The rules stay those of migration 2, as one
    # query: the first request of each idempotency key (in batch order) looks
    # up the seq stored for it; the new ones are numbered after their
    # document's head in batch order; every request answers its key's first
    # request's seq.  The query runs after the lock statement, so (READ
    # COMMITTED: a new snapshot per statement) it sees every op the previous
    # holder of a lock committed.
    (
        r"""
        CREATE OR REPLACE FUNCTION cowrite_append(
            p_docs text[], p_users text[], p_op_ids text[], p_payloads bytea[],
            p_at double precision
        ) RETURNS TABLE (idx integer, seq bigint, duplicate boolean)
        LANGUAGE plpgsql
        SET enable_seqscan = off
        AS $fn$
        #variable_conflict use_column
        DECLARE
            locked text[];
            k integer;
        BEGIN
            SELECT coalesce(array_agg(l.document_id), '{}') INTO locked
              FROM (SELECT d.document_id FROM documents AS d
                     WHERE d.document_id = ANY (p_docs)
                     ORDER BY d.document_id FOR NO KEY UPDATE) AS l;
            IF NOT (p_docs <@ locked) THEN
                FOR k IN 1 .. cardinality(p_docs) LOOP
                    IF array_position(locked, p_docs[k]) IS NULL THEN
                        RAISE EXCEPTION USING ERRCODE = 'CWU01', MESSAGE = p_docs[k];
                    END IF;
                END LOOP;
            END IF;
            RETURN QUERY
            WITH req AS (
                SELECT t.n, t.d, t.u, t.c, t.p,
                       CASE WHEN t.c IS NULL THEN t.n
                            ELSE min(t.n) OVER (PARTITION BY t.d, t.u, t.c) END AS first_n
                  FROM unnest(p_docs, p_users, p_op_ids, p_payloads) WITH ORDINALITY
                       AS t (d, u, c, p, n)
            ), firsts AS (
                SELECT r.n, r.d, r.u, r.c, r.p,
                       (SELECT o.seq FROM ops AS o
                         WHERE o.document_id = r.d AND o.user_id = r.u
                           AND o.client_op_id = r.c) AS stored
                  FROM req AS r
                 WHERE r.first_n = r.n
            ), heads AS MATERIALIZED (  -- once, not once per joined row
                SELECT h.d,
                       (SELECT coalesce(max(o.seq), 0) FROM ops AS o
                         WHERE o.document_id = h.d) AS head
                  FROM (SELECT DISTINCT f.d FROM firsts AS f WHERE f.stored IS NULL) AS h
            ), numbered AS (
                SELECT f.n, f.d, f.u, f.c, f.p, f.stored,
                       coalesce(f.stored, hd.head + row_number() OVER (
                           PARTITION BY f.d, f.stored IS NULL ORDER BY f.n)) AS s
                  FROM firsts AS f LEFT JOIN heads AS hd ON hd.d = f.d
            ), written AS (
                INSERT INTO ops (document_id, seq, user_id, client_op_id, payload, created_at)
                SELECT w.d, w.s, w.u, w.c, w.p, p_at FROM numbered AS w
                 WHERE w.stored IS NULL
            )
            SELECT (r.n - 1)::integer, a.s, (a.stored IS NOT NULL OR r.first_n <> r.n)
              FROM req AS r JOIN numbered AS a ON a.n = r.first_n
             ORDER BY r.n;
        END
        $fn$
        """,
        # The foreign key from ops to documents checked, per inserted op, a
        # row that cowrite_append has just found and locked itself (and no
        # code deletes documents): its trigger was about 14 % of the
        # database's CPU for a batch of 8 ops.
        "ALTER TABLE ops DROP CONSTRAINT IF EXISTS ops_document_id_fkey",
    ),
)

_MIGRATION_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtext('cowrite.store.migrate:' || current_schema()))"
)
_APPEND = "SELECT idx, seq, duplicate FROM cowrite_append($1, $2, $3, $4, $5)"
# The append when this store knows every head of the batch's documents from
# its own last commits (``PostgresStore._heads``): the rows numbered here by
# store.plan_append, inserted by one plain statement, all or none.  It takes
# cowrite_append's row locks (a cowrite_append waiting for them then reads the
# heads this commits), then inserts only if every head is still the one
# expected ($7/$8: no other writer appended meanwhile).  Otherwise it inserts
# nothing, and a stored idempotency key or a row another writer numbered
# meanwhile (the statement's snapshot predates a lock wait) makes the unique
# indexes refuse it: either way the batch goes through cowrite_append.
# A head only grows (compaction keeps each document's newest op), so "the
# newest seq is the expected head" proves nobody appended since.  Database
# CPU per commit 280 -> 165 µs for one op, 380 -> 270 µs for eight
# (docs/PERFORMANCE.md): no PL/pgSQL call, one short plan.
_APPEND_KNOWN = """
    WITH locked AS (
        SELECT d.document_id FROM documents AS d
         WHERE d.document_id = ANY ($7::text[])
         ORDER BY d.document_id FOR NO KEY UPDATE
    )
    INSERT INTO ops (document_id, seq, user_id, client_op_id, payload, created_at)
    SELECT t.d, t.s, t.u, t.c, t.p, $6
      FROM unnest($1::text[], $5::bigint[], $2::text[], $3::text[], $4::bytea[])
           AS t (d, s, u, c, p)
     WHERE (SELECT count(*) FROM locked) = cardinality($7::text[])
       AND NOT EXISTS (
           SELECT 1 FROM unnest($7::text[], $8::bigint[]) AS h (d, head)
            WHERE coalesce((SELECT o.seq FROM ops AS o WHERE o.document_id = h.d
                             ORDER BY o.seq DESC LIMIT 1), 0) <> h.head)
"""
#: Documents whose heads the writer remembers (forgotten all at once beyond).
_MAX_HEADS = 100_000
#: SQLSTATE of cowrite_append's "unknown document" (its message is the id).
_UNKNOWN_DOCUMENT = "CWU01"
_SELECT_OPS = """
    SELECT document_id, seq, user_id, client_op_id, payload, created_at FROM ops
    WHERE document_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""
# One statement: no row for an unknown document, one row with NULL op columns
# for a document without ops after ``since``, else one row per op, each with the
# head (one snapshot, so the head is at least the last seq).
_READ_PAGE = """
    SELECT h.head, o.seq, o.user_id, o.client_op_id, o.payload, o.created_at
      FROM documents AS d
     CROSS JOIN LATERAL (SELECT coalesce(max(x.seq), 0) AS head FROM ops AS x
                          WHERE x.document_id = d.document_id) AS h
      LEFT JOIN LATERAL (SELECT y.seq, y.user_id, y.client_op_id, y.payload, y.created_at
                           FROM ops AS y
                          WHERE y.document_id = d.document_id AND y.seq > $2
                          ORDER BY y.seq LIMIT $3) AS o ON true
     WHERE d.document_id = $1
     ORDER BY o.seq
"""
# _READ_PAGE for several (document, since, limit) triples; ``i`` numbers them
# from 1.  A triple whose document does not exist has no row.
_READ_PAGES = """
    SELECT w.i, h.head, o.seq, o.user_id, o.client_op_id, o.payload, o.created_at
      FROM unnest($1::text[], $2::bigint[], $3::integer[]) WITH ORDINALITY
           AS w(document_id, since, lim, i)
      JOIN documents AS d ON d.document_id = w.document_id
     CROSS JOIN LATERAL (SELECT coalesce(max(x.seq), 0) AS head FROM ops AS x
                          WHERE x.document_id = d.document_id) AS h
      LEFT JOIN LATERAL (SELECT y.seq, y.user_id, y.client_op_id, y.payload, y.created_at
                           FROM ops AS y
                          WHERE y.document_id = d.document_id AND y.seq > w.since
                          ORDER BY y.seq LIMIT w.lim) AS o ON true
     ORDER BY w.i, o.seq
"""
# One statement, so the document and its owner appear together.  ON CONFLICT DO
# NOTHING waits for a concurrent creator; exactly one caller gets a row back.
_CREATE_DOCUMENT = """
    WITH doc AS (
        INSERT INTO documents (document_id, created_at) VALUES ($1, $3)
        ON CONFLICT (document_id) DO NOTHING
        RETURNING document_id
    )
    INSERT INTO roles (document_id, user_id, role)
    SELECT document_id, $2, 'owner' FROM doc
    RETURNING document_id
"""
# Rows are inserted in document_id order: two instances creating overlapping
# sets lock them in one order and cannot deadlock.
_CREATE_DOCUMENTS = """
    WITH wanted AS (
        SELECT * FROM unnest($1::text[], $2::text[]) AS w(document_id, owner_id)
    ), doc AS (
        INSERT INTO documents (document_id, created_at)
        SELECT document_id, $3 FROM wanted ORDER BY document_id
        ON CONFLICT (document_id) DO NOTHING
        RETURNING document_id
    )
    INSERT INTO roles (document_id, user_id, role)
    SELECT doc.document_id, wanted.owner_id, 'owner' FROM doc JOIN wanted USING (document_id)
    RETURNING document_id
"""
# INSERT ... SELECT inserts nothing for an unknown document instead of raising.
_UPSERT_ROLE = """
    INSERT INTO roles (document_id, user_id, role)
    SELECT document_id, $2, $3 FROM documents WHERE document_id = $1
    ON CONFLICT (document_id, user_id) DO UPDATE SET role = excluded.role
"""

_SELECT_LATEST_SNAPSHOT = """
    SELECT document_id, seq, user_id, data, created_at FROM snapshots
    WHERE document_id = $1 ORDER BY seq DESC LIMIT 1
"""
# The document's row lock, as cowrite_append takes it: snapshot writes and
# compaction serialise with the document's appends.
_LOCK_DOCUMENT = """
    SELECT (SELECT coalesce(max(seq), 0) FROM ops WHERE document_id = $1)
      FROM documents WHERE document_id = $1 FOR NO KEY UPDATE
"""

#: What the driver raises when the server or the network fails.
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@contextmanager
def _translated() -> Iterator[None]:
    """Re-raise driver and network errors as ``StoreUnavailable``."""
    try:
        yield
    except _DRIVER_ERRORS as exc:
        raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc


async def _reset(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """What a connection needs before it goes back to the pool: nothing but
    ending a transaction left open by an error (the store sets no session
    state, takes no session advisory locks, never LISTENs)."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _rowcount(status: str) -> int:
    """The row count at the end of a command status such as ``INSERT 0 1``."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore:
    """``OperationStore`` on the PostgreSQL database at ``dsn``.

    ``min_size`` and ``max_size`` bound the connection pool.  ``server_settings``
    are sent on every connection (e.g. ``search_path``).  ``command_timeout``
    (seconds) bounds each statement; a timed-out call raises
    ``StoreUnavailable``.  See the module docstring for the guarantees.
    """

    def __init__(
        self,
        dsn: str,
        min_size: int = 1,
        max_size: int = 10,
        *,
        server_settings: Mapping[str, str] | None = None,
        command_timeout: float | None = 30.0,
    ) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._server_settings = dict(server_settings or {})
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        # append_batch keeps one connection of the pool (acquiring and
        # releasing per call costs more CPU than the round trip itself).
        self._writer: asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | None = None
        self._writer_lock = asyncio.Lock()
        # Each document's head as of this store's last commit naming it (see
        # _APPEND_KNOWN); a guess that the statement itself verifies.
        self._heads: dict[str, int] = {}
        self.known_appends = 0
        self.known_misses = 0

    def __repr__(self) -> str:
        # The DSN may hold a password: show only where it points.
        return f"PostgresStore(<dsn>, min_size={self._min_size}, max_size={self._max_size})"

    async def open(self) -> None:
        if self._pool is not None:
            raise StoreError("store is already open")
        with _translated():
            pool: asyncpg.Pool[asyncpg.Record] = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                server_settings={
                    **self._server_settings,
                    "default_transaction_isolation": "read committed",
                },
                command_timeout=self._command_timeout,
                reset=_reset,
            )
        self._pool = pool
        try:
            await self.migrate()
        except BaseException:
            self._pool = None
            await pool.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        writer, self._writer = self._writer, None
        if pool is not None:
            with _translated():
                if writer is not None:
                    await pool.release(writer)
                await pool.close()

    def _open_pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise StoreNotOpen(f"{self!r} is not open")
        return self._pool

    async def migrate(self) -> None:
        pool = self._open_pool()
        with _translated():
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(_MIGRATION_LOCK)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version "
                    "(version integer PRIMARY KEY, applied_at double precision NOT NULL)"
                )
                current: int = await conn.fetchval(
                    "SELECT coalesce(max(version), 0) FROM schema_version"
                )
                if current > len(MIGRATIONS):
                    raise StoreError(
                        f"database schema version {current} is newer than this code "
                        f"knows ({len(MIGRATIONS)})"
                    )
                for version in range(current + 1, len(MIGRATIONS) + 1):
                    for statement in MIGRATIONS[version - 1]:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                        version,
                        time.time(),
                    )

    async def ping(self) -> bool:
        if self._pool is None:
            return False
        try:
            with _translated():
                return bool(await self._pool.fetchval("SELECT true", timeout=5.0))
        except StoreError:
            return False

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        pool = self._open_pool()
        if not requests:
            return []
        batch = list(requests)  # the caller may mutate its sequence meanwhile
        at = time.time()
        async with self._writer_lock:
            with _translated():
                writer = self._writer
                if writer is None:
                    writer = self._writer = await pool.acquire()
                try:
                    results = await self._append_known(writer, batch, at)
                    if results is None:
                        rows = await writer.fetch(
                            _APPEND,
                            [r.document_id for r in batch],
                            [r.user_id for r in batch],
                            [r.client_op_id for r in batch],
                            [r.payload for r in batch],
                            at,
                        )
                except asyncpg.PostgresError as exc:
                    if exc.sqlstate == _UNKNOWN_DOCUMENT:
                        raise UnknownDocument(str(getattr(exc, "message", exc))) from None
                    raise
                except BaseException:
                    # The connection may be broken: give it back, take another next time.
                    self._writer = None
                    self._heads.clear()
                    if self._pool is pool:
                        await pool.release(writer)
                    raise
        if results is not None:
            return results
        ordered: list[AppendResult | None] = [None] * len(batch)
        for row in rows:
            ordered[row["idx"]] = AppendResult(seq=row["seq"], duplicate=row["duplicate"])
        if any(result is None for result in ordered):
            raise StoreUnavailable("postgres: cowrite_append answered fewer rows than requests")
        answered = [result for result in ordered if result is not None]
        self._remember(batch, answered)
        return answered

    async def _append_known(
        self, writer: Any, batch: list[AppendRequest], at: float
    ) -> list[AppendResult] | None:
        """The batch through _APPEND_KNOWN when every head is known; None when
        it must go through cowrite_append (unknown heads, or the statement
        found them stale or a key already stored: nothing written then)."""
        heads = self._heads
        docs = list(dict.fromkeys(r.document_id for r in batch))
        known = {doc: heads[doc] for doc in docs if doc in heads}
        if len(known) < len(docs):
            return None
        expected = list(known.values())
        plan = plan_append(batch, known, {})
        new = plan.new_ops
        try:
            status = await writer.execute(
                _APPEND_KNOWN,
                [r.document_id for r, _ in new],
                [r.user_id for r, _ in new],
                [r.client_op_id for r, _ in new],
                [r.payload for r, _ in new],
                [seq for _, seq in new],
                at,
                docs,
                expected,
            )
        except asyncpg.UniqueViolationError:
            status = "INSERT 0 0"
        if _rowcount(status) != len(new):
            self.known_misses += 1
            for doc in docs:
                heads.pop(doc, None)
            return None
        self.known_appends += 1
        heads.update(plan.heads)
        return plan.results

    def _remember(self, batch: list[AppendRequest], results: list[AppendResult]) -> None:
        """Heads after a cowrite_append: each document's last new seq (a
        document with only duplicates in the batch stays unknown)."""
        heads = self._heads
        if len(heads) > _MAX_HEADS:
            heads.clear()
        for request in batch:
            heads.pop(request.document_id, None)
        for request, result in zip(batch, results, strict=True):
            if not result.duplicate:
                heads[request.document_id] = result.seq

    async def read_ops(self, document_id: str, since: int, limit: int) -> list[StoredOp]:
        check_limit(limit)
        pool = self._open_pool()
        with _translated():
            rows = await pool.fetch(_SELECT_OPS, document_id, since, limit)
            if not rows and not await self._exists(pool, document_id):
                raise UnknownDocument(document_id)
        return [StoredOp(*row) for row in rows]

    async def read_page(
        self, document_id: str, since: int, limit: int
    ) -> tuple[list[StoredOp], int]:
        check_limit(limit)
        pool = self._open_pool()
        with _translated():
            rows = await pool.fetch(_READ_PAGE, document_id, since, limit)
        if not rows:
            raise UnknownDocument(document_id)
        head: int = rows[0]["head"]
        ops = [
            StoredOp(
                document_id,
                r["seq"],
                r["user_id"],
                r["client_op_id"],
                r["payload"],
                r["created_at"],
            )
            for r in rows
            if r["seq"] is not None
        ]
        return ops, max(head, ops[-1].seq if ops else 0)

    async def read_pages(
        self, pages: Sequence[tuple[str, int, int]]
    ) -> list[tuple[list[StoredOp], int] | None]:
        for _, _, limit in pages:
            check_limit(limit)
        if not pages:
            return []
        pool = self._open_pool()
        with _translated():
            rows = await pool.fetch(
                _READ_PAGES,
                [p[0] for p in pages],
                [p[1] for p in pages],
                [p[2] for p in pages],
            )
        answers: list[tuple[list[StoredOp], int] | None] = [None] * len(pages)
        heads = [0] * len(pages)
        for r in rows:
            i = r["i"] - 1
            answer = answers[i]
            if answer is None:
                answer = answers[i] = ([], 0)
                heads[i] = r["head"]
            if r["seq"] is not None:
                answer[0].append(
                    StoredOp(
                        pages[i][0],
                        r["seq"],
                        r["user_id"],
                        r["client_op_id"],
                        r["payload"],
                        r["created_at"],
                    )
                )
        for i, answer in enumerate(answers):
            if answer is not None:
                ops = answer[0]
                answers[i] = (ops, max(heads[i], ops[-1].seq if ops else 0))
        return answers

    async def head(self, document_id: str) -> int:
        pool = self._open_pool()
        with _translated():
            head: int | None = await pool.fetchval(
                "SELECT (SELECT coalesce(max(seq), 0) FROM ops WHERE document_id = $1)"
                " FROM documents WHERE document_id = $1",
                document_id,
            )
        if head is None:
            raise UnknownDocument(document_id)
        return head

    async def create_document(self, document_id: str, owner_id: str) -> bool:
        pool = self._open_pool()
        with _translated():
            created = await pool.fetchval(_CREATE_DOCUMENT, document_id, owner_id, time.time())
        return created is not None

    async def create_documents(self, documents: Sequence[tuple[str, str]]) -> set[str]:
        if not documents:
            return set()
        first: dict[str, str] = {}
        for document_id, owner_id in documents:
            first.setdefault(document_id, owner_id)
        pool = self._open_pool()
        with _translated():
            rows = await pool.fetch(
                _CREATE_DOCUMENTS, list(first), list(first.values()), time.time()
            )
        return {row[0] for row in rows}

    @staticmethod
    async def _exists(pool: asyncpg.Pool[asyncpg.Record], document_id: str) -> bool:
        found: Any = await pool.fetchval(
            "SELECT true FROM documents WHERE document_id = $1", document_id
        )
        return found is not None

    async def document_exists(self, document_id: str) -> bool:
        pool = self._open_pool()
        with _translated():
            return await self._exists(pool, document_id)

    async def get_role(self, document_id: str, user_id: str) -> Role | None:
        pool = self._open_pool()
        with _translated():
            role: str | None = await pool.fetchval(
                "SELECT role FROM roles WHERE document_id = $1 AND user_id = $2",
                document_id,
                user_id,
            )
        return None if role is None else Role(role)

    async def set_role(self, document_id: str, user_id: str, role: Role) -> None:
        pool = self._open_pool()
        with _translated():
            status = await pool.execute(_UPSERT_ROLE, document_id, user_id, Role(role).value)
        if _rowcount(status) == 0:
            raise UnknownDocument(document_id)

    async def revoke(self, document_id: str, user_id: str) -> bool:
        pool = self._open_pool()
        with _translated():
            status = await pool.execute(
                "DELETE FROM roles WHERE document_id = $1 AND user_id = $2", document_id, user_id
            )
        return _rowcount(status) > 0

    async def store_snapshot(
        self, document_id: str, seq: int, user_id: str, data: bytes
    ) -> Snapshot:
        pool = self._open_pool()
        with _translated():
            async with pool.acquire() as conn, conn.transaction():
                head = await self._locked_head(conn, document_id)
                latest: int = await conn.fetchval(
                    "SELECT coalesce(max(seq), 0) FROM snapshots WHERE document_id = $1",
                    document_id,
                )
                check_snapshot_seq(seq, head, latest)
                snapshot = Snapshot(document_id, seq, user_id, bytes(data), time.time())
                await conn.execute(
                    "INSERT INTO snapshots (document_id, seq, user_id, data, created_at)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    document_id,
                    seq,
                    user_id,
                    snapshot.data,
                    snapshot.created_at,
                )
        return snapshot

    @staticmethod
    async def _locked_head(conn: Any, document_id: str) -> int:
        head: int | None = await conn.fetchval(_LOCK_DOCUMENT, document_id)
        if head is None:
            raise UnknownDocument(document_id)
        return head

    async def latest_snapshot(self, document_id: str) -> Snapshot | None:
        pool = self._open_pool()
        with _translated():
            row = await pool.fetchrow(_SELECT_LATEST_SNAPSHOT, document_id)
        return None if row is None else Snapshot(*row)

    async def compact(self, document_id: str, *, keep_ops: int, keep_seconds: float) -> Compaction:
        if keep_ops < 0 or keep_seconds < 0:
            raise ValueError("keep_ops and keep_seconds must not be negative")
        pool = self._open_pool()
        deleted_ops = deleted_snapshots = 0
        with _translated():
            async with pool.acquire() as conn, conn.transaction():
                head = await self._locked_head(conn, document_id)
                row = await conn.fetchrow(_SELECT_LATEST_SNAPSHOT, document_id)
                if row is not None:
                    snapshot = Snapshot(*row)
                    cutoff = compaction_cutoff(snapshot.seq, head, keep_ops)
                    # The first op too young to go bounds the deletion (no hole
                    # when the writers' clocks disagree).
                    young: int | None = await conn.fetchval(
                        "SELECT min(seq) FROM ops WHERE document_id = $1 AND seq <= $2"
                        " AND created_at >= $3",
                        document_id,
                        cutoff,
                        snapshot.created_at - keep_seconds,
                    )
                    if young is not None:
                        cutoff = young - 1
                    if cutoff > 0:
                        deleted_ops = _rowcount(
                            await conn.execute(
                                "DELETE FROM ops WHERE document_id = $1 AND seq <= $2",
                                document_id,
                                cutoff,
                            )
                        )
                    deleted_snapshots = _rowcount(
                        await conn.execute(
                            "DELETE FROM snapshots WHERE document_id = $1 AND seq < $2",
                            document_id,
                            snapshot.seq,
                        )
                    )
                first: int | None = await conn.fetchval(
                    "SELECT min(seq) FROM ops WHERE document_id = $1", document_id
                )
        return Compaction(
            document_id, deleted_ops, deleted_snapshots, head + 1 if first is None else first
        )

    async def snapshot_documents(self) -> list[str]:
        pool = self._open_pool()
        with _translated():
            rows = await pool.fetch(
                "SELECT DISTINCT document_id FROM snapshots ORDER BY document_id"
            )
        return [row["document_id"] for row in rows]

    async def list_roles(self, document_id: str) -> dict[str, Role]:
        pool = self._open_pool()
        with _translated():
            rows = await pool.fetch(
                "SELECT user_id, role FROM roles WHERE document_id = $1", document_id
            )
            if not rows and not await self._exists(pool, document_id):
                raise UnknownDocument(document_id)
        return {row["user_id"]: Role(row["role"]) for row in rows}
