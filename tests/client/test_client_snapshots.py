"""The SDK and snapshots, against a live server: a session opened with
``snapshot=True`` starts from the newest snapshot; after compaction a session
behind the kept log gets it again with ``resync``; one without snapshots fails
with ``history_compacted``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from client_support import WAIT
from test_client_sync import opened

from cowrite.client import ClientError, CowriteClient, DocumentSnapshot, Operation
from cowrite.core.compaction import RetentionSettings, compact_documents


async def test_open_with_snapshot_then_resync_after_compaction(
    make_client: Callable[..., CowriteClient], server: Any
) -> None:
    writer = await opened(make_client("alice"), "snap")
    for i in range(30):
        await writer.submit({"n": i})
    await writer.store_snapshot(20, {"state": b"\x00upto20"})
    with pytest.raises(ClientError) as stale:
        await writer.store_snapshot(20, "again")
    assert stale.value.code == "stale_snapshot"

    snaps: list[DocumentSnapshot] = []
    ops: list[Operation] = []
    reader = await opened(
        make_client("alice"),
        "snap",
        snapshot=True,
        on_snapshot=snaps.append,
        on_operation=ops.append,
    )
    assert snaps == [DocumentSnapshot("snap", 20, "alice", {"state": b"\x00upto20"}, False)]
    assert reader.snapshot == snaps[0]
    assert [op.seq for op in ops] == list(range(21, 31))
    assert reader.last_seq == 30

    # A session at seq 5 whose next operations are compacted away.
    behind_ops: list[Operation] = []
    behind_snaps: list[DocumentSnapshot] = []
    behind = make_client("alice")
    await opened(
        behind,
        "snap",
        since=5,
        snapshot=True,
        on_snapshot=behind_snaps.append,
        on_operation=behind_ops.append,
    )
    assert behind_snaps == [] and behind_ops[0].seq == 6
    await writer.store_snapshot(28, "upto28")
    await compact_documents(server.app.store, RetentionSettings(keep_ops=0, keep_days=0))
    # Reconnecting at seq 5 would leave a hole: the server resyncs it.
    fresh = make_client("alice")
    resynced: list[DocumentSnapshot] = []
    after: list[Operation] = []
    session = await opened(
        fresh,
        "snap",
        since=5,
        snapshot=True,
        on_snapshot=resynced.append,
        on_operation=after.append,
    )
    assert resynced == [DocumentSnapshot("snap", 28, "alice", "upto28", True)]
    assert [op.seq for op in after] == [29, 30]
    assert session.last_seq == 30
    # Without snapshots the session fails instead of skipping the hole.
    with pytest.raises(ClientError) as compacted:
        await opened(make_client("alice"), "snap", since=5)
    assert compacted.value.code == "history_compacted"
    # Live edits still reach the snapshot readers in order.
    await writer.submit("live")
    async with asyncio.timeout(WAIT):
        while not after or after[-1].seq != 31:
            await asyncio.sleep(0.01)
