"""The demo page stores snapshots and a late joiner starts from one, in a real
browser: ``snapshot_driver.mjs`` types in one page (a snapshot every 20
operations via ``?snapshotEvery=20``), runs ``cowrite compact`` against the
server's store, and opens a second page; the checks are here."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from browser_support import Served
from test_demo_page import run_driver

from cowrite.backends.store_sqlite import SqliteStore

DRIVER = Path(__file__).with_name("snapshot_driver.mjs")


def test_page_stores_snapshots_and_a_late_joiner_starts_from_one(
    node: str,
    chromium: str,
    web_build: Path,
    serve: Callable[..., Served],
    output_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = serve(dev=True)
    compact = [
        sys.executable,
        "-m",
        "cowrite",
        "compact",
        "--data-dir",
        str(served.data_dir),
        "--keep-ops",
        "0",
        "--keep-days",
        "0",
    ]
    monkeypatch.setenv("COWRITE_COMPACT_CMD", json.dumps(compact))
    report = run_driver(node, chromium, served, output_dir, driver=DRIVER)

    stored = report["stored"]
    assert stored["snapshotSource"] == "stored" and stored["snapshotSeq"] >= 20
    assert f"the log starts at seq {stored['snapshotSeq']}" in report["compact"] or (
        "deleted" in report["compact"]
    )
    assert "compacted 1 documents" in report["compact"]
    final = report["final"]
    assert final["ada"] == final["linus"] == report["typed"]
    linus = report["status"]["linus"]
    assert linus["state"] == "connected" and linus["snapshotSource"] == "received"
    assert linus["snapshotSeq"] >= stored["snapshotSeq"]
    assert report["pageErrors"] == [] and report["consoleErrors"] == []

    async def check_store() -> None:
        store = SqliteStore(served.data_dir / "cowrite.db")
        await store.open()
        try:
            snapshot = await store.latest_snapshot(report["document"])
            assert snapshot is not None and snapshot.seq == linus["snapshotSeq"]
            ops, head = await store.read_page(report["document"], 0, 1000)
            # The log no longer starts at 1: the first stored snapshot's ops are gone.
            assert ops[0].seq > 1 and head >= snapshot.seq
        finally:
            await store.close()

    asyncio.run(check_store())
