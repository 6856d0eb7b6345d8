"""A small load test against an in-process cowrite application: every client
connects and joins, latencies are reported, and the JSON report has its schema."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loadtest_support import SERVER_ENV, run_loadtest

from cowrite.app import build_app
from cowrite.config import load_app_settings

SUMMARY_KEYS = {"count", "p50", "p95", "p99", "mean", "max"}


def check_schema(report: dict[str, Any]) -> None:
    assert report["schema"] == "cowrite.loadtest/2"
    assert set(report) >= {
        "config", "connections", "edits", "delivery", "reconnection",
        "server", "generator", "adr", "events", "timeline_s", "errors",
    }  # fmt: skip
    for section, key in (
        ("connections", "connect_time_ms"),
        ("edits", "ack_latency_ms"),
        ("delivery", "latency_ms"),
        ("reconnection", "time_ms"),
    ):
        assert set(report[section][key]) == SUMMARY_KEYS
    assert set(report["connections"]) >= {"attempted", "connected", "failed", "success_rate"}
    assert set(report["server"]) >= {
        "instances",
        "rss_growth_mb_per_1000_connections",
        "cpu_us_per_delivered",
    }
    assert set(report["generator"]) >= {"cpu_us_per_delivered", "cpu_us_per_message", "workers"}
    assert [c["metric"] for c in report["adr"]] == [
        "connection success rate",
        "delivery latency P95",
        "reconnection time P95",
        "concurrent connections",
        "server memory growth per 1,000 connections",
        "generator CPU per delivered message vs server's",
    ]
    for check in report["adr"]:
        assert set(check) == {"metric", "target", "value", "unit", "ok"}


async def test_small_run_connects_everyone_and_measures(tmp_path: Path) -> None:
    settings = load_app_settings(
        environ=SERVER_ENV,
        server_overrides={"host": "127.0.0.1", "port": 0, "use_uvloop": False, "gc_freeze": False},
        store=f"sqlite:///{tmp_path}/db",
        data_dir=str(tmp_path),
        dev_mode=False,
    )
    app = build_app(settings)
    await app.start()
    try:
        report = await run_loadtest(
            "--url", f"http://127.0.0.1:{app.port}", "--clients", "60", "--room-size", "3",
            "--workers", "2", "--duration", "2", "--rate", "60", "--editors", "0.2",
            "--drain", "1", "--server-pid", str(os.getpid()),
        )  # fmt: skip
    finally:
        await app.stop()

    check_schema(report)
    assert report["errors"] == []
    conns = report["connections"]
    assert conns["attempted"] == conns["connected"] == 60
    assert conns["success_rate"] == 100.0
    assert report["config"]["editor_clients"] == 12
    assert report["config"]["sources"] == ["127.0.0.2", "127.0.0.3"]
    edits = report["edits"]
    assert edits["sent"] > 0 and edits["acked"] == edits["sent"]
    delivery = report["delivery"]
    # Every acked operation reaches the two other members of its room.
    assert delivery["delivered"] == delivery["expected"] == 2 * edits["acked"]
    latency = delivery["latency_ms"]
    assert latency["count"] == delivery["delivered"]
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert report["reconnection"]["disconnects"] == 0
    (instance,) = report["server"]["instances"]
    assert instance["connections"] == 60 and instance["rss_connected_mb"] > 0
    assert report["generator"]["cpu_us_per_delivered"] > 0
    assert report["adr"][0]["ok"] is True
