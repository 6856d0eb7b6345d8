"""The CPU a rejoin storm cost, from one bench/adr/run.sh run.

Lines the run's ``cpu-timeline.tsv`` (``unix`` column) up with its load-test
report (``timeline_s``: ``began_unix`` and ``kill``) and prints, per group
(each server, the generator, PostgreSQL, Redis), the CPU above the group's own
level in the ``--before`` seconds before the signal, summed over ``--window``
seconds from it, in core-seconds; and for the generator and the surviving
servers (those the report does not name as signalled), per reconnection.

    .venv/bin/python bench/adr/storm_cpu.py /tmp/cowrite-adr/NAME-STAMP [...]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def storm(run: Path, window: float, before: float) -> dict[str, float]:
    report = json.loads((run / "report.json").read_text())
    timeline = report["timeline_s"]
    if "kill" not in timeline or "began_unix" not in timeline:
        raise SystemExit(f"{run}: no signal time in report.json (a run before this tool?)")
    signal = timeline["began_unix"] + timeline["kill"]
    with (run / "cpu-timeline.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "unix" not in rows[0]:
        raise SystemExit(f"{run}: cpu-timeline.tsv has no unix column (a run before this tool?)")
    groups = [name for name in rows[0] if name not in ("t", "unix")]

    def percent(row: dict[str, str], name: str) -> float:
        value = row[name]
        return 0.0 if value in ("-", "") else float(value)

    out: dict[str, float] = {}
    for name in groups:
        pre = [percent(r, name) for r in rows if signal - before < float(r["unix"]) <= signal]
        base = sum(pre) / len(pre) if pre else 0.0
        total = 0.0
        last = signal
        for r in rows:
            at = float(r["unix"])
            if signal < at <= signal + window:
                # Each row is the interval that ends at ``unix``.
                total += max(0.0, percent(r, name) - base) / 100 * (at - last)
                last = at
        out[name] = total
    reconnections = report["reconnection"]["rejoined"] or 1
    # The signalled instances, from the report (run.sh's KILL_INDEX picks one).
    pids = report["server"]["pids"]
    signalled = {f"server-{pids.index(pid)}" for pid in report["config"]["kill"]["pids"]}
    survivors = sum(v for k, v in out.items() if k.startswith("server-") and k not in signalled)
    out["generator_us_per_reconnection"] = out.get("generator", 0.0) / reconnections * 1e6
    out["survivors_us_per_rejoin"] = survivors / reconnections * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--window", type=float, default=6.5, help="seconds from the signal")
    parser.add_argument("--before", type=float, default=3.0, help="baseline seconds before it")
    args = parser.parse_args()
    for run in args.runs:
        result = storm(run, args.window, args.before)
        cells = "  ".join(
            f"{k} {v:.0f}" if k.endswith("rejoin") or k.endswith("reconnection") else f"{k} {v:.2f}"
            for k, v in result.items()
        )
        print(f"{run.name}: {cells}")


if __name__ == "__main__":
    main()
