"""``OperationStore`` on PostgreSQL, through an asyncpg connection pool.

Sequencing
    ``append_batch`` first locks the rows of every document the batch names
    (``SELECT ... FOR NO KEY UPDATE``, in ``document_id`` order so that two
    batches naming the same documents cannot deadlock; NO KEY so that the
    foreign-key checks of role changes need not wait), then reads their heads
    and the already stored ops with the batch's idempotency keys, decides every
    request's ``seq`` with ``plan_append``, and writes the new ops and heads.
    Another transaction appending to one of those documents, from this pool or
    any other process, waits for the row lock and then reads the head this one
    committed (the transaction is READ COMMITTED explicitly, whatever the
    server's default isolation), so numbers stay gapless.  Every insert into ``ops`` happens under its document's row lock,
    which is what makes the duplicate lookup race-free; the unique index on the
    idempotency key backs it up.

Round trips
    A batch costs the same round trips whatever its size: BEGIN, the lock,
    the duplicate lookup (only when a request has a ``client_op_id``), one
    statement that inserts the ops and moves the heads, COMMIT.  Rows travel
    as arrays and are expanded with ``unnest``.

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

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import asyncpg

from cowrite.backends.store import (
    AppendRequest,
    AppendResult,
    IdempotencyKey,
    Role,
    StoredOp,
    StoreError,
    StoreNotOpen,
    StoreUnavailable,
    UnknownDocument,
    idempotency_key,
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
)

_MIGRATION_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtext('cowrite.store.migrate:' || current_schema()))"
)
_LOCK_DOCUMENTS = """
    SELECT document_id, head FROM documents
    WHERE document_id = ANY($1::text[]) ORDER BY document_id FOR NO KEY UPDATE
"""
_FIND_DUPLICATES = """
    SELECT o.document_id, o.user_id, o.client_op_id, o.seq
    FROM ops AS o
    JOIN unnest($1::text[], $2::text[], $3::text[]) AS k (document_id, user_id, client_op_id)
      ON o.document_id = k.document_id AND o.user_id = k.user_id
     AND o.client_op_id = k.client_op_id
    WHERE o.client_op_id IS NOT NULL
"""
# One statement writes the new ops and moves the heads (one round trip).
_WRITE_PLAN = """
    WITH inserted AS (
        INSERT INTO ops (document_id, seq, user_id, client_op_id, payload, created_at)
        SELECT d, s, u, c, p, $6::double precision
        FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bytea[])
             AS t (d, s, u, c, p)
    )
    UPDATE documents AS d SET head = v.head
    FROM unnest($7::text[], $8::bigint[]) AS v (document_id, head)
    WHERE d.document_id = v.document_id
"""
_SELECT_OPS = """
    SELECT document_id, seq, user_id, client_op_id, payload, created_at FROM ops
    WHERE document_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""
# One statement, so the document and its owner appear together.  ON CONFLICT DO
# NOTHING waits for a concurrent creator; exactly one caller gets a row back.
_CREATE_DOCUMENT = """
    WITH doc AS (
        INSERT INTO documents (document_id, head, created_at) VALUES ($1, 0, $3)
        ON CONFLICT (document_id) DO NOTHING
        RETURNING document_id
    )
    INSERT INTO roles (document_id, user_id, role)
    SELECT document_id, $2, 'owner' FROM doc
    RETURNING document_id
"""
# INSERT ... SELECT inserts nothing for an unknown document instead of raising.
_UPSERT_ROLE = """
    INSERT INTO roles (document_id, user_id, role)
    SELECT document_id, $2, $3 FROM documents WHERE document_id = $1
    ON CONFLICT (document_id, user_id) DO UPDATE SET role = excluded.role
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
                server_settings=self._server_settings,
                command_timeout=self._command_timeout,
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
        if pool is not None:
            with _translated():
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
        documents = sorted({request.document_id for request in batch})
        keys = {key for key in map(idempotency_key, batch) if key is not None}
        with _translated():
            async with pool.acquire() as conn, conn.transaction(isolation="read_committed"):
                rows = await conn.fetch(_LOCK_DOCUMENTS, documents)
                heads: dict[str, int] = {row["document_id"]: row["head"] for row in rows}
                stored: dict[IdempotencyKey, int] = {}
                if keys:
                    docs, users, op_ids = zip(*keys, strict=True)
                    for row in await conn.fetch(_FIND_DUPLICATES, docs, users, op_ids):
                        key = (row["document_id"], row["user_id"], row["client_op_id"])
                        stored[key] = row["seq"]
                plan = plan_append(batch, heads, stored)
                if plan.new_ops:
                    await conn.execute(
                        _WRITE_PLAN,
                        [req.document_id for req, _ in plan.new_ops],
                        [seq for _, seq in plan.new_ops],
                        [req.user_id for req, _ in plan.new_ops],
                        [req.client_op_id for req, _ in plan.new_ops],
                        [req.payload for req, _ in plan.new_ops],
                        time.time(),
                        list(plan.heads),
                        list(plan.heads.values()),
                    )
        return plan.results

    async def read_ops(self, document_id: str, since: int, limit: int) -> list[StoredOp]:
        if limit < 0:
            raise ValueError(f"limit must not be negative: {limit}")
        pool = self._open_pool()
        with _translated():
            rows = await pool.fetch(_SELECT_OPS, document_id, since, limit)
            if not rows and not await self._exists(pool, document_id):
                raise UnknownDocument(document_id)
        return [StoredOp(*row) for row in rows]

    async def head(self, document_id: str) -> int:
        pool = self._open_pool()
        with _translated():
            head: int | None = await pool.fetchval(
                "SELECT head FROM documents WHERE document_id = $1", document_id
            )
        if head is None:
            raise UnknownDocument(document_id)
        return head

    async def create_document(self, document_id: str, owner_id: str) -> bool:
        pool = self._open_pool()
        with _translated():
            created = await pool.fetchval(_CREATE_DOCUMENT, document_id, owner_id, time.time())
        return created is not None

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

    async def list_roles(self, document_id: str) -> dict[str, Role]:
        pool = self._open_pool()
        with _translated():
            rows = await pool.fetch(
                "SELECT user_id, role FROM roles WHERE document_id = $1", document_id
            )
            if not rows and not await self._exists(pool, document_id):
                raise UnknownDocument(document_id)
        return {row["user_id"]: Role(row["role"]) for row in rows}
