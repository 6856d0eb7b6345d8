"""Several runs of the collaboration scenario, side by side: each run's ratio
to the reference measured in that same run, and the median over the runs.

One run's ratio moves by 15 % or more on a shared 2-core machine (the
reference's own CPU per message does), so a target is judged on the median
of several runs' ratios, each taken within its run:

    bench/run.sh --scenario collab --conns 0 --rates 8000,16000 --duration 8   # three times
    .venv/bin/python bench/collab_runs.py bench/results/collab-A.json bench/results/collab-B.json ...

Prints Markdown: per server and rate, server + database CPU per delivered
message in each run and its ratio to ``nodeadr-pg`` of the same run, then the
highest step with P95 under the limit and its ratio to ``nodeadr``'s.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from collab import REFERENCE, _step_at, inserts_behind, persisted_db_us


def load_runs(paths: list[str]) -> list[dict[str, Any]]:
    runs = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        if doc.get("scenario") != "collab":
            raise SystemExit(f"{path}: not a collab scenario result")
        runs.append(doc)
    return runs


def _fmt(values: list[float | None], spec: str) -> str:
    return ", ".join("-" if v is None else spec.format(v) for v in values)


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def cpu_rows(runs: list[dict[str, Any]]) -> list[str]:
    servers = [s for s in runs[0]["results"] if s != REFERENCE]
    rates = sorted(
        {
            st["offered_delivered_per_s"]
            for doc in runs
            for res in doc["results"].values()
            for st in (res.get("load") or {}).get("steps") or []
        }
    )
    lines = [
        f"| server | offered/s | server + DB µs per delivered, each run | ratio to {REFERENCE} "
        "of the same run | median ratio |",
        "|---|---|---|---|---|",
    ]
    for rate in rates:
        refs = [_total(doc, REFERENCE, rate) for doc in runs]
        behind = ", ".join("behind" if _inserts_behind(doc, rate) else "-" for doc in runs)
        lines.append(
            f"| {REFERENCE} | {rate:,.0f} | {_fmt(refs, '{:.1f}')} "
            f"| its INSERTs fell behind (then counted per INSERT done): {behind} | |"
        )
        for server in servers:
            mine = [_total(doc, server, rate) for doc in runs]
            ratios = [
                a / b if a is not None and b else None for a, b in zip(mine, refs, strict=True)
            ]
            med = _median(ratios)
            lines.append(
                f"| {server} | {rate:,.0f} | {_fmt(mine, '{:.1f}')} | {_fmt(ratios, '{:.2f}x')} "
                f"| {'-' if med is None else f'{med:.2f}x'} |"
            )
    return lines


def _inserts_behind(doc: dict[str, Any], rate: float) -> bool:
    return inserts_behind(_step_at((doc["results"].get(REFERENCE) or {}).get("load") or {}, rate))


def _total(doc: dict[str, Any], server: str, rate: float) -> float | None:
    res = doc["results"].get(server)
    if res is None:
        return None
    st = _step_at(res.get("load") or {}, rate)
    if not st:
        return None
    # A reference whose INSERTs fell behind: counted per INSERT it completed.
    db_done = persisted_db_us(st)
    if db_done is not None and st.get("server_us_per_msg") is not None:
        return float(st["server_us_per_msg"]) + db_done
    return st.get("total_us_per_msg")


def step_rows(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| server | highest step with P95 under the limit, each run | ratio to nodeadr's "
        "of the same run | median ratio |",
        "|---|---|---|---|",
    ]

    def highest(doc: dict[str, Any], server: str) -> float | None:
        load = (doc["results"].get(server) or {}).get("load") or {}
        hi = load.get("highest_ok_step")
        return hi if hi is not None else (0.0 if load.get("steps") else None)

    for server in runs[0]["results"]:
        his = [highest(doc, server) for doc in runs]
        base = [highest(doc, "nodeadr") for doc in runs]
        ratios = [a / b if a is not None and b else None for a, b in zip(his, base, strict=True)]
        med = _median(ratios)
        lines.append(
            f"| {server} | {_fmt(his, '{:,.0f}')} | {_fmt(ratios, '{:.2f}x')} "
            f"| {'-' if med is None else f'{med:.2f}x'} |"
        )
    return lines


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    runs = load_runs(argv)
    print(f"{len(runs)} runs: " + ", ".join(Path(p).name for p in argv) + "\n")
    print("\n".join(cpu_rows(runs)))
    print()
    print("\n".join(step_rows(runs)))


if __name__ == "__main__":
    main(sys.argv[1:])
