"""Markdown rows from `cowrite loadtest --output` JSON reports (schema cowrite.loadtest/1).

.venv/bin/python bench/adr/summarize.py /tmp/cowrite-adr/*/report.json
"""

import json
import sys


def f(v, nd=1):
    return "-" if v is None else (f"{v:,.{nd}f}" if isinstance(v, float) else f"{v:,}")


for path in sys.argv[1:]:
    with open(path) as fh:
        r = json.load(fh)
    c, d, e, rc, s, g = (
        r[k] for k in ("connections", "delivery", "edits", "reconnection", "server", "generator")
    )
    lat, rt = d["latency_ms"], rc["time_ms"]
    print(f"## {path}")
    print(f"errors: {r['errors']}  events: {r['events']}  timeline: {r['timeline_s']}")
    print(
        "| attempted | connected | success % | connect+join p50/p95 ms | connect errors | connected at end |"
    )
    print(
        f"| {f(c['attempted'])} | {f(c['connected'])} | {c['success_rate']:.2f} | "
        f"{f(c['connect_time_ms']['p50'])} / {f(c['connect_time_ms']['p95'])} | {c['errors'] or '-'} | {f(c['connected_at_end'])} |"
    )
    print(
        "| instance | connections | RSS baseline MB | RSS connected MB | RSS end MB | growth MB per 1,000 |"
    )
    for i in s["instances"]:
        print(
            f"| {i['url']} | {f(i['connections'])} | {f(i['rss_baseline_mb'])} | {f(i['rss_connected_mb'])} | "
            f"{f(i['rss_end_mb'])} | {f(i['rss_growth_mb_per_1000_connections'])} |"
        )
    print(
        f"| total | {f(c['connected'])} | {f(s['rss_baseline_mb'])} | {f(s['rss_connected_mb'])} | | "
        f"{f(s['rss_growth_mb_per_1000_connections'])} |"
    )
    print(
        "| edits sent/acked | ack p50/p95 ms | delivered/expected | rate/s | P50 | P95 | P99 | max ms |"
    )
    al = e["ack_latency_ms"]
    print(
        f"| {f(e['sent'])}/{f(e['acked'])} | {f(al['p50'])}/{f(al['p95'])} | {f(d['delivered'])}/{f(d['expected'])} "
        f"({d['ratio']}) | {f(d['rate'])} | {f(lat['p50'])} | {f(lat['p95'])} | {f(lat['p99'])} | {f(lat['max'])} |"
    )
    print(
        "| disconnects | rejoined | failed | retries | drain notices | drops | P50 ms | P95 ms | P99 ms | max ms |"
    )
    print(
        f"| {f(rc['disconnects'])} | {f(rc['rejoined'])} | {f(rc['failed'])} | {f(rc['retries'])} | "
        f"{f(rc['drain_notices'])} | {rc['drops'] or '-'} | {f(rt['p50'])} | {f(rt['p95'])} | {f(rt['p99'])} | {f(rt['max'])} |"
    )
    print(
        f"server CPU (edit phase) {s['cpu_seconds']} s, {s['cpu_us_per_delivered']} us/delivered"
        f" (incomplete: {s['cpu_incomplete']}); generator CPU {g['cpu_seconds']} s, "
        f"{g['cpu_us_per_delivered']} us/delivered, {g['cpu_us_per_message']} us/message, RSS {g['rss_mb']} MB"
    )
    print()
