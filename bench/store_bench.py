"""Append throughput of the operation stores with grouped commits.

One writer appends batches (one ``append_batch`` = one commit, as the core's
committer flushes) of ``--sizes`` ops, each ~200 random bytes with a unique
``client_op_id`` and spread round-robin over ``--docs`` documents, for
``--seconds`` per cell; prints a Markdown table of ops/s, commits/s and commit
latency percentiles.

    .venv/bin/python bench/store_bench.py
    .venv/bin/python bench/store_bench.py --stores sqlite-full,postgres --sizes 1,100 --seconds 2

Stores: ``sqlite-full`` (the default ``SqliteStore``, ``synchronous=FULL``),
``sqlite-normal`` (``synchronous=NORMAL``: not durable on power loss, shown
for comparison) and ``postgres`` (``PostgresStore`` on
``COWRITE_BENCH_POSTGRES_DSN``, default ``postgresql://postgres@127.0.0.1:5432/test``,
in a throw-away schema).  For PostgreSQL the table also gives the database's
CPU per commit: the store's backends' user + system time from ``/proc``, so
the database must run on this machine.  The SQLite file goes to ``--dir`` (default: a
temporary directory); put it on the disk you mean to measure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from cowrite.backends.store import AppendRequest, OperationStore
from cowrite.backends.store_postgres import PostgresStore
from cowrite.backends.store_sqlite import SqliteStore
from pgschema import throwaway_schema
from proccpu import cpu_seconds

PG_DSN = os.environ.get("COWRITE_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PAYLOAD_SIZE = 200
#: How the store's connections name themselves, so their backends can be found.
APP_NAME = "cowrite-store-bench"


@asynccontextmanager
async def open_store(kind: str, directory: Path) -> AsyncIterator[OperationStore]:
    """An opened, empty store of ``kind``; removed afterwards."""
    if kind.startswith("sqlite-"):
        path = directory / f"bench-{uuid.uuid4().hex}.db"
        store: OperationStore = SqliteStore(
            path, synchronous="full" if kind == "sqlite-full" else "normal"
        )
        await store.open()
        try:
            yield store
        finally:
            await store.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    async with throwaway_schema(PG_DSN) as schema:
        store = PostgresStore(
            PG_DSN,
            min_size=1,
            max_size=2,
            server_settings={"search_path": schema, "application_name": APP_NAME},
        )
        try:
            await store.open()
            yield store
        finally:
            await store.close()


async def backend_pids() -> list[int]:
    """The process ids of the PostgreSQL backends serving the store."""
    admin = await asyncpg.connect(PG_DSN)
    try:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", APP_NAME
        )
    finally:
        await admin.close()
    return [row["pid"] for row in rows]


def database_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


async def measure(
    store: OperationStore, docs: list[str], size: int, seconds: float, postgres: bool
) -> dict[str, float]:
    counter = itertools.count()
    doc_cycle = itertools.cycle(docs)
    payload = os.urandom(PAYLOAD_SIZE)

    def batch() -> list[AppendRequest]:
        return [
            AppendRequest(next(doc_cycle), "bench-user", f"op-{next(counter)}", payload)
            for _ in range(size)
        ]

    for _ in range(3):  # warm up: connections, statement caches, file growth
        await store.append_batch(batch())
    pids = await backend_pids() if postgres else []
    db_cpu = database_cpu(pids)
    own_cpu = time.process_time()
    latencies: list[float] = []
    ops = 0
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds or len(latencies) < 5:
        requests = batch()
        await store.append_batch(requests)
        latencies.append(time.perf_counter() - now)
        ops += len(requests)
    elapsed = time.perf_counter() - start
    db_cpu = database_cpu(pids) - db_cpu
    own_cpu = time.process_time() - own_cpu
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "ops_per_s": ops / elapsed,
        "commits_per_s": len(latencies) / elapsed,
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "own_us_per_commit": own_cpu / len(latencies) * 1e6,
        "db_us_per_commit": db_cpu / len(latencies) * 1e6 if postgres else float("nan"),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", default="sqlite-full,sqlite-normal,postgres")
    parser.add_argument("--sizes", default="1,10,100,500", help="ops per append_batch (commit)")
    parser.add_argument("--docs", type=int, default=50, help="documents the ops are spread over")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--dir", type=Path, default=None, help="directory for the SQLite files")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.stores.split(",")
    rows: list[tuple[str, int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for kind in kinds:
            for size in sizes:
                async with open_store(kind, Path(tmp)) as store:
                    docs = [f"doc-{i}" for i in range(args.docs)]
                    for doc in docs:
                        await store.create_document(doc, "bench-user")
                    result = await measure(
                        store, docs, size, args.seconds, postgres=kind == "postgres"
                    )
                rows.append((kind, size, result))
                print(f"{kind} batch={size}: {result['ops_per_s']:,.0f} ops/s", file=sys.stderr)

    print(
        f"\nPython {platform.python_version()}, {platform.machine()}, "
        f"{args.docs} documents, {PAYLOAD_SIZE}-byte payloads with client_op_ids, "
        f"one writer, {args.seconds:g} s per cell\n"
    )
    print(
        "| store | ops per commit | ops/s | commits/s | commit p50 ms | commit p99 ms "
        "| this process's CPU per commit (us) | database CPU per commit (us) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, size, r in rows:
        db = "-" if kind != "postgres" else f"{r['db_us_per_commit']:,.0f}"
        print(
            f"| {kind} | {size} | {r['ops_per_s']:,.0f} | {r['commits_per_s']:,.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['own_us_per_commit']:,.0f} | {db} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
