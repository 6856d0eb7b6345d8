"""The server is killed (or drained) mid-run and restarted on the same port and
SQLite file: every client reconnects by itself and the times are reported."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from loadtest_support import free_port, run_loadtest, start_server, stop_server


@pytest.mark.parametrize("signal_name", ["KILL", "TERM"])
async def test_clients_rejoin_after_the_server_restarts(tmp_path: Path, signal_name: str) -> None:
    port = free_port()
    db = str(tmp_path / "cowrite.db")
    first = await start_server(port, db)
    servers = [first]
    try:
        run = asyncio.create_task(
            run_loadtest(
                "--url",
                f"http://127.0.0.1:{port}",
                "--clients",
                "30",
                "--room-size",
                "3",
                "--workers",
                "2",
                "--duration",
                "4",
                "--rate",
                "40",
                "--editors",
                "0.2",
                "--drain",
                "1",
                "--reconnect-timeout",
                "20",
                "--backoff-base",
                "0.1",
                "--server-pid",
                str(first.pid),
                "--kill-after",
                "1",
                "--kill-pid",
                str(first.pid),
                "--signal",
                signal_name,
            )
        )
        await asyncio.wait_for(first.wait(), 30)  # killed by the load generator
        servers.append(await start_server(port, db))
        report = await asyncio.wait_for(run, 45)
    finally:
        for server in servers:
            await stop_server(server)

    assert report["connections"]["connected"] == 30
    rec = report["reconnection"]
    assert rec["disconnects"] == 30
    assert rec["rejoined"] == 30 and rec["failed"] == 0
    times = rec["time_ms"]
    assert times["count"] == 30
    assert 0 < times["p50"] <= times["p95"] <= times["max"]
    assert report["config"]["kill"] == {
        "after": 1.0,
        "pids": [first.pid],
        "signal": f"SIG{signal_name}",
    }
    # Every timeline entry counts from the run's start (began_unix, Unix time):
    # the signal went out --kill-after seconds into the edit phase.
    timeline = report["timeline_s"]
    assert timeline["edit_start"] + 1.0 <= timeline["kill"] < timeline["end"]
    assert abs(timeline["began_unix"] + timeline["end"] - time.time()) < 60
    assert report["server"]["cpu_incomplete"] is True
    if signal_name == "TERM":
        # The draining server told every client when to come back.
        assert rec["drain_notices"] == 30
    assert report["adr"][2]["metric"] == "reconnection time P95"
    assert report["adr"][2]["value"] == times["p95"]
    # Acknowledged operations are durable: whatever a client missed while it
    # was away came back in its rejoin acknowledgement.
    delivery = report["delivery"]
    assert delivery["delivered"] + delivery["caught_up_on_rejoin"] >= delivery["expected"] * 0.9
