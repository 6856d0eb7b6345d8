"""Upgrading a PostgreSQL store whose schema an older release created.

A database at schema version 3 (the ``cowrite_append`` loop of migration 2,
the foreign key from ops to documents) holds ops, some with idempotency keys;
opening the store brings it to the current version, and appends continue the
numbering and still recognise the keys stored before the upgrade.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from test_store_contract import outcomes, req

from cowrite.backends.store import UnknownDocument
from cowrite.backends.store_postgres import MIGRATIONS, PostgresStore
from pg_support import PG_DSN, throwaway_schema


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    async with throwaway_schema() as name:
        yield name


async def build_version(conn: asyncpg.Connection, version: int) -> None:
    """The schema as a release that knew ``version`` migrations left it."""
    await conn.execute(
        "CREATE TABLE schema_version (version integer PRIMARY KEY, applied_at double precision NOT NULL)"
    )
    for number, statements in enumerate(MIGRATIONS[:version], start=1):
        for statement in statements:
            await conn.execute(statement)
        await conn.execute("INSERT INTO schema_version VALUES ($1, $2)", number, time.time())


async def test_a_version_3_database_upgrades_and_keeps_its_log(schema: str) -> None:
    old = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
    try:
        await build_version(old, 3)
        await old.execute("INSERT INTO documents VALUES ('d1', 0), ('d2', 0)")
        rows = await old.fetch(
            "SELECT idx, seq, duplicate FROM cowrite_append($1, $2, $3, $4, $5)",
            ["d1", "d1", "d2"],
            ["u1", "u1", "u1"],
            ["k1", None, "k2"],
            [b"a", b"b", b"c"],
            time.time(),
        )
        assert [(r["seq"], r["duplicate"]) for r in rows] == [(1, False), (2, False), (1, False)]
    finally:
        await old.close()

    store = PostgresStore(PG_DSN, server_settings={"search_path": schema})
    await store.open()
    try:
        results = await store.append_batch(
            [
                req("d1", op="k1", payload=b"again"),  # stored before the upgrade
                req("d1", op="k3", payload=b"d"),
                req("d2", op="k2", payload=b"again"),
                req("d2", op="k4", payload=b"e"),
                req("d1", op="k3", payload=b"again"),  # earlier in this batch
            ]
        )
        assert outcomes(results) == [(1, True), (3, False), (1, True), (2, False), (3, True)]
        ops, head = await store.read_page("d1", 0, 10)
        assert head == 3
        assert [(op.seq, op.client_op_id, op.payload) for op in ops] == [
            (1, "k1", b"a"),
            (2, None, b"b"),
            (3, "k3", b"d"),
        ]
        # The existence check that the dropped foreign key backed up.
        with pytest.raises(UnknownDocument):
            await store.append_batch([req("d1"), req("nope")])
        assert (await store.read_page("d1", 0, 10))[1] == 3
    finally:
        await store.close()

    check = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
    try:
        assert await check.fetchval("SELECT max(version) FROM schema_version") == len(MIGRATIONS)
        assert (
            await check.fetchval(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = 'ops'::regclass AND contype = 'f'"
            )
            == 0
        )
    finally:
        await check.close()
