"""Who uses the CPU during an ADR run, every half second (bench/adr/run.sh).

Writes one tab-separated line per interval: seconds since the start, then the
CPU of each group over that interval in percent of one core, then the
interval's end as Unix time (``unix``, to line it up with a load-test report's
``timeline_s``: bench/adr/storm_cpu.py):

  server-<i>   each ``--server-pid`` (in the order given)
  generator    every process whose command line has ``cowrite loadtest``, and
               its descendants (the workers)
  postgres     every ``postgres`` process (the whole cluster, shared)
  redis        every ``redis-server`` process

A group that has no process (a killed server) reads ``-``.  On a 2-core
machine the columns add up to at most 200: a rejoin storm where they do is
bounded by the machine, not by one process (docs/PERFORMANCE.md, sixth
session, found this way that the generator held half of it).

    .venv/bin/python bench/adr/cpu_timeline.py --server-pid 123 --server-pid 124 \\
        --seconds 600 --out /tmp/cpu-timeline.tsv

Bounded: stops after ``--seconds`` or when every server has exited.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/
from proccpu import stat


def _read(pid: str) -> tuple[str, int, float] | None:
    """(command line, parent pid, CPU seconds) of ``pid``, or None when gone."""
    try:
        cmd = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
        ppid, cpu = stat(int(pid))
    except OSError:
        return None
    return cmd, ppid, cpu


def sample(servers: list[int]) -> dict[str, float]:
    """CPU seconds so far per group."""
    procs = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            info = _read(pid)
            if info is not None:
                procs[int(pid)] = info
    groups: dict[str, float] = {}
    for i, pid in enumerate(servers):
        if pid in procs:
            groups[f"server-{i}"] = procs[pid][2]
    generator = {pid for pid, (cmd, _, _) in procs.items() if "cowrite loadtest" in cmd}
    grew = True
    while grew:  # descendants: the workers and their helpers
        found = {pid for pid, (_, ppid, _) in procs.items() if ppid in generator}
        grew = not found <= generator
        generator |= found
    if generator:
        groups["generator"] = sum(procs[pid][2] for pid in generator)
    for name, word in (("postgres", "postgres"), ("redis", "redis-server")):
        # The postmaster is ".../bin/postgres -D ...", its backends "postgres: ...".
        cpu = [
            c
            for cmd, _, c in procs.values()
            if cmd.split(" ", 1)[0].removesuffix(":").endswith(word)
        ]
        if cpu:
            groups[name] = sum(cpu)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-pid", type=int, action="append", required=True)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    names = [f"server-{i}" for i in range(len(args.server_pid))]
    names += ["generator", "postgres", "redis"]
    start = last = time.monotonic()
    before = sample(args.server_pid)
    with args.out.open("w") as out:
        out.write("t\t" + "\t".join(names) + "\tunix\n")
        while last - start < args.seconds:
            time.sleep(args.interval)
            now = sample(args.server_pid)
            at = time.monotonic()
            row = [f"{at - start:.1f}"]
            for name in names:
                if name in now and name in before:
                    # A process that exited makes a group's sum drop: clamp.
                    row.append(f"{max(0.0, now[name] - before[name]) / (at - last) * 100:.0f}")
                else:
                    row.append("-")
            row.append(f"{time.time():.2f}")
            out.write("\t".join(row) + "\n")
            out.flush()
            before, last = now, at
            if not any(f"server-{i}" in now for i in range(len(args.server_pid))):
                break


if __name__ == "__main__":
    main()
