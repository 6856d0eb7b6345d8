"""The run's report: merged worker statistics, server samples, ADR-003's metrics.

``build_report`` returns a JSON-ready dict (``schema`` ``cowrite.loadtest/1``,
described in ``cowrite.loadtest``'s docstring); ``render_table`` turns it
into the text table the command prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cowrite.loadtest.hist import Histogram
from cowrite.loadtest.kill import KillSpec
from cowrite.loadtest.plan import Plan, source_address

SCHEMA = "cowrite.loadtest/2"  # 2: server memory is growth over the baseline
HISTOGRAMS = frozenset({"latency", "ack_latency", "connect_time", "reconnect_time"})
MB = 1024 * 1024

# ADR-003 "Success Metrics".
TARGET_SUCCESS_RATE = 99.0  # percent, exclusive
TARGET_P95_MS = 50.0
TARGET_RECONNECT_MS = 2000.0
TARGET_CONNECTIONS = 100_000
TARGET_MB_PER_1000 = 100.0


def merge_snapshots(snapshots: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """Add the workers' counters; merge their histograms (left as ``Histogram``)."""
    out: dict[str, Any] = {}
    for snap in snapshots:
        if not snap:
            continue
        for name, value in snap.items():
            if name in HISTOGRAMS:
                hist = out.setdefault(name, Histogram())
                hist.merge(Histogram.from_wire(value))
            elif isinstance(value, dict):
                counts = out.setdefault(name, {})
                for key, n in value.items():
                    counts[key] = counts.get(key, 0) + n
            elif isinstance(value, list):
                have = out.setdefault(name, [0] * len(value))
                for i, n in enumerate(value):
                    have[i] += n
            else:
                out[name] = out.get(name, 0) + value
    for name in HISTOGRAMS:
        out.setdefault(name, Histogram())
    return out


def _ratio(num: float, den: float, digits: int = 4) -> float | None:
    return round(num / den, digits) if den else None


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value / MB, 1)


def _sum(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def build_report(
    *,
    plan: Plan,
    results: list[dict[str, Any]],
    connected: dict[str, Any],
    samples: dict[str, dict[str, Any]],
    server_pids: tuple[int, ...],
    kill: KillSpec | None,
    events: dict[str, float],
    errors: list[str],
) -> dict[str, Any]:
    final = merge_snapshots(r["stats"] for r in results)
    if not results:
        final = connected or merge_snapshots([])
    attempted = plan.clients
    ok_at_connect = connected.get("attempted", 0) - connected.get("connect_failed", 0)
    success_rate = 100.0 * ok_at_connect / attempted if attempted else 0.0
    latency: Histogram = final["latency"]
    reconnect: Histogram = final["reconnect_time"]
    delivered = final.get("delivered", 0)
    sent = final.get("sent", 0)
    acked = final.get("acked", 0)
    window = max((r["window"] for r in results), default=0.0)

    # -- servers -------------------------------------------------------------
    per_target = connected.get("connected_per_target", [0] * len(plan.urls))
    base = samples.get("baseline", {})
    conn = samples.get("connected", {})
    start = samples.get("edit_start", {})
    end = samples.get("end", {})
    instances = []
    for i, pid in enumerate(server_pids):
        paired = len(server_pids) == len(plan.urls)
        connections = per_target[i] if paired else None
        rss_conn = _at(conn, "rss", i)
        rss_base = _at(base, "rss", i)
        instances.append(
            {
                "pid": pid,
                "url": plan.urls[i] if paired else None,
                "connections": connections,
                "rss_baseline_mb": _mb(rss_base),
                "rss_connected_mb": _mb(rss_conn),
                "rss_end_mb": _mb(_at(end, "rss", i)),
                # Growth over the baseline: what the connections cost.
                "rss_growth_mb_per_1000_connections": (
                    round((rss_conn - rss_base) / MB / connections * 1000, 1)
                    if rss_conn is not None and rss_base is not None and connections
                    else None
                ),
            }
        )
    rss_base_total = _sum(_at(base, "rss", i) for i in range(len(server_pids)))
    rss_conn_total = _sum(_at(conn, "rss", i) for i in range(len(server_pids)))
    cpu_parts = [(_at(end, "cpu", i), _at(start, "cpu", i)) for i in range(len(server_pids))]
    server_cpu = _sum(e - s for e, s in cpu_parts if e is not None and s is not None)
    incomplete_cpu = any(e is None or s is None for e, s in cpu_parts)
    n_connected = ok_at_connect
    server = {
        "pids": list(server_pids),
        "instances": instances,
        "rss_baseline_mb": _mb(rss_base_total),
        "rss_connected_mb": _mb(rss_conn_total),
        # RSS growth from before the clients connected (the interpreter, the
        # code, the store) to all connected, per 1,000 connections: what the
        # connections cost, and what ADR-003's memory target is checked on.
        "rss_growth_mb_per_1000_connections": (
            round((rss_conn_total - rss_base_total) / MB / n_connected * 1000, 1)
            if rss_conn_total and rss_base_total and n_connected
            else None
        ),
        "cpu_seconds": round(server_cpu, 3) if server_cpu is not None else None,
        "cpu_incomplete": incomplete_cpu,  # a process went away (killed) mid-run
        "cpu_us_per_delivered": (
            round(server_cpu / delivered * 1e6, 2) if server_cpu and delivered else None
        ),
    }

    # -- the generator -------------------------------------------------------
    gen_cpu = sum(r["cpu_measured"] for r in results)
    gen_rss = _sum(r["rss"] for r in results)
    messages = delivered + sent + acked
    generator = {
        "workers": [
            {
                "worker": r["worker"],
                "pid": r["pid"],
                "source": r["source"],
                "clients": r["clients"],
                "rss_mb": _mb(r["rss"]),
                "cpu_measured_s": round(r["cpu_measured"], 3),
                "cpu_total_s": round(r["cpu_total"], 3),
                "gc_collections": r["gc_collections"],
            }
            for r in sorted(results, key=lambda r: r["worker"])
        ],
        "cpu_seconds": round(gen_cpu, 3),
        "cpu_us_per_delivered": round(gen_cpu / delivered * 1e6, 2) if delivered else None,
        "cpu_us_per_message": round(gen_cpu / messages * 1e6, 2) if messages else None,
        "rss_mb": _mb(gen_rss),
        "mb_per_1000_connections": (
            round(gen_rss / MB / n_connected * 1000, 1) if gen_rss and n_connected else None
        ),
    }

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "config": {
            "urls": list(plan.urls),
            "clients": plan.clients,
            "room_size": plan.room_size,
            "rooms": plan.rooms,
            "editors": plan.editors,
            "editor_clients": plan.editor_count,
            "rate": plan.rate,
            "duration": plan.duration,
            "settle": plan.settle,
            "workers": plan.workers,
            "sources": [source_address(plan, w) for w in range(plan.workers)],
            "connect_rate": plan.connect_rate,
            "op_bytes": plan.op_bytes,
            "run_id": plan.run_id,
            "documents": f"{plan.doc_id(0).rpartition('-')[0]}-<room>",
            "tokens": "minted (--secret)" if plan.secret is not None else "--token-file",
            "kill": (
                {"after": kill.after, "pids": list(kill.pids), "signal": kill.signal.name}
                if kill is not None
                else None
            ),
        },
        "connections": {
            "attempted": attempted,
            "connected": ok_at_connect,
            "failed": attempted - ok_at_connect,
            "success_rate": round(success_rate, 3),
            "errors": connected.get("errors", {}),
            "connect_time_ms": connected.get("connect_time", Histogram()).summary_ms(),
            "per_url": [
                {"url": url, "connected": per_target[i] if i < len(per_target) else 0}
                for i, url in enumerate(plan.urls)
            ],
            "connected_at_end": final.get("connected", 0),
        },
        "edits": {
            "sent": sent,
            "skipped": final.get("skipped", 0),
            "acked": acked,
            "ack_errors": final.get("ack_errors", {}),
            "rate": round(sent / plan.duration, 1),
            "ack_latency_ms": final["ack_latency"].summary_ms(),
        },
        "delivery": {
            "delivered": delivered,
            "expected": final.get("expected", 0),
            "ratio": _ratio(delivered, final.get("expected", 0)),
            "rate": round(delivered / window, 1) if window else None,
            "latency_ms": latency.summary_ms(),
            "caught_up_on_rejoin": final.get("caught_up", 0),
            "malformed": final.get("bad", 0),
        },
        "reconnection": {
            "disconnects": final.get("disconnects", 0),
            "rejoined": final.get("rejoined", 0),
            "failed": final.get("reconnect_failed", 0),
            "retries": final.get("reconnect_retries", 0),
            "drain_notices": final.get("drain_notices", 0),
            "drops": final.get("drops", {}),
            "unfinished": final.get("unfinished", {}),
            "errors": final.get("reconnect_errors", {}),
            "time_ms": reconnect.summary_ms(),
        },
        "server": server,
        "generator": generator,
        "events": final.get("events", {}),
        "timeline_s": {k: round(v, 3) for k, v in events.items()},
        "errors": errors,
    }
    report["adr"] = _adr(report)
    return report


def _at(sample: dict[str, Any], key: str, i: int) -> Any:
    values = sample.get(key) or []
    return values[i] if i < len(values) else None


def _check(
    metric: str, target: str, value: float | None, unit: str, ok: bool | None
) -> dict[str, Any]:
    return {"metric": metric, "target": target, "value": value, "unit": unit, "ok": ok}


def _adr(report: dict[str, Any]) -> list[dict[str, Any]]:
    """ADR-003's success metrics against this run (``ok`` None: not measured)."""
    conns = report["connections"]
    p95 = report["delivery"]["latency_ms"]["p95"]
    rec = report["reconnection"]["time_ms"]["p95"]
    mb = report["server"]["rss_growth_mb_per_1000_connections"]
    server_us = report["server"]["cpu_us_per_delivered"]
    gen_us = report["generator"]["cpu_us_per_delivered"]
    return [
        _check(
            "connection success rate",
            f"> {TARGET_SUCCESS_RATE:g} %",
            conns["success_rate"],
            "%",
            conns["success_rate"] > TARGET_SUCCESS_RATE,
        ),
        _check(
            "delivery latency P95",
            f"< {TARGET_P95_MS:g} ms",
            p95,
            "ms",
            None if p95 is None else p95 < TARGET_P95_MS,
        ),
        _check(
            "reconnection time P95",
            f"< {TARGET_RECONNECT_MS / 1000:g} s",
            rec,
            "ms",
            None if rec is None else rec < TARGET_RECONNECT_MS,
        ),
        _check(
            "concurrent connections",
            f"{TARGET_CONNECTIONS:,}",
            conns["connected"],
            "connections",
            # A smaller run does not try this target.
            None
            if conns["attempted"] < TARGET_CONNECTIONS
            else conns["connected"] >= TARGET_CONNECTIONS,
        ),
        _check(
            "server memory growth per 1,000 connections",
            f"< {TARGET_MB_PER_1000:g} MB",
            mb,
            "MB",
            None if mb is None else mb < TARGET_MB_PER_1000,
        ),
        _check(
            "generator CPU per delivered message vs server's",
            "generator < server",
            gen_us,
            "us",
            None if gen_us is None or server_us is None else gen_us < server_us,
        ),
    ]


# -- text ---------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip()


def _lat(summary: dict[str, Any]) -> str:
    if not summary.get("count"):
        return "-"
    return (
        f"p50 {_fmt(summary['p50'])}  p95 {_fmt(summary['p95'])}  "
        f"p99 {_fmt(summary['p99'])}  max {_fmt(summary['max'])} ms  (n={summary['count']:,})"
    )


def render_table(report: dict[str, Any]) -> str:
    c = report["config"]
    conns = report["connections"]
    edits = report["edits"]
    dl = report["delivery"]
    rec = report["reconnection"]
    srv = report["server"]
    gen = report["generator"]
    rows: list[tuple[str, str]] = [
        (
            "clients",
            f"{c['clients']:,} in {c['rooms']:,} rooms of {c['room_size']} "
            f"({c['editor_clients']:,} editors), {c['workers']} workers, "
            f"{len(c['urls'])} server URL(s)",
        ),
        ("load", f"{c['rate']:g} edits/s for {c['duration']:g} s, {c['op_bytes']} B padding"),
        (
            "connected",
            f"{conns['connected']:,} / {conns['attempted']:,} ({conns['success_rate']:.2f} %)",
        ),
        ("connect+join time", _lat(conns["connect_time_ms"])),
    ]
    if conns["errors"]:
        rows.append(("connect errors", ", ".join(f"{k}: {v}" for k, v in conns["errors"].items())))
    rows += [
        (
            "edits sent / acked",
            f"{edits['sent']:,} / {edits['acked']:,} "
            f"(skipped {edits['skipped']:,}, errors {sum(edits['ack_errors'].values()):,})",
        ),
        ("ack latency", _lat(edits["ack_latency_ms"])),
        (
            "remote-edits",
            f"{dl['delivered']:,} delivered / {dl['expected']:,} expected "
            f"({_fmt(dl['ratio'])}), {_fmt(dl['rate'])} /s",
        ),
        ("delivery latency", _lat(dl["latency_ms"])),
        (
            "reconnections",
            f"{rec['disconnects']:,} lost, {rec['rejoined']:,} rejoined, "
            f"{rec['failed']:,} failed, {rec['retries']:,} retries",
        ),
        ("reconnection time", _lat(rec["time_ms"])),
    ]
    if rec["errors"]:
        rows.append(
            ("reconnect errors", ", ".join(f"{k}: {v:,}" for k, v in rec["errors"].items()))
        )
    if rec["unfinished"]:
        rows.append(
            (
                "still reconnecting",
                ", ".join(f"{k}: {v:,}" for k, v in sorted(rec["unfinished"].items())),
            )
        )
    for inst in srv["instances"]:
        rows.append(
            (
                f"server {inst['pid']}",
                f"RSS {_fmt(inst['rss_baseline_mb'])} -> {_fmt(inst['rss_connected_mb'])} MB "
                f"with {_fmt(inst['connections'])} conns "
                f"(growth {_fmt(inst['rss_growth_mb_per_1000_connections'])} MB per 1,000)",
            )
        )
    if srv["pids"]:
        rows += [
            (
                "server memory",
                f"RSS {_fmt(srv['rss_baseline_mb'])} MB before the clients, "
                f"{_fmt(srv['rss_connected_mb'])} MB with them: growth "
                f"{_fmt(srv['rss_growth_mb_per_1000_connections'])} MB per 1,000 connections",
            ),
            (
                "server CPU",
                f"{_fmt(srv['cpu_seconds'])} s, "
                f"{_fmt(srv['cpu_us_per_delivered'])} us per delivered message",
            ),
        ]
    rows += [
        (
            "generator CPU",
            f"{_fmt(gen['cpu_seconds'])} s, "
            f"{_fmt(gen['cpu_us_per_delivered'])} us per delivered message "
            f"({_fmt(gen['cpu_us_per_message'])} us per message sent/acked/received)",
        ),
        (
            "generator memory",
            f"{_fmt(gen['rss_mb'])} MB RSS in all "
            f"({_fmt(gen['mb_per_1000_connections'])} MB total per 1,000 connections)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    lines.append("ADR-003 success metrics")
    checks = report["adr"]
    mw = max(len(ch["metric"]) for ch in checks)
    tw = max(len(ch["target"]) for ch in checks)
    for ch in checks:
        verdict = {True: "ok", False: "MISSED", None: "-"}[ch["ok"]]
        lines.append(
            f"  {ch['metric']:<{mw}}  {ch['target']:<{tw}}  "
            f"{_fmt(ch['value'], ch['unit']):>16}  {verdict}"
        )
    for err in report["errors"]:
        lines.append(f"error: {err.strip().splitlines()[-1] if err.strip() else err}")
    return "\n".join(lines)
