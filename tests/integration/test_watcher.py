"""The watcher against a real containerd: pods made the way the kubelet makes them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from watcher import cgroups
from watcher.published import (
    ChangeKind,
    Disconnected,
    Synced,
    Workspace,
    WorkspaceChange,
    WorkspaceState,
)
from watcher.testing import labels
from watcher.testing.containerd import PrivateContainerd
from watcher.testing.pods import ContainerSpec, Pod, Pods
from watcher.testing.watching import kinds_of, run, watching

WAIT = 30  # seconds: generous, the waits return as soon as the watcher knows

MARKER_CMD = ("sh", "-c", "echo written-inside > /marker && exec sleep infinity")


async def file_appears(path: Path) -> str:
    """The first line written to `path` inside the container, once it is complete."""
    # nothing announces a file written inside a container: poll the upper layer, bounded.
    # `running` comes as the task is created, before its command runs: the file may not
    # exist yet, or exist empty
    with trio.fail_after(WAIT):
        while not (path.exists() and path.read_text().endswith("\n")):  # noqa: ASYNC110
            await trio.sleep(0.01)
    return path.read_text()


def assert_in_cgroup(ws: Workspace) -> None:
    assert ws.pid is not None and ws.cgroup_path is not None
    text = Path(f"/proc/{ws.pid}/cgroup").read_text()
    actual = cgroups.proc_cgroup_path(text)
    assert actual is not None and cgroups.cgroup_matches(ws.cgroup_path, actual), (text, ws)


async def test_workspaces_of_both_schemes_and_no_noise(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    async with watching(containerd) as (w, seen):
        noise = await run(pods.run_pod, "noise", labels={"app": "nginx"})
        mk1 = await run(
            pods.run_pod,
            "ws-mk1",
            labels=labels.mk1_labels("inst-mk1", "ws-mk1", "owner-1"),
            containers=[ContainerSpec(command=MARKER_CMD), ContainerSpec(name="sidecar")],
        )
        mk2 = await run(
            pods.run_pod,
            "ws-mk2",
            labels=labels.mk2_labels("inst-mk2", "ws-mk2", "owner-2"),
            containers=[ContainerSpec(command=MARKER_CMD)],
            cgroup_parent=False,
        )
        with trio.fail_after(WAIT):
            ws1 = await w.wait_for_container("inst-mk1")
            ws2 = await w.wait_for_container("inst-mk2")

        for ws, pod, wsid, owner in (
            (ws1, mk1, "ws-mk1", "owner-1"),
            (ws2, mk2, "ws-mk2", "owner-2"),
        ):
            assert ws.workspace_id == wsid and ws.owner_id == owner
            assert ws.container_id == pod.containers["workspace"]
            assert ws.sandbox_id == pod.sandbox_id
            assert ws.pod_name == pod.name and ws.pod_uid == pod.uid
            assert ws.pod_namespace == "default"
            assert ws.state is WorkspaceState.RUNNING
            assert ws.pid is not None and os.path.exists(f"/proc/{ws.pid}")
            assert_in_cgroup(ws)
            assert ws.upperdir is not None
            assert await file_appears(Path(ws.upperdir) / "marker") == "written-inside\n"
            rootfs = await w.container_rootfs(ws.container_id)
            assert Path(rootfs, "bin", "busybox").is_file()
            assert w.container_pid(ws.container_id) == ws.pid
            assert w.container_cgroup_path(ws.container_id) == ws.cgroup_path
            assert w.container_upperdir(ws.container_id) == ws.upperdir
            assert await w.container_exists(ws.container_id)
            assert not any(k.startswith("io.kubernetes.") for k in ws.pod_labels)
        assert ws1.pod_labels["gpwsman"] == "true"
        assert ws2.pod_labels["gitpod.io/instanceID"] == "inst-mk2"
        assert ws1.cgroup_path == f"/kubepods/besteffort/pod{mk1.uid}/{ws1.container_id}"
        assert ws2.cgroup_path == f"/k8s.io/{ws2.container_id}"
        assert set(w.workspaces()) == {"inst-mk1", "inst-mk2"}

        await run(pods.remove_pod, mk1)
        await run(pods.remove_pod, mk2)
        await run(pods.remove_pod, noise)
        with trio.fail_after(WAIT):
            await w.wait_for_container_stop("inst-mk1")
            await w.wait_for_container_stop("inst-mk2")
        assert w.workspaces() == {}
        assert not await w.container_exists(ws1.container_id)

    workspace_ids = {ws1.container_id, ws2.container_id}
    others = {noise.containers["workspace"], noise.sandbox_id, mk1.containers["sidecar"]}
    for change in seen:
        if isinstance(change, WorkspaceChange):
            assert change.workspace.container_id in workspace_ids
            assert change.workspace.container_id not in others
    for cid in workspace_ids:
        assert kinds_of(seen, cid) == [
            ChangeKind.CREATED,
            ChangeKind.RUNNING,
            ChangeKind.EXITED,
            ChangeKind.REMOVED,
        ]


async def test_replaced_container_inside_the_pod(containerd: PrivateContainerd, pods: Pods) -> None:
    async with watching(containerd) as (w, seen):
        pod = await run(pods.run_pod, "ws-crash", labels=labels.mk2_labels("inst-r", "ws-r", "o"))
        with trio.fail_after(WAIT):
            first = await w.wait_for_container("inst-r")
        replaced: Pod = await run(pods.replace_container, pod, "workspace")
        new_id = replaced.containers["workspace"]
        assert new_id != first.container_id
        with trio.fail_after(WAIT):
            second = await w.wait_until(  # the instance's newest container, running
                lambda: (
                    ws
                    if (ws := w.workspaces().get("inst-r"))
                    and ws.container_id == new_id
                    and ws.running
                    else None
                )
            )
        assert second.pid is not None and second.pid != first.pid
        assert os.path.exists(f"/proc/{second.pid}")
        assert second.attempt in (1, None)
        old = w.container(first.container_id)
        assert old.state is WorkspaceState.EXITED

        await run(pods.remove_exited, replaced, first.container_id)
        with trio.fail_after(WAIT):
            # the watcher's own state: the collector of `seen` is a task of its own, which
            # takes the change a moment after the watcher published it
            await w.wait_until(
                lambda: None if first.container_id in w._index.containers() else True
            )
        await trio.testing.wait_all_tasks_blocked()
        # the instance lives on in its new container
        assert w.instance("inst-r").container_id == new_id
        assert kinds_of(seen, first.container_id) == [
            ChangeKind.CREATED,
            ChangeKind.RUNNING,
            ChangeKind.EXITED,
            ChangeKind.REMOVED,
        ]
        assert kinds_of(seen, new_id)[:2] == [ChangeKind.CREATED, ChangeKind.RUNNING]


async def test_waiter_started_before_the_pod_exists(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    async with watching(containerd) as (w, _):
        # a stop-waiter for an instance that is not there returns at once
        with trio.fail_after(1):
            await w.wait_for_container_stop("inst-later")
        got: list[Workspace] = []
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                with trio.fail_after(WAIT):
                    got.append(await w.wait_for_container("inst-later"))

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not got
            pod = await run(
                pods.run_pod, "ws-later", labels=labels.mk1_labels("inst-later", "ws", "o")
            )
        assert got[0].container_id == pod.containers["workspace"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, pods.remove_pod, pod)
            with trio.fail_after(WAIT):
                await w.wait_for_container_stop("inst-later")
        assert "inst-later" not in w.workspaces()


async def test_initial_sync_finds_running_pods(containerd: PrivateContainerd, pods: Pods) -> None:
    pod = await run(
        pods.run_pod,
        "ws-before",
        labels=labels.mk2_labels("inst-before", "ws", "o"),
        containers=[ContainerSpec(command=MARKER_CMD)],
    )
    async with watching(containerd) as (w, seen):
        ws = w.workspaces()["inst-before"]  # no waiting: the initial sync resolved it
        assert ws.running and ws.container_id == pod.containers["workspace"]
        assert ws.upperdir is not None and ws.rootfs is not None
        # no /tasks/start was seen: the start time comes from the kernel
        assert ws.created_at is not None and ws.started_at is not None
        assert ws.created_at - 1 <= ws.started_at <= time.time()
        assert_in_cgroup(ws)
        assert await file_appears(Path(ws.upperdir) / "marker") == "written-inside\n"
        assert Path(ws.rootfs, "bin", "busybox").is_file()
        assert await w.is_ready()
    assert any(isinstance(c, Synced) and c.initial for c in seen) or seen == []


@pytest.mark.parametrize("case", ["running", "created-while-down", "deleted-while-down"])
async def test_containerd_sigkill_and_restart(
    containerd: PrivateContainerd, pods: Pods, case: str
) -> None:
    keep = await run(pods.run_pod, "ws-keep", labels=labels.mk2_labels("inst-keep", "w", "o"))
    doomed = await run(pods.run_pod, "ws-doomed", labels=labels.mk1_labels("inst-doomed", "w", "o"))
    # A back-off far longer than the test holds the watcher disconnected until the test calls
    # reconnect_now(): what happens in between is missed by the stream, found by the resync.
    async with watching(containerd, backoff=600) as (w, seen):
        with trio.fail_after(WAIT):
            await w.wait_for_container("inst-keep")
            await w.wait_for_container("inst-doomed")
        mark = len(seen)
        stopped: list[bool] = []
        async with trio.open_nursery() as nursery:

            async def stop_waiter() -> None:
                with trio.fail_after(WAIT):
                    await w.wait_for_container_stop("inst-doomed")
                stopped.append(True)

            nursery.start_soon(stop_waiter)
            await run(containerd.kill9)
            with trio.fail_after(WAIT):
                await w.wait_ready(False)
            assert not await w.is_ready()
            await run(containerd.start)
            new: Pod | None = None
            if case == "created-while-down":
                new = await run(
                    pods.run_pod, "ws-new", labels=labels.mk2_labels("inst-new", "w", "o")
                )
            elif case == "deleted-while-down":
                await run(pods.remove_pod, doomed)
            w.reconnect_now()
            with trio.fail_after(WAIT):
                await w.wait_ready()
            await trio.testing.wait_all_tasks_blocked()  # let the collector take it all
            if case != "deleted-while-down":
                nursery.cancel_scope.cancel()

        after = seen[mark:]
        assert isinstance(after[0], Disconnected), after
        assert sum(isinstance(c, Disconnected) for c in after) == 1
        synced = [i for i, c in enumerate(after) if isinstance(c, Synced)]
        assert len(synced) == 1 and not after[synced[0]].initial  # type: ignore[union-attr]
        between = [c for c in after[: synced[0]] if isinstance(c, WorkspaceChange)]

        expected = {"inst-keep", "inst-doomed"}
        if case == "created-while-down":
            assert new is not None
            expected.add("inst-new")
            assert [c.kind for c in between] == [ChangeKind.CREATED, ChangeKind.RUNNING]
            assert between[0].workspace.container_id == new.containers["workspace"]
        elif case == "deleted-while-down":
            expected.discard("inst-doomed")
            assert stopped == [True]
            assert {c.workspace.container_id for c in between} == {doomed.containers["workspace"]}
            assert [c.kind for c in between if c.kind is ChangeKind.REMOVED] == [ChangeKind.REMOVED]
            assert between[-1].kind is ChangeKind.REMOVED
        else:
            assert between == []
        assert set(w.workspaces()) == expected
        for ws in w.workspaces().values():
            assert ws.running and ws.pid is not None and os.path.exists(f"/proc/{ws.pid}")
            assert_in_cgroup(ws)
        assert w.instance("inst-keep").container_id == keep.containers["workspace"]
