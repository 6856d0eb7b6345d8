"""SQLite's inline calls (``store_sqlite._Connection``): the event loop never
waits for another connection's lock; such a call moves to the connection's
thread, which waits with the busy timeout, and nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from pathlib import Path

import pytest

from cowrite.backends import store_sqlite
from cowrite.backends.store import AppendRequest
from cowrite.backends.store_sqlite import SqliteStore


async def test_a_write_lock_held_elsewhere_moves_the_append_to_the_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path, busy_timeout=10.0)
    await store.open()
    try:
        await store.create_document("d", "alice")
        first = await store.append_batch([AppendRequest("d", "alice", "c1", b"one")])
        assert [r.seq for r in first] == [1]
        writer = store._write_conn()
        assert writer.inline_calls > 0

        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
        try:
            append = asyncio.create_task(
                store.append_batch([AppendRequest("d", "alice", "c2", b"two")])
            )
            ticks = 0
            for _ in range(20):  # the loop keeps running while the append waits
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 20
            assert not append.done()
            assert writer.thread_calls >= 1
            # Reads are not blocked by a writer (WAL) and stay inline.
            assert [op.seq for op in await store.read_ops("d", 0, 10)] == [1]
        finally:
            other.execute("COMMIT")
            other.close()
        second = await asyncio.wait_for(append, 5.0)
        assert [(r.seq, r.duplicate) for r in second] == [(2, False)]
        # Inline again afterwards, and the resend is recognised.
        again = await store.append_batch([AppendRequest("d", "alice", "c2", b"two")])
        assert [(r.seq, r.duplicate) for r in again] == [(2, True)]
        assert [op.payload for op in await store.read_ops("d", 0, 10)] == [b"one", b"two"]
    finally:
        await store.close()


async def test_checkpoints_run_in_the_writers_thread_not_in_its_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_sqlite, "_CHECKPOINT_EVERY", 20)
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.create_document("d", "alice")
        writer = store._write_conn()
        assert (
            await writer.call(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
            == 0
        )
        threaded = writer.thread_calls
        for i in range(60):
            await store.append_batch([AppendRequest("d", "alice", f"c{i}", b"x" * 300)])
            await asyncio.sleep(0)  # the server's commits are loop turns apart
        for _ in range(200):
            if store.checkpoints >= 2:
                break
            await asyncio.sleep(0.01)
        assert store.checkpoints >= 2
        assert writer.thread_calls >= threaded + 2  # the checkpoints
        # The writer's head cache survived the checkpoints (same data_version):
        # numbering continues, and the log reads back whole.
        more = await store.append_batch([AppendRequest("d", "alice", "c60", b"y")])
        assert [r.seq for r in more] == [61]
        assert [op.seq for op in await store.read_ops("d", 0, 100)] == list(range(1, 62))
    finally:
        await store.close()


async def test_a_few_writes_are_checkpointed_a_moment_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_sqlite, "_CHECKPOINT_PERIOD", 0.05)
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.create_document("d", "alice")
        await store.append_batch([AppendRequest("d", "alice", "c1", b"x")])
        assert await wal_frames(path) > 0
        for _ in range(100):
            if store.checkpoints >= 1:
                break
            await asyncio.sleep(0.01)
        assert store.checkpoints == 1
        # Wholly checkpointed: the next write starts the WAL over.
        await store.append_batch([AppendRequest("d", "alice", "c2", b"x")])
        assert await wal_frames(path) <= 4
    finally:
        await store.close()


async def wal_frames(path: Path) -> int:
    """Frames in the WAL now: the wal-index header's mxFrame (a native
    32-bit integer at byte 16 of the -shm file; sqlite.org, "WAL-mode File
    Format"), back to the last transaction's few after the WAL started over.
    Read from the file: asking a connection would checkpoint."""
    header = Path(f"{path}-shm").read_bytes()[:48]
    return int(struct.unpack_from("=I", header, 16)[0])


async def test_the_wal_starts_over_under_a_steady_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_sqlite, "_CHECKPOINT_EVERY", 50)
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.create_document("d", "alice")
        frames = []
        for i in range(1500):
            await store.append_batch([AppendRequest("d", "alice", f"c{i}", b"x" * 400)])
            await asyncio.sleep(0)  # the server's commits are loop turns apart
            if i % 25 == 24:
                frames.append(await wal_frames(path))
    finally:
        await store.close()
    # A checkpoint from another connection, concurrent with the writer, never
    # caught up: the WAL only grew.  Here it starts over after each one.
    assert max(frames) < 600, frames
