"""SQLite's inline calls (``store_sqlite._Connection``): the event loop never
waits for another connection's lock; such a call moves to the connection's
thread, which waits with the busy timeout, and nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from collections.abc import AsyncIterator, Callable
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


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, Path]]:
    """A store with document "d" (and its file's path)."""
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.create_document("d", "alice")
        yield store, path
    finally:
        await store.close()


async def test_checkpoints_run_in_the_writers_thread_not_in_its_commits(
    opened: tuple[SqliteStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_sqlite, "_CHECKPOINT_EVERY", 20)
    store, _ = opened
    writer = store._write_conn()
    autocheckpoint = await writer.call(
        lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    )
    assert autocheckpoint == 0
    threaded = writer.thread_calls
    await append_many(store, 60)
    await checkpoints(store, 2)
    assert writer.thread_calls >= threaded + 2  # the checkpoints' second steps
    # The writer's head cache survived the checkpoints (same data_version):
    # numbering continues, and the log reads back whole.
    more = await store.append_batch([AppendRequest("d", "alice", "c60", b"y")])
    assert [r.seq for r in more] == [61]
    assert [op.seq for op in await store.read_ops("d", 0, 100)] == list(range(1, 62))


async def test_a_few_writes_are_checkpointed_a_moment_later(
    opened: tuple[SqliteStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_sqlite, "_CHECKPOINT_PERIOD", 0.05)
    store, path = opened
    await checkpoints(store, 1)  # the document's creation
    await store.append_batch([AppendRequest("d", "alice", "c1", b"x")])
    assert wal_frames(path) > 0
    await checkpoints(store, 2)
    # Wholly checkpointed: the next write starts the WAL over.
    await store.append_batch([AppendRequest("d", "alice", "c2", b"x")])
    assert wal_frames(path) <= 4


async def test_the_wal_starts_over_under_a_steady_load(
    opened: tuple[SqliteStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_sqlite, "_CHECKPOINT_EVERY", 50)
    store, path = opened
    frames = await append_many(store, 1500, sample=lambda: wal_frames(path))
    # A checkpoint from another connection, concurrent with the writer, never
    # caught up: the WAL only grew.  Here it starts over after each one.
    assert max(frames) < 600, frames


async def append_many(
    store: SqliteStore, count: int, sample: Callable[[], int] | None = None
) -> list[int]:
    """``count`` one-op appends to "d", a loop turn apart (as the server's
    commits are); ``sample()`` after every 25th."""
    samples = []
    for i in range(count):
        await store.append_batch([AppendRequest("d", "alice", f"c{i}", b"x" * 400)])
        await asyncio.sleep(0)
        if sample is not None and i % 25 == 24:
            samples.append(sample())
    return samples


async def checkpoints(store: SqliteStore, count: int) -> None:
    """Wait (at most 2 s) until ``count`` checkpoints are done."""
    for _ in range(200):
        if store.checkpoints >= count:
            break
        await asyncio.sleep(0.01)
    assert store.checkpoints >= count


def wal_frames(path: Path) -> int:
    """Frames in the WAL now: the wal-index header's mxFrame (a native
    32-bit integer at byte 16 of the -shm file; sqlite.org, "WAL-mode File
    Format"), back to the last transaction's few after the WAL started over.
    Read from the file: asking a connection would checkpoint."""
    header = Path(f"{path}-shm").read_bytes()[:48]
    return int(struct.unpack_from("=I", header, 16)[0])
