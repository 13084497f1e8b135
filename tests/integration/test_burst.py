"""A burst: 32 workspace pods (and some others) made at once, then removed at once.

Issue 12: a morning rush is when orchestration code waits on many workspaces. Every workspace
container must still get exactly one `running` and one `removed`, in per-container order, and
a busy containerd must not pass for a lost one (no `Disconnected`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import trio
import trio.testing

from watcher import ChangeKind, Disconnected, WorkspaceChange
from watcher.testing import ContainerSpec, Pod, Pods, PrivateContainerd, mk1_labels, mk2_labels
from watcher.testing.watching import kinds_of, watching

T = TypeVar("T")

WORKSPACES = 32
OTHERS = 4  # pods that are no workspace
WAIT = 20  # seconds after the burst's CRI calls returned: the watcher is behind by far less
ORDER = [ChangeKind.CREATED, ChangeKind.RUNNING, ChangeKind.EXITED, ChangeKind.REMOVED]


async def all_at_once(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Each blocking call in a thread of its own, all released together by a barrier.

    One CRI channel serves them all: grpc channels are thread-safe, and `Pods` only adds to
    dicts (atomic) and appends lines to a file, so it is safe enough to share.
    """
    barrier = threading.Barrier(len(calls), timeout=WAIT)
    limiter = trio.CapacityLimiter(len(calls))  # trio's default (40) must not cap the burst
    results: dict[int, T] = {}

    async def one(i: int, call: Callable[[], T]) -> None:
        def go() -> T:
            barrier.wait()
            return call()

        results[i] = await trio.to_thread.run_sync(go, limiter=limiter)

    async with trio.open_nursery() as nursery:
        for i, call in enumerate(calls):
            nursery.start_soon(one, i, call)
    return [results[i] for i in range(len(calls))]


def workspace_pod(pods: Pods, i: int) -> Callable[[], Pod]:
    iid = f"inst-burst-{i}"
    labels = (mk1_labels if i % 2 else mk2_labels)(iid, f"ws-burst-{i}", f"owner-{i % 3}")
    containers = [ContainerSpec()]
    if i % 8 == 0:  # now and then a sidecar: a workspace pod's container that is no workspace
        containers.append(ContainerSpec(name="sidecar"))
    return partial(pods.run_pod, f"ws-burst-{i}", labels=labels, containers=containers)


async def test_burst_of_workspaces(containerd: PrivateContainerd, pods: Pods) -> None:
    async with watching(containerd) as (w, seen):
        burst = [workspace_pod(pods, i) for i in range(WORKSPACES)]
        burst += [partial(pods.run_pod, f"web-{i}", labels={"app": "web"}) for i in range(OTHERS)]
        made = await all_at_once(burst)
        workspaces = {f"inst-burst-{i}": pod for i, pod in enumerate(made[:WORKSPACES])}
        with trio.fail_after(WAIT):
            for iid, pod in workspaces.items():
                ws = await w.wait_for_container(iid)
                assert ws.container_id == pod.containers["workspace"]
                assert ws.pid is not None and ws.pid > 0

        await all_at_once([partial(pods.remove_pod, pod) for pod in made])
        with trio.fail_after(WAIT):
            for iid in workspaces:
                await w.wait_for_container_stop(iid)
        assert w.workspaces() == {}
        await trio.testing.wait_all_tasks_blocked()  # the collector has taken every change

    assert not [c for c in seen if isinstance(c, Disconnected)]
    workspace_ids = {pod.containers["workspace"] for pod in workspaces.values()}
    reported = {c.workspace.container_id for c in seen if isinstance(c, WorkspaceChange)}
    assert reported == workspace_ids  # nothing for sidecars, sandboxes or other pods
    for cid in workspace_ids:
        kinds = kinds_of(seen, cid)
        # each at most once, in lifecycle order; `running` and `removed` exactly once
        assert kinds == [k for k in ORDER if k in kinds], (cid, kinds)
        assert ChangeKind.RUNNING in kinds and ChangeKind.REMOVED in kinds, (cid, kinds)
