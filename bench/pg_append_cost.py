"""Where a PostgreSQL append's database CPU goes: ``cowrite_append`` against
probes that do part of its work, each called through asyncpg on one
connection, with the backend's user + system CPU per call read from ``/proc``
(the database must run on this machine) and this process's CPU per call.

    .venv/bin/python bench/pg_append_cost.py
    .venv/bin/python bench/pg_append_cost.py --calls 3000 --sizes 1,4,8

Probes (PL/pgSQL functions with cowrite_append's signature, created in a
throw-away schema next to the store's own tables):

  select 1          a round trip, nothing else
  insert (autocommit)  one plain INSERT of one row, synchronous commit
  noop              a function that returns a row and writes nothing
  lock              the document row locks cowrite_append takes, then commit
  lock + insert     the locks and an unnest INSERT of the batch into a copy
                    of ops (numbers from a sequence: no head or key lookups)
  advisory locks + insert  the same with transaction-scoped advisory locks
                    (no WAL record, no dirtied row) instead of the row locks
  cowrite_append    the store's function (migration 4)

The DSN is ``COWRITE_BENCH_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from cowrite.backends.store_postgres import PostgresStore
from pgschema import throwaway_schema
from proccpu import cpu_seconds

PG_DSN = os.environ.get("COWRITE_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SIGNATURE = (
    "p_docs text[], p_users text[], p_op_ids text[], p_payloads bytea[], p_at double precision"
)
RETURNS = "RETURNS TABLE (idx integer, seq bigint, duplicate boolean) LANGUAGE plpgsql"
LOCK = """
    SELECT coalesce(array_agg(l.document_id), '{}') INTO locked
      FROM (SELECT d.document_id FROM documents AS d WHERE d.document_id = ANY (p_docs)
             ORDER BY d.document_id FOR NO KEY UPDATE) AS l;
"""
INSERT = """
    INSERT INTO probe_ops (document_id, seq, user_id, client_op_id, payload, created_at)
    SELECT t.d, nextval('probe_seq'), t.u, t.c, t.p, p_at
      FROM unnest(p_docs, p_users, p_op_ids, p_payloads) AS t (d, u, c, p);
"""
# The same serialisation through transaction-scoped advisory locks (no WAL).
ADVISORY = """
    PERFORM pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtext(x) AS h FROM unnest(p_docs) AS x
                                           ORDER BY 1) AS k;
    SELECT coalesce(array_agg(d.document_id), '{}') INTO locked
      FROM documents AS d WHERE d.document_id = ANY (p_docs);
"""
ANSWER = "idx := 0; seq := 1; duplicate := false; RETURN NEXT;"
PROBES = {
    "probe_noop": f"BEGIN {ANSWER} END",
    "probe_lock": f"DECLARE locked text[]; BEGIN {LOCK} {ANSWER} END",
    "probe_lock_insert": f"DECLARE locked text[]; BEGIN {LOCK} {INSERT} {ANSWER} END",
    "probe_advisory_insert": f"DECLARE locked text[]; BEGIN {ADVISORY} {INSERT} {ANSWER} END",
}


async def measure(
    pid: int, calls: int, call: Callable[[int], Awaitable[object]]
) -> tuple[float, float]:
    """(backend µs, this process's µs) per call, after a warm-up."""
    for i in range(30):
        await call(i)
    backend, own = cpu_seconds(pid), time.process_time()
    for i in range(calls):
        await call(30 + i)
    return (
        (cpu_seconds(pid) - backend) / calls * 1e6,
        (time.process_time() - own) / calls * 1e6,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls measured per cell")
    parser.add_argument("--sizes", default="1,4", help="operations per call")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    async with throwaway_schema(PG_DSN) as schema:
        store = PostgresStore(PG_DSN, server_settings={"search_path": schema})
        try:
            await store.open()
            docs = [f"doc-{i}" for i in range(50)]
            await store.create_documents([(d, "bench-user") for d in docs])
            conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
            try:
                await conn.execute("CREATE SEQUENCE probe_seq START 1000000000")
                await conn.execute("CREATE TABLE probe_rows (a integer, b bytea)")
                # The probes' inserts go to a copy of ops (its indexes included),
                # so their numbers never meet cowrite_append's.
                await conn.execute("CREATE TABLE probe_ops (LIKE ops INCLUDING ALL)")
                for name, body in PROBES.items():
                    await conn.execute(
                        f"CREATE FUNCTION {name}({SIGNATURE}) {RETURNS} "
                        f"SET enable_seqscan = off AS $fn$ {body} $fn$"
                    )
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                payload = os.urandom(100)
                run = uuid.uuid4().hex[:8]
                rows: list[tuple[str, int, float, float]] = []

                def function_call(name: str, size: int) -> Callable[[int], Awaitable[object]]:
                    def call(i: int) -> Awaitable[object]:
                        return conn.fetch(
                            f"SELECT idx, seq, duplicate FROM {name}($1, $2, $3, $4, $5)",
                            [docs[(i * size + j) % len(docs)] for j in range(size)],
                            ["bench-user"] * size,
                            [f"{run}-{name}-{size}-{i}-{j}" for j in range(size)],
                            [payload] * size,
                            time.time(),
                        )

                    return call

                rows.append(
                    (
                        "select 1",
                        0,
                        *await measure(pid, args.calls, lambda i: conn.fetchval("SELECT 1")),
                    )
                )
                rows.append(
                    (
                        "insert (autocommit)",
                        1,
                        *await measure(
                            pid,
                            args.calls,
                            lambda i: conn.execute(
                                "INSERT INTO probe_rows VALUES ($1, $2)", i, payload
                            ),
                        ),
                    )
                )
                for size in sizes:
                    for label, name in (
                        ("noop", "probe_noop"),
                        ("lock", "probe_lock"),
                        ("lock + insert", "probe_lock_insert"),
                        ("advisory locks + insert", "probe_advisory_insert"),
                        ("cowrite_append", "cowrite_append"),
                    ):
                        rows.append(
                            (
                                label,
                                size,
                                *await measure(pid, args.calls, function_call(name, size)),
                            )
                        )
            finally:
                await conn.close()
        finally:
            await store.close()

    print(f"\n{args.calls} calls per cell, one connection, {PG_DSN.rsplit('@', 1)[-1]}\n")
    print("| call | operations | database CPU per call (µs) | this process's CPU per call (µs) |")
    print("|---|---:|---:|---:|")
    for label, size, backend, own in rows:
        print(f"| {label} | {size} | {backend:,.0f} | {own:,.0f} |")


if __name__ == "__main__":
    try:
        import uvloop  # the server's loop, when installed

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
