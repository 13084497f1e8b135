"""Soak: create/delete cycles of workspace pods on a real containerd, the watcher following.

    python -m benchmarks.soak [--cycles 1000] [--batch 20]      (root; starts its own containerd)

Each batch creates `batch` workspace pods concurrently (threads making CRI calls, as the kubelet
does), waits until the watcher reports them all running, deletes them concurrently and waits
until the watcher reports them all gone. A safety relist runs every second meanwhile. Figures:
missed or doubled `running`/`removed` changes, index entries left, relist corrections,
disconnects, and this process's RSS and thread count after the first batch (warm-up) and at
the end. The process holds the watcher *and* the rig's driver, so RSS is an upper bound for
the watcher alone.

`tests/integration/test_soak.py` runs the same engine with 100 cycles in CI.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TypeVar

import trio
import trio.testing

from watcher.published import ChangeKind, Disconnected, InstanceId, Lagged, WorkspaceChange
from watcher.testing import labels
from watcher.testing.containerd import PrivateContainerd
from watcher.testing.pods import Pod, Pods
from watcher.watcher import Settings, Watcher, open_watcher

#: bound on each wait for the watcher (a batch on a loaded machine takes seconds)
WAIT = 120.0
#: safety relists during the soak: often, so that they race the stream many times
RELIST_INTERVAL = 1.0
#: how long a relisted change waits for its event before it counts as missed
RELIST_GRACE = 5.0


@dataclass
class SoakResult:
    cycles: int
    batch: int
    seconds: float = 0.0
    missed_running: int = 0
    missed_removed: int = 0
    doubled: int = 0
    left_in_index: int = 0
    corrections: int = 0
    disconnects: int = 0
    lagged: int = 0
    rss_warm_kib: int = 0
    rss_end_kib: int = 0
    rss_max_kib: int = 0
    threads_warm: int = 0
    threads_end: int = 0
    threads_max: int = 0
    rss_per_batch_kib: list[int] = field(default_factory=list)

    def figures(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("rss_per_batch_kib")
        out["cycles_per_s"] = round(self.cycles / self.seconds, 2) if self.seconds else None
        return out


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


T = TypeVar("T")
R = TypeVar("R")


def _mapped(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`fn` over `items` on the pool's threads (the kubelet's concurrency), in order."""
    return list(pool.map(fn, items))


def _all(w: Watcher, iids: set[str], *, running: bool) -> bool | None:
    spaces = w.workspaces()
    if running:
        ok = all((ws := spaces.get(InstanceId(i))) is not None and ws.running for i in iids)
    else:
        ok = not any(InstanceId(i) in spaces for i in iids)
    return True if ok else None


async def soak(
    ctrd: PrivateContainerd,
    cycles: int,
    batch: int,
    *,
    relist_interval: float = RELIST_INTERVAL,
    relist_grace: float = RELIST_GRACE,
) -> SoakResult:
    """Run `cycles` create/delete cycles in batches of `batch`; the figures."""
    result = SoakResult(cycles=cycles, batch=batch)
    kinds: dict[str, Counter[ChangeKind]] = {}
    made: list[Pod] = []
    settings = Settings(
        address=ctrd.address, relist_interval=relist_interval, relist_grace=relist_grace
    )
    pods = Pods(ctrd)
    try:
        async with open_watcher(settings=settings) as w, trio.open_nursery() as nursery:
            with w.changes() as changes:

                async def collect() -> None:
                    async for change in changes:
                        if isinstance(change, WorkspaceChange):
                            cid = change.workspace.container_id
                            kinds.setdefault(cid, Counter())[change.kind] += 1
                        elif isinstance(change, Disconnected):
                            result.disconnects += 1
                        elif isinstance(change, Lagged):
                            result.lagged += 1

                nursery.start_soon(collect)
                with ThreadPoolExecutor(batch, thread_name_prefix="soak-driver") as driver:
                    started = time.monotonic()
                    for b in range(math.ceil(cycles / batch)):
                        n = min(batch, cycles - b * batch)
                        iids = [f"soak-{b}-{i}" for i in range(n)]

                        def create(iid: str) -> Pod:
                            return pods.run_pod(
                                f"ws-{iid}", labels=labels.mk2_labels(iid, f"w-{iid}", "soak")
                            )

                        batch_pods = await trio.to_thread.run_sync(
                            partial(_mapped, driver, create, iids)
                        )
                        made += batch_pods
                        wanted = set(iids)
                        with trio.fail_after(WAIT):
                            await w.wait_until(partial(_all, w, wanted, running=True))
                        await trio.to_thread.run_sync(
                            partial(_mapped, driver, pods.remove_pod, batch_pods)
                        )
                        with trio.fail_after(WAIT):
                            await w.wait_until(partial(_all, w, wanted, running=False))
                        rss, threads = rss_kib(), threading.active_count()
                        result.rss_per_batch_kib.append(rss)
                        result.rss_max_kib = max(result.rss_max_kib, rss)
                        result.threads_max = max(result.threads_max, threads)
                        if b == 0:
                            result.rss_warm_kib, result.threads_warm = rss, threads
                    result.seconds = time.monotonic() - started
                # corrections are only counted once a relist's grace has passed: let the last
                # relist of the quiet node happen and its grace run out (a timer, no event)
                await trio.sleep(relist_interval + relist_grace + 0.5)
                await trio.testing.wait_all_tasks_blocked()
                result.corrections = w.corrections
                result.left_in_index = len(w._index.containers())  # internal: every entry
                nursery.cancel_scope.cancel()
    finally:
        pods.remove_all()
        pods.close()
    for pod in made:
        seen = kinds.get(pod.containers["workspace"], Counter())
        result.missed_running += seen[ChangeKind.RUNNING] == 0
        result.missed_removed += seen[ChangeKind.REMOVED] == 0
        result.doubled += seen[ChangeKind.RUNNING] > 1 or seen[ChangeKind.REMOVED] > 1
    result.rss_end_kib = rss_kib()
    result.threads_end = threading.active_count()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args()

    async def run() -> SoakResult:
        with PrivateContainerd() as ctrd:
            return await soak(ctrd, args.cycles, args.batch)

    result = trio.run(run)
    figures = result.figures()
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
        per = result.rss_per_batch_kib
        step = max(1, len(per) // 10)
        print(f"{'rss_kib by batch':<{width}}  {per[::step]}")
    ok = (
        result.missed_running == result.missed_removed == result.doubled == 0
        and result.left_in_index == 0
        and result.corrections == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
