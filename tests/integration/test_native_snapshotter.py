"""The watcher on a node without an overlay upper layer: CRI's snapshotter is ``native``.

Issue 12: there (as with devmapper, zfs, btrfs or a remote snapshotter) the task's rootfs is a
bind mount of the snapshot and nothing is an ``upperdir``. A workspace is running once its task
runs: ``wait_for_container`` returns with PID, cgroup path and rootfs, and ``upperdir`` None.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from watcher import ChangeKind, Disconnected, NotFound, Watcher, Workspace, WorkspaceChange
from watcher.published import Change
from watcher.testing import NAMESPACE, Pods, PrivateContainerd, mk2_labels
from watcher.testing.watching import kinds_of, run, watching

WAIT = 20  # seconds: the waits return as soon as the watcher knows


def mount_of(mount_point: str) -> tuple[str, str] | None:
    """(root, fs type) of the mount at ``mount_point`` in our mount table, None if none.

    Read here rather than with ``watcher.mountinfo``: the rig's facts must not hang on the code
    under test. The rig's paths hold no blanks, so mountinfo's octal escapes do not matter.
    """
    found = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == mount_point:
            found = (fields[3], fields[fields.index("-") + 1])  # the last one stacked wins
    return found


def assert_native(ctrd: PrivateContainerd, container_id: str) -> str:
    """The container really runs on the native snapshotter; return its task's rootfs.

    The snapshot's mount is a bind of a plain directory (no ``upperdir=`` anywhere), and the
    task's rootfs is that directory bind-mounted under containerd's task state dir.
    """
    info = ctrd.container_info(container_id)
    assert (info["Snapshotter"], info["SnapshotKey"]) == ("native", container_id), info
    mounts = ctrd.ctr("snapshots", "--snapshotter", "native", "mounts", "/x", container_id)
    # e.g. "mount -t bind /…/io.containerd.snapshotter.v1.native/snapshots/3 /x -o rbind,rw"
    assert mounts.split()[:3] == ["mount", "-t", "bind"] and "upperdir=" not in mounts, mounts
    snapshot_dir = mounts.split()[3]
    rootfs = str(
        ctrd.base / "state" / "io.containerd.runtime.v2.task" / NAMESPACE / container_id / "rootfs"
    )
    mount = mount_of(rootfs)
    assert mount is not None, f"no mount at {rootfs}"
    root, fs_type = mount
    # a bind mount shows the bound directory as its root; the snapshot dir lives on the same
    # file system as the base dir, so that is the root relative to the base dir's file system
    assert snapshot_dir.endswith(root) and root != "/" and fs_type != "overlay", mount
    assert Path(rootfs, "bin", "busybox").is_file()
    return rootfs


def check_workspace(ws: Workspace, container_id: str, uid: str, rootfs: str) -> None:
    assert ws.container_id == container_id
    assert ws.pid is not None and ws.pid > 0 and os.path.exists(f"/proc/{ws.pid}")
    assert ws.cgroup_path == f"/kubepods/besteffort/pod{uid}/{container_id}"
    assert ws.rootfs == rootfs and Path(ws.rootfs, "bin", "busybox").is_file()
    assert ws.upperdir is None


async def wait_running(w: Watcher, iid: str, seen: list[Change]) -> Workspace:
    """``wait_for_container`` within the deadline; else fail saying what the watcher knew."""
    try:
        with trio.fail_after(WAIT):
            return await w.wait_for_container(iid)
    except trio.TooSlowError:
        try:
            ws = w.instance(iid)
            known = f"state={ws.state} pid={ws.pid} upperdir={ws.upperdir} rootfs={ws.rootfs}"
        except NotFound:
            known = "nothing of it"
        kinds = [c.kind for c in seen if isinstance(c, WorkspaceChange)]
        pytest.fail(f"no `running` for {iid} within {WAIT}s on the native snapshotter; the "
                    f"watcher holds {known}; changes seen: {kinds}")  # fmt: skip


@pytest.mark.parametrize("found_by", ["events", "listing"])
async def test_wait_returns_without_an_upperdir(
    native_containerd: PrivateContainerd, native_pods: Pods, found_by: str
) -> None:
    iid, name = f"inst-native-{found_by}", f"ws-native-{found_by}"
    labels = mk2_labels(iid, name, "owner-native")
    pod = None
    if found_by == "listing":  # running before the watcher starts: its initial sync finds it
        pod = await run(native_pods.run_pod, name, labels=labels)
    async with watching(native_containerd) as (w, seen):
        if pod is None:  # found by the events
            pod = await run(native_pods.run_pod, name, labels=labels)
        cid = pod.containers["workspace"]
        rootfs = await run(assert_native, native_containerd, cid)
        with trio.fail_after(WAIT):  # the watcher sees the workspace at all: the pod join works
            await w.wait_until(lambda: True if iid in w.workspaces() else None)

        ws = await wait_running(w, iid, seen)
        check_workspace(ws, cid, pod.uid, rootfs)
        assert await w.container_rootfs(cid) == rootfs
        assert w.container_pid(cid) == ws.pid
        assert w.container_cgroup_path(cid) == ws.cgroup_path

        await run(native_pods.remove_pod, pod)
        with trio.fail_after(WAIT):
            await w.wait_for_container_stop(iid)
        assert w.workspaces() == {}
        await trio.testing.wait_all_tasks_blocked()  # the collector has taken every change
    assert not any(isinstance(c, Disconnected) for c in seen)
    # a workspace found by the initial sync was running before `changes()` was followed
    expected = [ChangeKind.CREATED, ChangeKind.RUNNING] if found_by == "events" else []
    assert kinds_of(seen, cid) == [*expected, ChangeKind.EXITED, ChangeKind.REMOVED]
