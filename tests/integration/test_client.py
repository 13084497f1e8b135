"""The trio client against a real containerd, with pods made the way the kubelet makes them."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import pytest
import trio
import trio.testing

from watcher import client as client_module
from watcher.client import open_client
from watcher.containerd_records import TaskStatus
from watcher.errors import ConnectError, NotFound
from watcher.inputs import (
    ContainerChanged,
    ContainerDeleted,
    TaskCreated,
    TaskDeleted,
    TaskExited,
    TaskStarted,
)
from watcher.resolve import locate
from watcher.testing import labels
from watcher.testing.containerd import PrivateContainerd
from watcher.testing.pods import Pods
from watcher.testing.versions import parse_version

pytestmark = pytest.mark.containerd


async def test_version(containerd: PrivateContainerd) -> None:
    async with open_client(containerd.address) as client:
        v = await client.version()
    assert parse_version(v.version) == containerd.version  # the rig runs the version it says
    # Debian's 2.1 is built without a git revision ("" here; 1.6 and 1.7 name one): the
    # watcher reads only `version`
    assert isinstance(v.revision, str)


async def test_workspace_pod_is_listed_with_task_and_snapshot(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    pod = await trio.to_thread.run_sync(
        lambda: pods.run_pod("ws-list", labels=labels.mk2_labels("inst-l", "ws-l", "owner-l"))
    )
    cid = pod.containers["workspace"]
    async with open_client(containerd.address) as client:
        containers = {c.id: c for c in await client.list_containers()}
        sandbox = containers[pod.sandbox_id]
        assert sandbox.labels["io.cri-containerd.kind"] == "sandbox"
        assert sandbox.labels["gitpod.io/instanceID"] == "inst-l"
        workspace = containers[cid]
        assert workspace.labels["io.kubernetes.container.name"] == "workspace"
        assert workspace.cgroup_path == f"/kubepods/besteffort/pod{pod.uid}/{cid}"

        tasks = {t.container_id: t for t in await client.list_tasks()}
        assert tasks[cid].pid > 0 and tasks[cid].status is TaskStatus.RUNNING
        assert (await client.get_task(cid)).pid == tasks[cid].pid

        mounts = await client.snapshot_mounts(workspace.snapshotter, workspace.snapshot_key)
        upper = [
            o.removeprefix("upperdir=")
            for m in mounts
            for o in m.options
            if o.startswith("upperdir=")
        ]
        assert upper and os.path.isdir(upper[0])

        got = await client.get_container(cid)
        assert got.id == cid and got.cgroup_path  # from the spec's linux.cgroupsPath
        with pytest.raises(NotFound):
            await client.get_container("no-such-container")


async def test_event_stream_tells_a_pods_life_in_order(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    seen: list[object] = []
    async with open_client(containerd.address) as client, client.subscribe() as events:
        pod = await trio.to_thread.run_sync(
            lambda: pods.run_pod("ws-events", labels=labels.mk1_labels("inst-e", "ws-e", "o"))
        )
        cid = pod.containers["workspace"]
        await trio.to_thread.run_sync(pods.remove_pod, pod)
        with trio.fail_after(30):
            async for env in events:
                assert env.namespace == "k8s.io"
                ev = env.event
                if ev is not None and getattr(ev, "container_id", None) == cid:
                    seen.append(ev)
                    if isinstance(ev, ContainerDeleted):
                        break
    kinds = [type(e) for e in seen]
    assert kinds == [
        ContainerChanged,
        TaskCreated,
        TaskStarted,
        TaskExited,
        TaskDeleted,
        ContainerDeleted,
    ]
    created = seen[1]
    assert isinstance(created, TaskCreated)
    assert created.pid > 0
    located = locate(created)
    assert created.rootfs_mounts and located.upperdir is not None
    assert Path(located.upperdir).name == "fs"
    assert located.rootfs == f"{created.bundle}/rootfs"


def pumping() -> int:
    """Threads now running a subscription's pump (an idle thread in trio's thread cache, or
    grpc's own, does not count: their number varies with what ran before)."""
    return sum(
        1
        for frame in sys._current_frames().values()
        if any(f.f_code.co_name == "pump" and f.f_code.co_filename == client_module.__file__
               for f, _ in traceback.walk_stack(frame))
    )  # fmt: skip


async def test_leaving_a_subscription_is_prompt_and_leaves_no_thread(
    containerd: PrivateContainerd,
) -> None:
    before = pumping()
    async with open_client(containerd.address) as client:
        with trio.fail_after(5):
            async with client.subscribe() as events:
                with trio.move_on_after(0.2):
                    async for _ in events:
                        pass
                assert pumping() == before + 1  # the check sees a live pump
    assert pumping() <= before


async def test_cancelling_a_waiting_consumer_from_outside(containerd: PrivateContainerd) -> None:
    before = pumping()
    async with open_client(containerd.address) as client:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def consume() -> None:
                    async with client.subscribe() as events:
                        async for _ in events:
                            pass

                nursery.start_soon(consume)
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
    assert pumping() <= before


@pytest.mark.parametrize("kind", ["missing", "directory", "file"])
async def test_wrong_socket_path_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "containerd.sock"
    if kind == "directory":
        path.mkdir()
    elif kind == "file":
        path.write_text("")
    with pytest.raises(ConnectError) as err:
        async with open_client(str(path)) as client:
            await client.version()
    assert str(path) in str(err.value)
