"""When a process started, from /proc: for workspaces found running by a listing.

containerd's task listing carries no start time, and a watcher that starts (or reconnects)
after a task started never saw its /tasks/start event. The kernel knows: field 22 of
/proc/<pid>/stat is the start in clock ticks after boot, and /proc/stat's `btime` is the boot.
Parsing is pure; `started_at` does the (cheap, in-memory) reads.
"""

from __future__ import annotations

import os

#: clock ticks per second, the unit of /proc/<pid>/stat's starttime
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def boot_time(proc_stat: str) -> float | None:
    """`btime` of /proc/stat: the boot, in seconds since the epoch."""
    for line in proc_stat.splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return None


def start_ticks(pid_stat: str) -> int | None:
    """Field 22 (starttime) of /proc/<pid>/stat.

    The command name (field 2) is in parentheses and may itself hold spaces and
    parentheses, so fields are counted after the *last* closing parenthesis.
    """
    _, paren, rest = pid_stat.rpartition(")")
    fields = rest.split()
    # fields after the name start at field 3, so field 22 is the 20th of them
    if not paren or len(fields) < 20 or not fields[19].isdigit():
        return None
    return int(fields[19])


def started_at(pid: int, proc_root: str = "/proc") -> float | None:
    """When process `pid` started (seconds since the epoch); None if it is gone/unreadable."""
    try:
        with open(f"{proc_root}/{pid}/stat", encoding="utf-8", errors="replace") as f:
            ticks = start_ticks(f.read())
        with open(f"{proc_root}/stat", encoding="utf-8") as f:
            boot = boot_time(f.read())
    except OSError:
        return None
    if ticks is None or boot is None:
        return None
    return boot + ticks / CLOCK_TICKS
