"""Upgrading an SQLite store whose schema an older release created.

A file at schema version 2 (documents with a ``head`` column that every batch
updated) holds ops; opening the store brings it to the current version, the
heads come from the log, and appends continue the numbering and still
recognise the keys stored before the upgrade.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from test_store_contract import outcomes, req

from cowrite.backends.store_sqlite import MIGRATIONS, SqliteStore


def build_version(path: Path, version: int) -> sqlite3.Connection:
    """The schema as a release that knew ``version`` migrations left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    for number, statements in enumerate(MIGRATIONS[:version], start=1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, ?)", (number, time.time()))
    return conn


async def test_a_version_2_file_upgrades_and_keeps_its_log(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = build_version(path, 2)
    now = time.time()
    old.execute("INSERT INTO documents VALUES ('d1', 2, ?), ('d2', 1, ?), ('d3', 0, ?)", (now,) * 3)
    old.executemany(
        "INSERT INTO ops VALUES (?, ?, 'u1', ?, ?, ?)",
        [("d1", 1, "k1", b"a", now), ("d1", 2, None, b"b", now), ("d2", 1, "k2", b"c", now)],
    )
    old.close()

    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.head("d1") == 2
        assert await store.head("d3") == 0
        results = await store.append_batch(
            [
                req("d1", op="k1", payload=b"again"),  # stored before the upgrade
                req("d1", op="k3", payload=b"d"),
                req("d2", op="k4", payload=b"e"),
                req("d3", op="k5", payload=b"f"),
            ]
        )
        assert outcomes(results) == [(1, True), (3, False), (2, False), (1, False)]
        ops, head = await store.read_page("d1", 1, 10)
        assert head == 3
        assert [(op.seq, op.payload) for op in ops] == [(2, b"b"), (3, b"d")]
    finally:
        await store.close()

    check = sqlite3.connect(path)
    try:
        assert check.execute("SELECT max(version) FROM schema_version").fetchone() == (
            len(MIGRATIONS),
        )
        columns = [row[1] for row in check.execute("PRAGMA table_info(documents)")]
        assert columns == ["document_id", "created_at"]
    finally:
        check.close()
