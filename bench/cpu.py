"""CPU time of processes from ``/proc`` (user + system), the figure that stays stable on a
shared machine where wall time does not."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

__all__ = ["cpu_seconds", "precise_cpu_seconds", "total_cpu_seconds", "with_children"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads; 0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def precise_cpu_seconds(pid: int) -> float:
    """CPU seconds of process ``pid`` so far (all threads, user + system) to the nanosecond,
    from its CPU-time clock (``/proc`` counts in 10 ms ticks: 50 µs per hop of a 200-task
    chain, too coarse to compare two runs); falls back to :func:`cpu_seconds`."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # CPUCLOCK_SCHED of the whole process
    except OSError:
        return cpu_seconds(pid)


def with_children(pid: int) -> list[int]:
    """``pid`` and its living children (a prefork worker's pool), from ``/proc``."""
    found = [pid]
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as children:
                found.extend(int(child) for child in children.read().split())
        except OSError:
            continue
    return found


def total_cpu_seconds(pids: Iterable[int]) -> float:
    """The sum of :func:`cpu_seconds` over ``pids``."""
    return sum(cpu_seconds(pid) for pid in pids)
