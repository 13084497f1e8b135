"""4. Memory: RSS of a `ws-watcher watch` process against the fake containerd (a child).

* RSS once synced with 0 / 1 000 / 10 000 running workspaces, and the bytes per workspace
  above the empty watcher's RSS;
* no growth: with a watcher already through WARMUP create/delete cycles, RSS before and
  after CYCLES more (pods made and removed in rounds of ROUND, with events; the watcher
  sees each run and each go).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import Lines, event_is, fake_server, print_table, rss_bytes, watch_argv

SIZES = (0, 1_000, 10_000)
WARMUP = 200
CYCLES = 1_000
ROUND = 100
SETTLE = 1.0  # seconds after the last line, before RSS is read
MiB = 1024 * 1024


def _synced_rss(n: int) -> int:
    with fake_server() as (fake, address):
        if n:
            fake.ask(f"synth {n}")
        with Lines(watch_argv(address)) as watch:
            watch.wait_for(event_is("synced"), 120)
            time.sleep(SETTLE)
            return rss_bytes(watch.pid)


def _cycles() -> tuple[int, int]:
    """(RSS after WARMUP cycles, RSS after CYCLES more)."""
    with fake_server() as (fake, address), Lines(watch_argv(address)) as watch:
        watch.wait_for(event_is("synced"), 60)
        done = 0
        marks: list[int] = []
        for target in (WARMUP, WARMUP + CYCLES):
            while done < target:
                fake.ask(f"add {ROUND}")
                watch.wait_count(event_is("running"), done + ROUND, 60)
                fake.ask("rm")
                watch.wait_count(event_is("removed"), done + ROUND, 60)
                done += ROUND
            time.sleep(SETTLE)
            marks.append(rss_bytes(watch.pid))
        return marks[0], marks[1]


def run() -> dict[str, Any]:
    rss = {n: _synced_rss(n) for n in SIZES}
    per_ws = {n: (rss[n] - rss[0]) / n for n in SIZES if n}
    before, after = _cycles()
    result = {
        "rss_mib": {str(n): v / MiB for n, v in rss.items()},
        "bytes_per_workspace": {str(n): v for n, v in per_ws.items()},
        "cycles": {"n": CYCLES, "before_mib": before / MiB, "after_mib": after / MiB,
                   "growth_mib": (after - before) / MiB},
        "targets": {"rss_10000_mib": 60},
    }  # fmt: skip
    rows = [(f"{n:,} workspaces", f"{v / MiB:.1f} MiB RSS"
             + (f"  ({per_ws[n] / 1024:.1f} KiB per workspace)" if n else ""))
            for n, v in rss.items()]  # fmt: skip
    growth = (after - before) / MiB
    rows.append((f"{CYCLES:,} create/delete cycles",
                 f"{before / MiB:.1f} -> {after / MiB:.1f} MiB ({growth:+.1f})"))  # fmt: skip
    print_table("4. memory of `ws-watcher watch` (target: <= 60 MiB at 10 000)", rows)
    return result


if __name__ == "__main__":
    run()
