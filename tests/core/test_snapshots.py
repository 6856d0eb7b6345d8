"""Snapshots, compaction and resync in the collaboration service (recording
gateway, real SQLite store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_collab import close_service, connect, open_service

from cowrite.backends.broker import OperationMessage
from cowrite.backends.store import AppendRequest
from cowrite.backends.store_sqlite import SqliteStore
from cowrite.core.compaction import RetentionSettings, compact_documents
from cowrite.core.service import CollabService
from cowrite.core.settings import CollabSettings

Svc = tuple[CollabService, Any, SqliteStore]


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Svc]:
    svc, gateway, store = await open_service(
        tmp_path / "db.sqlite",
        CollabSettings(page_size=5, presence_interval=0.01, max_snapshot_bytes=2048),
    )
    yield svc, gateway, store
    await close_service(svc, store)


async def write(svc: CollabService, sid: str, doc: str, count: int, tag: str = "w") -> None:
    for i in range(count):
        ack = await svc.edit(sid, {"documentId": doc, "operation": i, "clientOpId": f"{tag}{i}"})
        assert ack["ok"], ack


async def test_store_snapshot_rules_and_errors(service: Svc) -> None:
    svc, _gw, store = service
    connect(svc, "a", "alice")
    connect(svc, "v", "vera")
    assert (await svc.store_snapshot("a", {"documentId": "d", "seq": 1, "data": 1}))["error"][
        "code"
    ] == "not_joined"
    await svc.join("a", "d")
    await write(svc, "a", "d", 4)

    async def code(sid: str, payload: Any) -> str:
        ack = await svc.store_snapshot(sid, payload)
        assert ack["ok"] is False, ack
        return str(ack["error"]["code"])

    assert await code("a", {"documentId": "d", "seq": 2}) == "invalid_payload"  # no data
    assert await code("a", {"documentId": "d", "seq": 0, "data": 1}) == "invalid_payload"
    assert await code("a", {"documentId": "d", "seq": "2", "data": 1}) == "invalid_payload"
    assert await code("a", ["d", 2]) == "invalid_payload"
    assert await code("a", {"documentId": "d", "seq": 5, "data": 1}) == "invalid_seq"
    assert await code("a", {"documentId": "d", "seq": 2, "data": "x" * 3000}) == (
        "payload_too_large"
    )
    assert await code("a", {"documentId": "d", "seq": 2, "data": {1, 2}}) == "invalid_payload"
    ok = await svc.store_snapshot("a", {"documentId": "d", "seq": 3, "data": {"b": b"\x00\x01"}})
    assert ok == {"ok": True, "documentId": "d", "seq": 3}
    stale = await svc.store_snapshot("a", {"documentId": "d", "seq": 3, "data": 1})
    assert stale["error"]["code"] == "stale_snapshot" and stale["error"]["latest"] == 3
    # A viewer cannot store one.
    await svc.share("a", {"documentId": "d", "userId": "vera", "role": "viewer"})
    await svc.join("v", "d")
    assert await code("v", {"documentId": "d", "seq": 4, "data": 1}) == "read_only"
    snapshot = await store.latest_snapshot("d")
    assert snapshot is not None and (snapshot.seq, snapshot.user_id) == (3, "alice")


async def test_join_with_snapshot_gets_it_and_the_ops_after(service: Svc) -> None:
    svc, gw, _store = service
    connect(svc, "a", "alice")
    await svc.join("a", "d")
    await write(svc, "a", "d", 12)
    assert (await svc.store_snapshot("a", {"documentId": "d", "seq": 9, "data": [b"\xff", 9]}))[
        "ok"
    ]
    connect(svc, "b", "alice")
    ack = await svc.join("b", {"documentId": "d", "since": 0, "snapshot": True})
    assert ack["snapshot"] == {"seq": 9, "userId": "alice", "data": [b"\xff", 9]}
    assert "resync" not in ack
    assert [op["seq"] for op in ack["ops"]] == [10, 11, 12]
    assert (ack["head"], ack["more"]) == (12, False)
    # Live operations follow without a gap.
    await write(svc, "a", "d", 1, "late")
    await asyncio.sleep(0)
    assert [e["seq"] for e in gw.events("b", "remote-edit")] == [13]
    # A client that does not ask for snapshots gets the old shape: the whole log.
    connect(svc, "c", "alice")
    old = await svc.join("c", {"documentId": "d", "since": 0})
    assert "snapshot" not in old and [op["seq"] for op in old["ops"]] == [1, 2, 3, 4, 5]
    # A client past the snapshot gets only operations.
    connect(svc, "e", "alice")
    later = await svc.join("e", {"documentId": "d", "since": 10, "snapshot": True})
    assert "snapshot" not in later and [op["seq"] for op in later["ops"]] == [11, 12, 13]


async def test_since_older_than_the_kept_log_gets_resync_with_the_snapshot(
    service: Svc,
) -> None:
    svc, _gw, store = service
    connect(svc, "a", "alice")
    await svc.join("a", "d")
    await write(svc, "a", "d", 20)
    await svc.store_snapshot("a", {"documentId": "d", "seq": 15, "data": "at 15"})
    [done] = await compact_documents(store, RetentionSettings(keep_ops=2, keep_days=0))
    assert (done.deleted_ops, done.kept_from) == (13, 14)
    # Opted in, since 4 (deleted): the snapshot, resync, and the ops after it.
    connect(svc, "b", "alice")
    ack = await svc.join("b", {"documentId": "d", "since": 4, "snapshot": True})
    assert ack["resync"] is True and ack["snapshot"]["seq"] == 15
    assert [op["seq"] for op in ack["ops"]] == [16, 17, 18, 19, 20]
    assert svc.recoveries.get("snapshot") == 1
    # Since 13 is the last deleted one: still covered by the log from 14.
    connect(svc, "c", "alice")
    ack = await svc.join("c", {"documentId": "d", "since": 13, "snapshot": True})
    assert "snapshot" not in ack and ack["ops"][0]["seq"] == 14
    # Not opted in: a clear error, never a page with a hole, and no membership.
    connect(svc, "o", "alice")
    old = await svc.join("o", {"documentId": "d", "since": 4})
    assert old["ok"] is False and old["error"]["code"] == "history_compacted"
    assert "14" in old["error"]["message"]
    assert (await svc.sync("o", {"documentId": "d", "since": 4}))["error"]["code"] == ("not_joined")
    # sync below the kept log: the snapshot for a member that opted in...
    page = await svc.sync("c", {"documentId": "d", "since": 2, "limit": 3})
    assert page["resync"] is True and page["snapshot"]["seq"] == 15
    assert [op["seq"] for op in page["ops"]] == [16, 17, 18]
    # ...and history_compacted for one that did not.
    connect(svc, "p", "alice")
    await svc.join("p", {"documentId": "d", "since": 20})
    compacted = await svc.sync("p", {"documentId": "d", "since": 3})
    assert compacted["error"]["code"] == "history_compacted"


async def test_compaction_job_runs_in_the_background(tmp_path: Path) -> None:
    settings = CollabSettings(retention=RetentionSettings(keep_ops=1, keep_days=0, interval=0.05))
    svc, _gw, store = await open_service(tmp_path / "db.sqlite", settings)
    try:
        connect(svc, "a", "alice")
        await svc.join("a", "d")
        await write(svc, "a", "d", 10)
        await svc.store_snapshot("a", {"documentId": "d", "seq": 8, "data": 8})
        for _ in range(100):
            ops = await store.read_ops("d", 0, 100)
            if ops[0].seq == 8:
                break
            await asyncio.sleep(0.02)
        assert [op.seq for op in ops] == [8, 9, 10]
    finally:
        await close_service(svc, store)


async def test_gap_fill_over_a_compacted_range_resyncs_members(service: Svc) -> None:
    """A room waiting for operations the log no longer holds moves on and tells
    its members to resync (their sync then gets the snapshot)."""
    svc, gw, store = service
    connect(svc, "a", "alice")
    await svc.join("a", "d")
    await write(svc, "a", "d", 3)
    connect(svc, "b", "alice")
    await svc.join("b", {"documentId": "d", "since": 3, "snapshot": True})
    await asyncio.sleep(0)
    # Another instance commits 4..10 and snapshots; compaction deletes up to 9;
    # only 10 reaches this instance through the broker.
    await store.append_batch([AppendRequest("d", "zed", f"z{i}", b"J1") for i in range(7)])
    await store.store_snapshot("d", 10, "zed", b'J"ten"')
    await store.compact("d", keep_ops=0, keep_seconds=0)
    svc.on_message(OperationMessage("d", "other", 10, "zed", "z6", b"J1"))
    for _ in range(100):
        if gw.events("b", "resync"):
            break
        await asyncio.sleep(0.02)
    assert gw.events("b", "resync") == [{"documentId": "d", "since": 3}]
    page = await svc.sync("b", {"documentId": "d", "since": 3})
    assert page["resync"] is True and page["snapshot"] == {
        "seq": 10,
        "userId": "zed",
        "data": "ten",
    }
    assert [op["seq"] for op in page["ops"]] == []
    await write(svc, "a", "d", 1, "after")
    await asyncio.sleep(0.01)
    assert [e["seq"] for e in gw.events("b", "remote-edit")] == [11]
