"""The CI soak (issue 8): 100 create/delete cycles of workspace pods on the real containerd.

The engine is `benchmarks.soak` (which runs 1 000 cycles and prints the figures); here: zero
missed or doubled `running`/`removed` changes, nothing left in the index, no relist
corrections, no disconnects, and the thread count flat after the first batch.
"""

from __future__ import annotations

from benchmarks.soak import soak
from watcher.testing.containerd import PrivateContainerd
from watcher.testing.pods import Pods

CYCLES = 100
BATCH = 10
#: threads may come and go (grpc's pollers, trio's idle workers): "flat" means no growth
#: with the number of cycles, so a small constant slack
THREAD_SLACK = 4


async def test_soak_100_cycles(containerd: PrivateContainerd, pods: Pods) -> None:
    result = await soak(containerd, CYCLES, BATCH)
    print(result.figures())  # shown with -s / on failure
    assert (result.missed_running, result.missed_removed, result.doubled) == (0, 0, 0)
    assert result.left_in_index == 0
    assert result.corrections == 0
    assert result.disconnects == 0 and result.lagged == 0
    assert result.threads_end <= result.threads_warm + THREAD_SLACK, result.figures()
    assert result.threads_max <= result.threads_warm + THREAD_SLACK, result.figures()
