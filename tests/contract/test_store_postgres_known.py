"""The PostgreSQL append with the heads this store committed itself
(``store_postgres._APPEND_KNOWN``): used when every head of a batch is known,
verified by the statement, and given up (nothing written) when another writer
appended meanwhile or an idempotency key is already stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from test_store_contract import outcomes, req

from cowrite.backends.store_postgres import PostgresStore
from pg_support import PG_DSN, throwaway_schema


@pytest.fixture
async def stores() -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    async with throwaway_schema() as schema:
        settings = {"search_path": schema}
        first = PostgresStore(PG_DSN, max_size=2, server_settings=settings)
        second = PostgresStore(PG_DSN, max_size=2, server_settings=settings)
        await first.open()
        await second.open()
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()


async def test_known_heads_are_used_and_another_writers_append_is_noticed(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = stores
    await first.create_document("d", "alice")
    await first.create_document("e", "alice")
    assert outcomes(await first.append_batch([req("d", op="a1")])) == [(1, False)]
    assert outcomes(await first.append_batch([req("d", op="a2"), req("e", op="a3")])) == [
        (2, False),
        (1, False),
    ]
    assert first.known_appends == 0  # "e" was not known yet
    assert outcomes(await first.append_batch([req("d", op="a4"), req("e", op="a5")])) == [
        (3, False),
        (2, False),
    ]
    assert first.known_appends == 1
    # Another writer appends: the first store's guess for "d" is stale.
    assert outcomes(await second.append_batch([req("d", op="b1")])) == [(4, False)]
    assert outcomes(await first.append_batch([req("d", op="a6"), req("e", op="a7")])) == [
        (5, False),
        (3, False),
    ]
    assert first.known_misses == 1
    # Nothing of the refused statement was written: the log is gapless, each op once.
    ops = await first.read_ops("d", 0, 100)
    assert [(op.seq, op.client_op_id) for op in ops] == [
        (1, "a1"),
        (2, "a2"),
        (3, "a4"),
        (4, "b1"),
        (5, "a6"),
    ]
    assert [op.seq for op in await first.read_ops("e", 0, 100)] == [1, 2, 3]


async def test_a_resend_through_the_known_path_answers_the_stored_seq(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    first, _ = stores
    await first.create_document("d", "alice")
    await first.append_batch([req("d", op="a1"), req("d", op="a2")])
    misses = first.known_misses
    # A batch with a new op and a resent one: the unique index refuses the
    # guess, cowrite_append answers both.
    assert outcomes(await first.append_batch([req("d", op="a3"), req("d", op="a1")])) == [
        (3, False),
        (1, True),
    ]
    assert first.known_misses == misses + 1
    assert [op.seq for op in await first.read_ops("d", 0, 100)] == [1, 2, 3]
    # The heads are known again afterwards.
    appends = first.known_appends
    assert outcomes(await first.append_batch([req("d", op="a4")])) == [(4, False)]
    assert first.known_appends == appends + 1


async def test_two_writers_racing_on_known_heads_stay_gapless(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = stores
    docs = ["d0", "d1", "d2"]
    for doc in docs:
        await first.create_document(doc, "alice")

    async def writer(store: PostgresStore, name: str) -> list[tuple[str, int]]:
        got: list[tuple[str, int]] = []
        for i in range(60):
            batch = [req(docs[(i + k) % 3], user=name, op=f"{name}-{i}-{k}") for k in range(2)]
            for request, result in zip(batch, await store.append_batch(batch), strict=True):
                assert not result.duplicate
                got.append((request.document_id, result.seq))
        return got

    got = await asyncio.gather(writer(first, "alice"), writer(second, "bob"))
    # The known-heads statement was tried (racing, it may find every guess
    # stale and leave each batch to cowrite_append: that is the point here).
    tried = first.known_appends + first.known_misses + second.known_appends + second.known_misses
    assert tried > 0
    for doc in docs:
        seqs = sorted(seq for mine in got for d, seq in mine if d == doc)
        assert seqs == list(range(1, len(seqs) + 1))
        stored = await first.read_ops(doc, 0, 1000)
        assert [op.seq for op in stored] == seqs
