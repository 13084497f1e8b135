"""The shell ferries: no pod waits for another pod's round trip, relists run beside the stream.

Against the fake containerd (real gRPC, scripted faults): a Get that hangs for one pod, a
Tasks.List slower than its deadline, a relist whose listing predates a deletion.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import trio
import trio.testing

from watcher.published import ChangeKind, Disconnected, WorkspaceChange
from watcher.testing.fake import FakeContainerd, Rpc
from watcher.testing.labels import mk2_labels
from watcher.testing.watching import kinds_of, watching

PATIENCE = 10


def tasks_lists(fake: FakeContainerd, after: int = 0) -> int:
    return sum(c.method == Rpc.TASKS_LIST for c in fake.calls()[after:])


async def test_a_slow_get_for_one_pod_does_not_delay_another_pods_running(
    tmp_path: Path,
) -> None:
    with FakeContainerd(tmp_path) as fake:
        async with watching(fake) as (w, seen):  # type: ignore[arg-type]
            fake.delay(Rpc.CONTAINERS_GET, math.inf, times=1)  # the first Get hangs
            first = fake.add_pod("ws-1", labels=mk2_labels("inst-1", "w", "o"))
            fake.add_pod("ws-2", labels=mk2_labels("inst-2", "w", "o"))
            with trio.fail_after(PATIENCE):
                second = await w.wait_for_container("inst-2")  # while the first hangs
            assert "inst-1" not in w.workspaces()
            assert second.pid and second.upperdir
            fake.clear_faults(Rpc.CONTAINERS_GET)  # the hanging Get is answered now
            with trio.fail_after(PATIENCE):
                late = await w.wait_for_container("inst-1")
            assert late.container_id == first.containers["workspace"]
            await trio.testing.wait_all_tasks_blocked()
    kinds = [(c.kind, c.workspace.instance_id) for c in seen if isinstance(c, WorkspaceChange)]
    assert kinds == [
        (ChangeKind.CREATED, "inst-2"),
        (ChangeKind.RUNNING, "inst-2"),
        (ChangeKind.CREATED, "inst-1"),
        (ChangeKind.RUNNING, "inst-1"),
    ]


async def test_a_relist_slower_than_its_deadline_is_no_disconnect(tmp_path: Path) -> None:
    """containerd busy asking its shims: Tasks.List misses the deadline. The stream keeps
    flowing, nobody sees `Disconnected`, and the relist is tried again."""
    settings: dict[str, Any] = {"relist_interval": 0.2, "listing_timeout": 0.3}
    with FakeContainerd(tmp_path) as fake:
        async with watching(fake, **settings) as (w, seen):  # type: ignore[arg-type]
            fake.delay(Rpc.TASKS_LIST, 1.0, times=None)  # every relist misses its deadline
            with trio.fail_after(PATIENCE):
                await fake.wait_until(lambda f: tasks_lists(f) >= 3)
                fake.add_pod("ws-1", labels=mk2_labels("inst-1", "w", "o"))
                await w.wait_for_container("inst-1")  # the stream flows meanwhile
            assert await w.is_ready()
            fake.clear_faults(Rpc.TASKS_LIST)
    assert not [c for c in seen if isinstance(c, Disconnected)]


async def test_a_deleted_container_does_not_come_back(tmp_path: Path) -> None:
    """A relist's listing taken before a deletion, applied after it: the container is
    removed once, and stays removed through later relists."""
    settings: dict[str, Any] = {"relist_interval": 0.1, "relist_grace": 60}
    with FakeContainerd(tmp_path) as fake:
        async with watching(fake, **settings) as (w, seen):  # type: ignore[arg-type]
            pod = fake.add_pod("ws-1", labels=mk2_labels("inst-1", "w", "o"))
            with trio.fail_after(PATIENCE):
                await w.wait_for_container("inst-1")
                calls = len(fake.calls())
                # the next relist's containers are listed, its tasks held back a while
                fake.delay(Rpc.TASKS_LIST, 0.5, times=1)
                await fake.wait_until(lambda f: tasks_lists(f, calls) >= 1)
                fake.remove_pod(pod)  # deleted while that relist waits
                await w.wait_until(lambda: True if not w.workspaces() else None)
                calls = len(fake.calls())
                await fake.wait_until(lambda f: tasks_lists(f, calls) >= 2)  # two more relists
            await trio.testing.wait_all_tasks_blocked()
    assert kinds_of(seen, pod.containers["workspace"]) == [
        ChangeKind.CREATED, ChangeKind.RUNNING, ChangeKind.EXITED, ChangeKind.REMOVED
    ]  # fmt: skip
    assert w.corrections == 0


async def test_a_relist_while_gets_are_in_flight_corrects_nothing(tmp_path: Path) -> None:
    """The stream announced the pods; their Gets are slow; a relist lists them first. The
    stream did not miss them: no correction is reported."""
    settings: dict[str, Any] = {"relist_interval": 0.05, "relist_grace": 0.2}
    with FakeContainerd(tmp_path) as fake:
        async with watching(fake, **settings) as (w, _):  # type: ignore[arg-type]
            fake.delay(Rpc.CONTAINERS_GET, 0.5, times=None)
            for i in range(5):
                fake.add_pod(f"ws-{i}", labels=mk2_labels(f"inst-{i}", "w", "o"))
            with trio.fail_after(PATIENCE):
                for i in range(5):
                    await w.wait_for_container(f"inst-{i}")  # a relist found them first
                calls = len(fake.calls())
                await fake.wait_until(lambda f: tasks_lists(f, calls) >= 2)
                await trio.sleep(0.3)  # the relists' grace runs out: a timer, no event
            assert w.corrections == 0
