"""CPU time of processes from Linux ``/proc``, shared by the benchmark scripts."""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat(pid: int) -> tuple[int, float]:
    """(parent pid, utime+stime in seconds of all its threads) of a process;
    OSError when it is gone."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state): the parent is field 4, utime/stime 14/15.
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process (all its threads), in seconds."""
    return stat(pid)[1]
