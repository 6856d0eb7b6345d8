"""Two instances, one log, a lossy broker: every member still gets every operation once, in order."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from collab_support import SECRET, CountsPageReads, RecordingGateway

from cowrite.auth import AuthSettings, TokenVerifier, mint_token
from cowrite.backends.broker import BrokerListener, BrokerMessage, OperationMessage
from cowrite.backends.broker_memory import MemoryBroker, MemoryHub
from cowrite.backends.presence_memory import MemoryPresence
from cowrite.backends.store_postgres import PostgresStore
from cowrite.backends.store_sqlite import SqliteStore
from cowrite.core.service import CollabService
from cowrite.core.settings import CollabSettings
from pg_support import PG_DSN, throwaway_schema


class LossyBroker:
    """A MemoryBroker that loses some operation messages (Redis pub/sub is at-most-once)."""

    def __init__(self, hub: MemoryHub, instance_id: str, drop: float, seed: int) -> None:
        self.inner = MemoryBroker(hub, instance_id=instance_id)
        self.drop = drop
        self.random = random.Random(seed)
        self.dropped = 0

    @property
    def instance_id(self) -> str:
        return self.inner.instance_id

    @property
    def available(self) -> bool:
        return self.inner.available

    @property
    def outages(self) -> int:
        return self.inner.outages

    async def start(self, listener: BrokerListener) -> None:
        await self.inner.start(listener)

    async def stop(self) -> None:
        await self.inner.stop()

    async def subscribe(self, document_id: str) -> None:
        await self.inner.subscribe(document_id)

    async def unsubscribe(self, document_id: str) -> None:
        await self.inner.unsubscribe(document_id)

    async def publish(self, message: BrokerMessage) -> bool:
        if isinstance(message, OperationMessage) and self.random.random() < self.drop:
            self.dropped += 1
            return True  # lost on the way, as pub/sub may
        return await self.inner.publish(message)

    async def publish_many(self, messages: Sequence[BrokerMessage]) -> int:
        return sum([await self.publish(m) for m in messages])

    async def ping(self) -> bool:
        return await self.inner.ping()


@pytest.fixture
async def cluster(
    tmp_path: Path,
) -> AsyncIterator[list[tuple[CollabService, RecordingGateway, LossyBroker]]]:
    hub = MemoryHub()
    nodes = []
    stores = []
    for i in range(2):
        store = SqliteStore(tmp_path / "shared.sqlite")
        await store.open()
        stores.append(store)
        gateway = RecordingGateway()
        broker = LossyBroker(hub, f"i{i}", drop=0.3, seed=i)
        svc = CollabService(
            store=store,
            presence=MemoryPresence(),
            gateway=gateway,
            verifier=TokenVerifier(AuthSettings(secret=SECRET)),
            broker=broker,
            settings=CollabSettings(gap_fill_delay=0.01, tail_check_delay=0.05),
        )
        await svc.start()
        nodes.append((svc, gateway, broker))
    yield nodes
    for svc, _, _ in nodes:
        await svc.stop()
    for store in stores:
        await store.close()


def connect(svc: CollabService, sid: str, user: str) -> None:
    svc.connect(sid, {"token": mint_token(AuthSettings(secret=SECRET), user_id=user)})


async def test_lossy_broker_gaps_are_filled_from_the_log(cluster: Any) -> None:
    (a, gw_a, broker_a), (b, gw_b, broker_b) = cluster
    connect(a, "wa", "alice")
    connect(b, "wb", "alice")
    connect(b, "rb", "bob")
    assert (await a.join("wa", "doc"))["ok"]
    assert (await b.join("wb", "doc"))["ok"]
    assert (await b.join("rb", "doc"))["ok"] is False  # bob has no role yet
    await a.share("wa", {"documentId": "doc", "userId": "bob", "role": "viewer"})
    assert (await b.join("rb", {"documentId": "doc", "since": 0}))["ok"]

    async def writer(svc: CollabService, sid: str, tag: str) -> list[int]:
        seqs = []
        for i in range(60):
            ack = await svc.edit(
                sid, {"documentId": "doc", "operation": [tag, i], "clientOpId": f"{tag}{i}"}
            )
            assert ack["ok"], ack
            seqs.append(ack["seq"])
        return seqs

    seqs_a, seqs_b = await asyncio.gather(writer(a, "wa", "a"), writer(b, "wb", "b"))
    assert sorted(seqs_a + seqs_b) == list(range(1, 121))
    assert broker_a.dropped + broker_b.dropped > 0
    for _ in range(200):
        got = [e["seq"] for e in gw_b.events("rb", "remote-edit")]
        seen_a = [e["seq"] for e in gw_a.events("wa", "remote-edit")]
        if len(got) >= 120 and len(seen_a) >= len(seqs_b):
            break
        await asyncio.sleep(0.02)
    assert got == list(range(1, 121))  # every op, once, in order, despite the losses
    # The writer on A sees B's operations (and not its own) in order too.
    assert seen_a == sorted(seqs_b)
    assert a.gaps_filled + b.gaps_filled > 0


class PageCountingStore(CountsPageReads, PostgresStore):
    """The real PostgreSQL store, counting its ``read_pages`` calls."""


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    async with throwaway_schema() as name:
        yield name


async def test_tail_checks_of_rooms_that_went_quiet_together_share_statements(schema: str) -> None:
    """Every remote operation starts a tail check of its room on the other
    instances that have it open (a head read once it goes quiet); the checks
    of rooms that went quiet together are due on one grid and share a
    statement instead of one each (PostgreSQL: reads suspend, so they batch)."""
    hub = MemoryHub()
    stores = [
        PageCountingStore(PG_DSN, min_size=1, max_size=4, server_settings={"search_path": schema})
        for _ in range(2)
    ]
    nodes = []
    try:
        for i, store in enumerate(stores):
            await store.open()
            svc = CollabService(
                store=store,
                presence=MemoryPresence(),
                gateway=RecordingGateway(),
                verifier=TokenVerifier(AuthSettings(secret=SECRET)),
                broker=MemoryBroker(hub, instance_id=f"i{i}"),
                settings=CollabSettings(tail_check_delay=0.4),
            )
            await svc.start()
            nodes.append(svc)
        a, b = nodes
        docs = [f"doc{i}" for i in range(30)]
        connect(a, "w", "alice")
        connect(b, "r", "alice")
        for doc in docs:
            assert (await a.join("w", doc))["ok"]
            assert (await b.join("r", doc))["ok"]
        await asyncio.sleep(0.5)  # start-up checks (the broker came up) are over
        before = len(stores[1].page_reads)
        for i, doc in enumerate(docs):
            ack = await a.edit("w", {"documentId": doc, "operation": i, "clientOpId": f"c{i}"})
            assert ack["ok"], ack
        await asyncio.sleep(1.0)  # every check is due within 0.6 s of its operation
        # 30 checks: per grid step, the first read of the turn runs alone and
        # the others share the next (the edits span at most a few steps).
        calls = len(stores[1].page_reads) - before
        assert 1 <= calls <= 8, calls
    finally:
        for svc in nodes:
            await svc.stop()
        for store in stores:
            await store.close()
