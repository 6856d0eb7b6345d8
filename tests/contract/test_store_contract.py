"""The ``OperationStore`` contract, run against every implementation.

Every test takes the ``backend`` fixture, parametrised over the implementations:
``sqlite`` (a file in ``tmp_path``) and ``postgres`` (the real server at
``COWRITE_TEST_POSTGRES_DSN``, default ``postgresql://postgres@127.0.0.1:5432/test``,
each test in a schema of its own that is dropped afterwards, so runs can repeat
and overlap).  Without a reachable PostgreSQL the postgres tests skip, except
under ``CI`` where they fail.

The tests talk to the stores only through the interface in
``cowrite.backends.store``; ``backend.make()`` gives another instance over the
same database, for durability and concurrency checks.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cowrite.backends.store import (
    AppendRequest,
    AppendResult,
    OperationStore,
    Role,
    SnapshotRefused,
    StoreNotOpen,
    StoreUnavailable,
    UnknownDocument,
)
from cowrite.backends.store_postgres import PostgresStore
from cowrite.backends.store_sqlite import SqliteStore
from pg_support import PG_DSN, throwaway_schema


@dataclass
class Backend:
    """One database for one test, and a factory of store instances over it."""

    name: str
    #: Serialisable description of the database, for child processes.
    spec: dict[str, str]
    opened: list[OperationStore] = field(default_factory=list)

    def make(self) -> OperationStore:
        """A new, unopened store instance over this test's database."""
        store = store_from_spec(self.spec)
        self.opened.append(store)
        return store

    def make_unreachable(self) -> OperationStore:
        """A store over a database that cannot be reached."""
        if self.spec["kind"] == "sqlite":
            spec = {**self.spec, "path": str(Path(self.spec["path"]).parent / "no" / "such.db")}
        else:
            spec = {**self.spec, "dsn": "postgresql://postgres@127.0.0.1:1/test"}
        store = store_from_spec(spec)
        self.opened.append(store)
        return store

    async def open(self) -> OperationStore:
        store = self.make()
        await store.open()
        return store


def store_from_spec(spec: dict[str, str]) -> OperationStore:
    if spec["kind"] == "sqlite":
        return SqliteStore(spec["path"])
    return PostgresStore(
        spec["dsn"], min_size=1, max_size=4, server_settings={"search_path": spec["schema"]}
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        b = Backend("sqlite", {"kind": "sqlite", "path": str(tmp_path / "store.db")})
        try:
            yield b
        finally:
            for store in b.opened:
                await store.close()
        return
    async with throwaway_schema() as schema:
        b = Backend("postgres", {"kind": "postgres", "dsn": PG_DSN, "schema": schema})
        try:
            yield b
        finally:
            for store in b.opened:
                await store.close()


@pytest.fixture
async def store(backend: Backend) -> OperationStore:
    return await backend.open()


def req(doc: str, user: str = "u1", op: str | None = None, payload: bytes = b"x") -> AppendRequest:
    return AppendRequest(document_id=doc, user_id=user, client_op_id=op, payload=payload)


def fresh(results: list[AppendResult]) -> list[int]:
    assert not any(r.duplicate for r in results)
    return [r.seq for r in results]


def outcomes(results: list[AppendResult]) -> list[tuple[int, bool]]:
    """(seq, duplicate) of each result, for comparing a batch's at a glance."""
    return [(r.seq, r.duplicate) for r in results]


# --- lifecycle and migrations ----------------------------------------------------


async def test_open_migrates_and_migrate_is_idempotent(backend: Backend) -> None:
    store = await backend.open()
    assert await store.create_document("d", "alice")
    assert fresh(await store.append_batch([req("d"), req("d")])) == [1, 2]
    await store.migrate()
    await store.migrate()
    await store.close()
    # A second open over an already migrated database migrates nothing more.
    again = await backend.open()
    await again.migrate()
    assert await again.head("d") == 2
    assert [op.seq for op in await again.read_ops("d", 0, 10)] == [1, 2]


async def test_instances_opening_a_new_database_together_all_succeed(backend: Backend) -> None:
    stores = [backend.make() for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    assert await stores[0].create_document("d", "alice")
    assert not await stores[3].create_document("d", "alice")


async def test_sqlite_instances_opening_new_files_together_all_succeed(tmp_path: Path) -> None:
    # The WAL switch and the first migration take exclusive locks, where SQLite
    # may answer SQLITE_BUSY without calling the busy handler ("database is
    # locked" in about 1 round in 20 of 8 instances before the store retried).
    for round_ in range(25):
        path = tmp_path / f"new-{round_}.db"
        stores = [SqliteStore(path) for _ in range(8)]
        try:
            await asyncio.gather(*(s.open() for s in stores))
            assert await stores[0].create_document("d", "alice")
            assert not await stores[7].create_document("d", "alice")
        finally:
            for store in stores:
                await store.close()


async def test_ping_and_use_outside_open(backend: Backend) -> None:
    store = backend.make()
    assert not await store.ping()
    with pytest.raises(StoreNotOpen):
        await store.head("d")
    await store.open()
    assert await store.ping()
    await store.close()
    await store.close()  # idempotent
    assert not await store.ping()
    with pytest.raises(StoreNotOpen):
        await store.append_batch([req("d")])
    with pytest.raises(StoreNotOpen):
        await store.document_exists("d")


async def test_unreachable_database_raises_store_unavailable(backend: Backend) -> None:
    store = backend.make_unreachable()
    with pytest.raises(StoreUnavailable):
        await store.open()
    assert not await store.ping()
    with pytest.raises(StoreNotOpen):
        await store.head("d")


# --- documents and roles -----------------------------------------------------------


async def test_create_document_grants_owner_once(store: OperationStore) -> None:
    assert not await store.document_exists("doc")
    assert await store.create_document("doc", "alice")
    assert await store.document_exists("doc")
    assert await store.head("doc") == 0
    assert await store.get_role("doc", "alice") is Role.OWNER
    assert not await store.create_document("doc", "bob")
    assert await store.list_roles("doc") == {"alice": Role.OWNER}


async def test_concurrent_creates_of_one_document_have_one_winner(backend: Backend) -> None:
    a, b = await backend.open(), await backend.open()
    created = await asyncio.gather(
        *(s.create_document("doc", f"user{i}") for i, s in enumerate([a, b] * 5))
    )
    assert sorted(created) == [False] * 9 + [True]
    winner = f"user{created.index(True)}"
    assert await a.list_roles("doc") == {winner: Role.OWNER}


async def test_create_documents_creates_in_one_call_and_skips_existing(
    store: OperationStore,
) -> None:
    assert await store.create_documents([]) == set()
    assert await store.create_document("old", "zoe")
    created = await store.create_documents(
        [("a", "alice"), ("old", "bob"), ("b", "bob"), ("a", "carol")]
    )
    assert created == {"a", "b"}
    assert await store.list_roles("a") == {"alice": Role.OWNER}  # the first pair wins
    assert await store.list_roles("b") == {"bob": Role.OWNER}
    assert await store.list_roles("old") == {"zoe": Role.OWNER}
    assert await store.head("a") == 0
    assert await store.create_documents([("a", "dave"), ("b", "dave")]) == set()
    assert not await store.create_document("b", "dave")


async def test_concurrent_create_documents_have_one_winner_each(backend: Backend) -> None:
    a, b = await backend.open(), await backend.open()
    results = await asyncio.gather(
        *(s.create_documents([("x", f"u{i}"), ("y", f"u{i}")]) for i, s in enumerate([a, b] * 3))
    )
    assert sorted(d for r in results for d in r) == ["x", "y"]
    for doc in ("x", "y"):
        winner = next(f"u{i}" for i, r in enumerate(results) if doc in r)
        assert await b.list_roles(doc) == {winner: Role.OWNER}


async def test_roles_set_replace_revoke_list(store: OperationStore) -> None:
    await store.create_document("doc", "alice")
    assert await store.get_role("doc", "bob") is None
    await store.set_role("doc", "bob", Role.VIEWER)
    assert await store.get_role("doc", "bob") is Role.VIEWER
    await store.set_role("doc", "bob", Role.EDITOR)
    assert await store.get_role("doc", "bob") is Role.EDITOR
    await store.set_role("doc", "carol", Role.OWNER)
    assert await store.list_roles("doc") == {
        "alice": Role.OWNER,
        "bob": Role.EDITOR,
        "carol": Role.OWNER,
    }
    assert await store.revoke("doc", "bob")
    assert not await store.revoke("doc", "bob")
    assert await store.get_role("doc", "bob") is None
    assert await store.revoke("doc", "alice")
    assert await store.revoke("doc", "carol")
    # A document without roles still exists and lists as empty.
    assert await store.list_roles("doc") == {}
    assert await store.document_exists("doc")


async def test_roles_are_per_document(store: OperationStore) -> None:
    await store.create_document("d1", "alice")
    await store.create_document("d2", "bob")
    await store.set_role("d1", "bob", Role.VIEWER)
    assert await store.get_role("d2", "alice") is None
    assert await store.get_role("d1", "bob") is Role.VIEWER
    assert await store.get_role("d2", "bob") is Role.OWNER


async def test_unknown_document_errors(store: OperationStore) -> None:
    assert not await store.document_exists("nope")
    assert await store.get_role("nope", "alice") is None
    assert not await store.revoke("nope", "alice")
    with pytest.raises(UnknownDocument) as info:
        await store.head("nope")
    assert info.value.document_id == "nope"
    with pytest.raises(UnknownDocument):
        await store.read_ops("nope", 0, 10)
    with pytest.raises(UnknownDocument):
        await store.list_roles("nope")
    with pytest.raises(UnknownDocument):
        await store.set_role("nope", "alice", Role.EDITOR)
    with pytest.raises(UnknownDocument):
        await store.append_batch([req("nope")])
    assert not await store.document_exists("nope")


async def test_batch_naming_an_unknown_document_stores_nothing(store: OperationStore) -> None:
    await store.create_document("d", "alice")
    assert fresh(await store.append_batch([req("d", op="first")])) == [1]
    with pytest.raises(UnknownDocument) as info:
        await store.append_batch([req("d", op="a"), req("d"), req("missing"), req("d")])
    assert info.value.document_id == "missing"
    assert await store.head("d") == 1
    # The rolled-back client_op_id was not remembered either.
    assert await store.append_batch([req("d", op="a")]) == [AppendResult(2, False)]


# --- sequencing ----------------------------------------------------------------------


async def test_seqs_are_gapless_from_one(store: OperationStore) -> None:
    await store.create_document("d", "alice")
    seqs = [r.seq for _ in range(20) for r in await store.append_batch([req("d")])]
    assert seqs == list(range(1, 21))
    assert await store.head("d") == 20
    assert await store.append_batch([]) == []
    assert await store.head("d") == 20


async def test_batch_across_documents_numbers_each_document_in_batch_order(
    store: OperationStore,
) -> None:
    for doc in ("a", "b", "c"):
        await store.create_document(doc, "alice")
    await store.append_batch([req("b"), req("b")])
    batch = [req("a"), req("b"), req("a"), req("c"), req("b"), req("a")]
    assert fresh(await store.append_batch(batch)) == [1, 3, 2, 1, 4, 3]
    assert [await store.head(d) for d in ("a", "b", "c")] == [3, 4, 1]
    ops = await store.read_ops("a", 0, 100)
    assert [(op.document_id, op.seq) for op in ops] == [("a", 1), ("a", 2), ("a", 3)]


async def test_client_op_id_is_idempotent_within_a_batch(store: OperationStore) -> None:
    await store.create_document("d", "alice")
    results = await store.append_batch(
        [
            req("d", "alice", "op1", b"first"),
            req("d", "alice", "op2", b"second"),
            req("d", "alice", "op1", b"retry of first"),
            req("d", "alice", "op3", b"third"),
        ]
    )
    assert results == [
        AppendResult(1, False),
        AppendResult(2, False),
        AppendResult(1, True),
        AppendResult(3, False),
    ]
    ops = await store.read_ops("d", 0, 10)
    assert [(op.seq, op.client_op_id, op.payload) for op in ops] == [
        (1, "op1", b"first"),
        (2, "op2", b"second"),
        (3, "op3", b"third"),
    ]


async def test_client_op_id_is_idempotent_across_batches_and_instances(backend: Backend) -> None:
    store = await backend.open()
    await store.create_document("d", "alice")
    assert fresh(await store.append_batch([req("d", "alice", "op1", b"a")])) == [1]
    assert fresh(await store.append_batch([req("d", "alice", "op2", b"b")])) == [2]
    retry = await store.append_batch([req("d", "alice", "op2", b"b"), req("d", "alice", "op1")])
    assert retry == [AppendResult(2, True), AppendResult(1, True)]
    other = await backend.open()
    assert await other.append_batch([req("d", "alice", "op1")]) == [AppendResult(1, True)]
    assert await store.head("d") == 2
    assert [op.payload for op in await other.read_ops("d", 0, 10)] == [b"a", b"b"]


async def test_idempotency_key_includes_document_and_user(store: OperationStore) -> None:
    await store.create_document("d1", "alice")
    await store.create_document("d2", "alice")
    results = await store.append_batch(
        [req("d1", "alice", "op"), req("d1", "bob", "op"), req("d2", "alice", "op")]
    )
    assert fresh(results) == [1, 2, 1]
    # The empty string is an id like any other, not "no id".
    assert fresh(await store.append_batch([req("d1", "alice", "")])) == [3]
    assert await store.append_batch([req("d1", "alice", "")]) == [AppendResult(3, True)]


async def test_none_client_op_id_is_never_deduplicated(store: OperationStore) -> None:
    await store.create_document("d", "alice")
    same = req("d", "alice", None, b"same")
    assert fresh(await store.append_batch([same, same, same])) == [1, 2, 3]
    assert fresh(await store.append_batch([same])) == [4]
    ops = await store.read_ops("d", 0, 10)
    assert [(op.client_op_id, op.payload) for op in ops] == [(None, b"same")] * 4


async def test_all_duplicate_batch_changes_nothing(store: OperationStore) -> None:
    await store.create_document("d", "alice")
    await store.append_batch([req("d", op="a"), req("d", op="b")])
    assert await store.append_batch([req("d", op="b"), req("d", op="a")]) == [
        AppendResult(2, True),
        AppendResult(1, True),
    ]
    assert await store.head("d") == 2


# --- reading -----------------------------------------------------------------------


async def test_read_page_gives_the_page_and_the_head_together(store: OperationStore) -> None:
    with pytest.raises(UnknownDocument):
        await store.read_page("nope", 0, 10)
    await store.create_document("d", "alice")
    assert await store.read_page("d", 0, 10) == ([], 0)
    await store.append_batch([req("d", op=f"c{i}") for i in range(1, 8)])
    ops, head = await store.read_page("d", 2, 3)
    assert ([op.seq for op in ops], head) == ([3, 4, 5], 7)
    assert ops == await store.read_ops("d", 2, 3)
    assert await store.read_page("d", 7, 10) == ([], 7)
    assert await store.read_page("d", 50, 10) == ([], 7)
    assert await store.read_page("d", 0, 0) == ([], 7)
    with pytest.raises(ValueError):
        await store.read_page("d", 0, -1)


async def test_read_pages_answers_each_triple_like_read_page(store: OperationStore) -> None:
    assert await store.read_pages([]) == []
    await store.create_document("d", "alice")
    await store.create_document("e", "alice")
    await store.create_document("empty", "alice")
    await store.append_batch([req("d", op=f"c{i}") for i in range(1, 8)])
    await store.append_batch([req("e", op=f"c{i}", payload=bytes([i])) for i in range(1, 4)])
    triples = [
        ("d", 2, 3),
        ("nope", 0, 10),
        ("e", 0, 10),
        ("d", 0, 2),
        ("empty", 0, 5),
        ("d", 50, 10),
        ("e", 1, 0),
    ]
    answers = await store.read_pages(triples)
    assert len(answers) == len(triples)
    assert answers[1] is None
    for triple, answer in zip(triples, answers, strict=True):
        if triple[0] != "nope":
            assert answer == await store.read_page(*triple)
    assert answers[2] is not None and [op.payload for op in answers[2][0]] == [
        b"\x01",
        b"\x02",
        b"\x03",
    ]
    with pytest.raises(ValueError):
        await store.read_pages([("d", 0, -1)])


async def test_read_ops_pages_with_since_and_limit(store: OperationStore) -> None:
    await store.create_document("d", "alice")
    await store.create_document("other", "alice")
    await store.append_batch([req("d", payload=bytes([i])) for i in range(1, 11)] + [req("other")])
    assert await store.read_ops("d", 0, 0) == []
    assert await store.read_ops("d", 10, 5) == []
    assert await store.read_ops("d", 100, 5) == []
    assert [op.seq for op in await store.read_ops("d", 7, 100)] == [8, 9, 10]
    pages: list[list[int]] = []
    since = 0
    while page := await store.read_ops("d", since, 3):
        pages.append([op.seq for op in page])
        since = page[-1].seq
    assert pages == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    op = (await store.read_ops("d", 4, 1))[0]
    assert (op.document_id, op.seq, op.user_id, op.client_op_id, op.payload) == (
        "d",
        5,
        "u1",
        None,
        bytes([5]),
    )
    assert isinstance(op.created_at, float)
    with pytest.raises(ValueError):
        await store.read_ops("d", 0, -1)


async def test_created_at_is_the_append_time(store: OperationStore) -> None:
    await store.create_document("d", "alice")
    before = time.time()
    await store.append_batch([req("d"), req("d")])
    after = time.time()
    ops = await store.read_ops("d", 0, 10)
    assert all(before <= op.created_at <= after for op in ops)


async def test_binary_payloads_round_trip_byte_for_byte(store: OperationStore) -> None:
    await store.create_document("d", "alice")
    payloads = [
        bytes(range(256)),
        b"",
        b"\x00",
        bytes(range(255, -1, -1)) * 256,  # 64 KiB
        "héllo wörld ✓".encode(),
        b"\xff\xfe\x00\x00 not utf-8",
    ]
    assert len(payloads[3]) == 64 * 1024
    await store.append_batch([req("d", payload=p) for p in payloads])
    stored = [op.payload for op in await store.read_ops("d", 0, 100)]
    assert stored == payloads
    assert all(type(p) is bytes for p in stored)


# --- snapshots and compaction ------------------------------------------------------


async def test_store_snapshot_checks_seq_against_head_and_newest(store: OperationStore) -> None:
    with pytest.raises(UnknownDocument):
        await store.store_snapshot("nope", 1, "alice", b"s")
    await store.create_document("d", "alice")
    assert await store.latest_snapshot("d") is None
    assert await store.latest_snapshot("nope") is None
    with pytest.raises(SnapshotRefused) as refused:
        await store.store_snapshot("d", 1, "alice", b"s")  # head is 0
    assert refused.value.code == "invalid_seq"
    await store.append_batch([req("d") for _ in range(5)])
    for bad in (0, -1, 6):
        with pytest.raises(SnapshotRefused) as refused:
            await store.store_snapshot("d", bad, "alice", b"s")
        assert refused.value.code == "invalid_seq"
    before = time.time()
    stored = await store.store_snapshot("d", 3, "bob", bytes(range(256)))
    assert (stored.document_id, stored.seq, stored.user_id, stored.data) == (
        "d",
        3,
        "bob",
        bytes(range(256)),
    )
    assert before <= stored.created_at <= time.time()
    assert await store.latest_snapshot("d") == stored
    for stale in (3, 2):
        with pytest.raises(SnapshotRefused) as refused:
            await store.store_snapshot("d", stale, "alice", b"s")
        assert (refused.value.code, refused.value.latest) == ("stale_snapshot", 3)
    newer = await store.store_snapshot("d", 5, "alice", b"\x00" * 100_000)
    latest = await store.latest_snapshot("d")
    assert latest == newer
    assert latest is not None and type(latest.data) is bytes
    assert await store.snapshot_documents() == ["d"]


async def test_compact_deletes_what_the_newest_snapshot_covers(store: OperationStore) -> None:
    with pytest.raises(UnknownDocument):
        await store.compact("nope", keep_ops=0, keep_seconds=0)
    await store.create_document("d", "alice")
    await store.create_document("other", "alice")
    await store.append_batch([req("d", op=f"c{i}") for i in range(1, 21)] + [req("other")])
    # No snapshot: nothing goes.
    done = await store.compact("d", keep_ops=0, keep_seconds=0)
    assert (done.deleted_ops, done.deleted_snapshots, done.kept_from) == (0, 0, 1)
    await store.store_snapshot("d", 8, "alice", b"at 8")
    await store.store_snapshot("d", 12, "alice", b"at 12")
    # Ops younger than keep_seconds before the snapshot stay.
    done = await store.compact("d", keep_ops=0, keep_seconds=3600)
    assert (done.deleted_ops, done.deleted_snapshots, done.kept_from) == (0, 1, 1)
    # Keep 5 ops below the newest snapshot (12): 1..7 go.
    done = await store.compact("d", keep_ops=5, keep_seconds=0)
    assert (done.deleted_ops, done.deleted_snapshots, done.kept_from) == (7, 0, 8)
    ops, head = await store.read_page("d", 0, 100)
    assert ([op.seq for op in ops], head) == (list(range(8, 21)), 20)
    # A since below the kept log starts at the first kept op: callers see the gap.
    assert [op.seq for op in await store.read_ops("d", 2, 3)] == [8, 9, 10]
    assert (await store.latest_snapshot("d")) is not None
    # Again with keep_ops 0: up to the snapshot's seq.
    done = await store.compact("d", keep_ops=0, keep_seconds=0)
    assert (done.deleted_ops, done.kept_from) == (5, 13)
    assert await store.head("d") == 20
    assert await store.read_ops("other", 0, 10) != []


async def test_compact_keeps_the_newest_op_and_numbering_continues(
    store: OperationStore,
) -> None:
    await store.create_document("d", "alice")
    await store.append_batch([req("d", op=f"c{i}") for i in range(1, 6)])
    await store.store_snapshot("d", 5, "alice", b"all")
    done = await store.compact("d", keep_ops=0, keep_seconds=0)
    assert (done.deleted_ops, done.kept_from) == (4, 5)
    assert await store.head("d") == 5
    assert await store.read_page("d", 5, 10) == ([], 5)
    assert [op.seq for op in (await store.read_page("d", 0, 10))[0]] == [5]
    assert fresh(await store.append_batch([req("d"), req("d")])) == [6, 7]
    # The newest op's idempotency key still answers.
    assert await store.append_batch([req("d", op="c5")]) == [AppendResult(5, True)]
    with pytest.raises(ValueError):
        await store.compact("d", keep_ops=-1, keep_seconds=0)
    with pytest.raises(ValueError):
        await store.compact("d", keep_ops=0, keep_seconds=-1)


async def test_snapshots_and_compaction_are_durable_and_shared(backend: Backend) -> None:
    first = await backend.open()
    second = await backend.open()
    await first.create_document("d", "alice")
    await first.append_batch([req("d") for _ in range(10)])
    stored = await first.store_snapshot("d", 9, "alice", b"nine")
    assert await second.latest_snapshot("d") == stored
    with pytest.raises(SnapshotRefused):
        await second.store_snapshot("d", 9, "bob", b"again")
    await second.compact("d", keep_ops=2, keep_seconds=0)
    await first.close()
    reopened = await backend.open()
    assert await reopened.latest_snapshot("d") == stored
    assert [op.seq for op in await reopened.read_ops("d", 0, 100)] == [8, 9, 10]
    assert fresh(await first_append(reopened)) == [11]


async def first_append(store: OperationStore) -> list[AppendResult]:
    return await store.append_batch([req("d")])


async def test_appends_racing_compaction_stay_gapless(backend: Backend) -> None:
    writer = await backend.open()
    compactor = await backend.open()
    await writer.create_document("d", "alice")
    await writer.append_batch([req("d") for _ in range(50)])
    await writer.store_snapshot("d", 50, "alice", b"s")

    async def append() -> list[int]:
        seqs: list[int] = []
        for _ in range(20):
            seqs += fresh(await writer.append_batch([req("d"), req("d")]))
        return seqs

    seqs, _done = await asyncio.gather(append(), compactor.compact("d", keep_ops=0, keep_seconds=0))
    assert seqs == list(range(51, 91))
    ops = await writer.read_ops("d", 0, 1000)
    # 50 stays when compaction ran before the first append (it was the newest).
    assert [op.seq for op in ops] in (list(range(50, 91)), list(range(51, 91)))


# --- durability and concurrency -------------------------------------------------------


async def test_acknowledged_ops_survive_close_and_reopen(backend: Backend) -> None:
    store = await backend.open()
    await store.create_document("d1", "alice")
    await store.create_document("d2", "bob")
    await store.set_role("d1", "bob", Role.EDITOR)
    acked: list[tuple[str, int, bytes]] = []
    for i in range(10):
        batch = [req("d1", op=f"a{i}", payload=f"one {i}".encode()), req("d2", payload=b"%d" % i)]
        for request, result in zip(batch, await store.append_batch(batch), strict=True):
            acked.append((request.document_id, result.seq, request.payload))
    await store.close()

    reopened = await backend.open()
    found = [
        (op.document_id, op.seq, op.payload)
        for doc in ("d1", "d2")
        for op in await reopened.read_ops(doc, 0, 1000)
    ]
    assert sorted(found) == sorted(acked)
    assert await reopened.head("d1") == 10
    assert await reopened.list_roles("d1") == {"alice": Role.OWNER, "bob": Role.EDITOR}
    # Idempotency keys are durable too.
    assert await reopened.append_batch([req("d1", op="a3")]) == [AppendResult(4, True)]


async def test_two_instances_appending_to_one_document_stay_gapless(backend: Backend) -> None:
    a, b = await backend.open(), await backend.open()
    await a.create_document("d", "alice")
    await a.create_document("side", "alice")

    async def writer(store: OperationStore, name: str) -> list[int]:
        seqs: list[int] = []
        for i in range(15):
            batch = [req("d", name, f"{name}-{i}-{j}") for j in range(i % 4 + 1)]
            batch.append(req("side", name))  # a second document in the same batch
            seqs += [r.seq for r in (await store.append_batch(batch))[:-1]]
        return seqs

    results = await asyncio.gather(*(writer(s, f"w{i}") for i, s in enumerate([a, b, a, b])))
    seqs = [seq for result in results for seq in result]
    total = 4 * sum(i % 4 + 1 for i in range(15))
    assert sorted(seqs) == list(range(1, total + 1))
    for result in results:
        assert result == sorted(result)  # each writer saw its own ops in order
    assert await b.head("d") == total
    assert await a.head("side") == 60
    assert [op.seq for op in await b.read_ops("d", 0, 10_000)] == list(range(1, total + 1))


async def test_racing_retries_of_one_op_store_it_once(backend: Backend) -> None:
    a, b = await backend.open(), await backend.open()
    await a.create_document("d", "alice")
    for i in range(10):
        op = req("d", "alice", f"op{i}")
        results = await asyncio.gather(*(s.append_batch([op]) for s in (a, b, a, b)))
        flat = [r for result in results for r in result]
        assert {r.seq for r in flat} == {i + 1}
        assert sorted(r.duplicate for r in flat) == [False, True, True, True]
    assert await a.head("d") == 10


CHILD = """
import asyncio, json, sys
from cowrite.backends.store import AppendRequest
from cowrite.backends.store_postgres import PostgresStore
from cowrite.backends.store_sqlite import SqliteStore

async def main(spec, name, count):
    if spec["kind"] == "sqlite":
        store = SqliteStore(spec["path"])
    else:
        store = PostgresStore(spec["dsn"], server_settings={"search_path": spec["schema"]})
    await store.open()
    seqs = []
    try:
        for i in range(count):
            batch = [AppendRequest("d", name, f"{name}-{i}-{j}", b"p") for j in range(3)]
            seqs += [r.seq for r in await store.append_batch(batch)]
    finally:
        await store.close()
    print(json.dumps(seqs))

asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
"""


async def test_two_processes_appending_to_one_document_stay_gapless(backend: Backend) -> None:
    store = await backend.open()
    await store.create_document("d", "alice")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            json.dumps(backend.spec),
            f"p{i}",
            "40",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(2)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 60)
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    seqs = [seq for out, _ in outputs for seq in json.loads(out)]
    assert sorted(seqs) == list(range(1, 241))
    assert await store.head("d") == 240


# --- model-based -----------------------------------------------------------------------

DOCS = ("a", "b", "c")
requests = st.builds(
    AppendRequest,
    document_id=st.sampled_from(DOCS),
    user_id=st.sampled_from(("u1", "u2")),
    client_op_id=st.none() | st.sampled_from(("x", "y", "z")),
    payload=st.binary(max_size=12),
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(st.lists(requests, max_size=8), min_size=1, max_size=5),
    since=st.integers(min_value=0, max_value=12),
    limit=st.integers(min_value=0, max_value=12),
)
async def test_random_batches_match_an_in_memory_model(
    store: OperationStore, batches: list[list[AppendRequest]], since: int, limit: int
) -> None:
    # One store for every example; each example gets documents of its own.
    prefix = uuid.uuid4().hex + ":"

    def rename(r: AppendRequest) -> AppendRequest:
        return AppendRequest(prefix + r.document_id, r.user_id, r.client_op_id, r.payload)

    for doc in DOCS:
        assert await store.create_document(prefix + doc, "owner")
    log: dict[str, list[AppendRequest]] = {prefix + doc: [] for doc in DOCS}
    keys: dict[tuple[str, str, str], int] = {}
    for batch in batches:
        batch = [rename(r) for r in batch]
        expected: list[AppendResult] = []
        for r in batch:
            key = None if r.client_op_id is None else (r.document_id, r.user_id, r.client_op_id)
            if key is not None and key in keys:
                expected.append(AppendResult(keys[key], True))
                continue
            log[r.document_id].append(r)
            seq = len(log[r.document_id])
            if key is not None:
                keys[key] = seq
            expected.append(AppendResult(seq, False))
        assert await store.append_batch(batch) == expected
    for doc, ops in log.items():
        assert await store.head(doc) == len(ops)
        got = await store.read_ops(doc, since, limit)
        want = list(enumerate(ops, start=1))[since : since + limit]
        assert [(op.seq, op.user_id, op.client_op_id, op.payload) for op in got] == [
            (seq, r.user_id, r.client_op_id, r.payload) for seq, r in want
        ]
