"""Issue 12, snapshots and log compaction, with the official clients
(python-socketio and socket.io-client) over both stores: a joiner that asks
for snapshots gets the newest one plus the operations after it; after
compaction a ``since`` older than the kept log gets the snapshot with
``resync`` (or ``history_compacted`` without snapshots), never a silent gap."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from e2e_support import Client, Server, token, unique_doc

from cowrite.core.compaction import RetentionSettings, compact_documents

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

STATE = {"yjs": bytes(range(256)) * 3, "note": "state at 24"}


def seqs(ack: dict[str, Any]) -> list[int]:
    return [op["seq"] for op in ack["ops"]]


async def test_join_with_snapshot_compaction_and_resync(
    server: Server, make_client: Callable[..., Awaitable[Client]]
) -> None:
    doc = unique_doc()
    alice = await make_client("python", "alice", ["websocket"])
    bob = await make_client("node", "bob", ["polling"])
    carol = await make_client("node", "carol", ["websocket"])
    await alice.connect_ok(server.url, token("alice"))
    assert (await alice.call("join-document", doc))["role"] == "owner"
    await alice.call("share-document", {"documentId": doc, "userId": "bob", "role": "viewer"})
    await alice.call("share-document", {"documentId": doc, "userId": "carol", "role": "editor"})
    for i in range(30):
        ack = await alice.call(
            "edit-operation",
            {"documentId": doc, "operation": {"u": bytes([i]) * 3}, "clientOpId": f"a{i}"},
        )
        assert ack["seq"] == i + 1
    stored = await alice.call("store-snapshot", {"documentId": doc, "seq": 24, "data": STATE})
    assert stored == {"ok": True, "documentId": doc, "seq": 24}
    too_far = await alice.call("store-snapshot", {"documentId": doc, "seq": 31, "data": 1})
    assert too_far["error"]["code"] == "invalid_seq"

    # A viewer cannot store one; it joins with the snapshot (binary byte for byte).
    await bob.connect_ok(server.url, token("bob"))
    joined = await bob.call("join-document", {"documentId": doc, "since": 0, "snapshot": True})
    assert joined["ok"] and joined["snapshot"] == {"seq": 24, "userId": "alice", "data": STATE}
    assert (seqs(joined), joined["head"], joined["more"]) == (list(range(25, 31)), 30, False)
    assert joined["ops"][0]["operation"] == {"u": bytes([24]) * 3}
    refused = await bob.call("store-snapshot", {"documentId": doc, "seq": 30, "data": 1})
    assert refused["error"]["code"] == "read_only"
    # The old shape for a client that does not ask: the log from the start.
    plain = await bob.call("join-document", {"documentId": doc, "since": 0})
    assert "snapshot" not in plain and seqs(plain)[0] == 1
    # (binary operations: that page ends at 10 attachments; bob is caught up at 30)
    assert (await bob.call("join-document", {"documentId": doc, "since": 30}))["ops"] == []

    # Compaction (what `cowrite compact --keep-ops 4 --keep-days 0` runs).
    [done] = await compact_documents(
        server.app.store, RetentionSettings(keep_ops=4, keep_days=0), [doc]
    )
    assert (done.deleted_ops, done.kept_from) == (20, 21)

    await carol.connect_ok(server.url, token("carol"))
    old = await carol.call("join-document", {"documentId": doc, "since": 3})
    assert old["ok"] is False and old["error"]["code"] == "history_compacted"
    resync = await carol.call("join-document", {"documentId": doc, "since": 3, "snapshot": True})
    assert resync["resync"] is True and resync["snapshot"]["seq"] == 24
    assert seqs(resync) == list(range(25, 31))
    kept = await carol.call("join-document", {"documentId": doc, "since": 20, "snapshot": True})
    assert "snapshot" not in kept and seqs(kept) == list(range(21, 31))
    page = await carol.call("sync", {"documentId": doc, "since": 10, "limit": 3})
    assert page["resync"] is True and page["snapshot"]["data"] == STATE
    assert seqs(page) == [25, 26, 27] and page["more"] is True

    # Live edits after all this arrive once, in order.
    ack = await carol.call(
        "edit-operation", {"documentId": doc, "operation": {"u": b"live"}, "clientOpId": "c1"}
    )
    assert ack["seq"] == 31
    edits = await bob.wait_for("remote-edit")
    assert [e["seq"] for e in edits] == [31]
    # The next snapshot must be newer than the last.
    stale = await carol.call("store-snapshot", {"documentId": doc, "seq": 20, "data": 1})
    assert stale["error"]["code"] == "stale_snapshot" and stale["error"]["latest"] == 24
    newer = await carol.call("store-snapshot", {"documentId": doc, "seq": 31, "data": [b"\x01"]})
    assert newer["ok"]
    latest = await alice.call("join-document", {"documentId": doc, "since": 0, "snapshot": True})
    assert latest["snapshot"] == {"seq": 31, "userId": "carol", "data": [b"\x01"]}
    assert latest["ops"] == []

    def scrape() -> str:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
            return str(response.read().decode())

    metrics = await asyncio.to_thread(scrape)
    assert "cowrite_snapshots_stored_total 2.0" in metrics
    assert "cowrite_snapshot_resyncs_total 2.0" in metrics  # carol's join and sync
    # One handshake observed per client (alice, bob, carol).
    assert "cowrite_handshake_duration_seconds_count 3.0" in metrics
    assert 'cowrite_handshake_duration_seconds_bucket{le="+Inf"} 3.0' in metrics
