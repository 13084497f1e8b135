"""Where upperdir and rootfs come from: the mount table first, Snapshots.Mounts otherwise.

Against the fake containerd with a made-up host /proc (`Settings.proc_root`), so the test can
count the RPCs the watcher sends.
"""

from __future__ import annotations

from pathlib import Path

import trio

from watcher.testing.fake import FakeContainerd, Rpc
from watcher.testing.labels import mk2_labels
from watcher.watcher import Settings, open_watcher

TASKS = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"


def _proc_with_rootfs(tmp_path: Path, mounted: dict[str, str]) -> str:
    """A host /proc whose PID 1 mount table shows an overlay rootfs per container id."""
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    lines = [
        f"{100 + n} 25 0:{50 + n} / {TASKS}/{cid}/rootfs rw,relatime - overlay overlay "
        f"rw,lowerdir=/l,upperdir={upper},workdir=/w"
        for n, (cid, upper) in enumerate(mounted.items())
    ]
    (proc / "1" / "mountinfo").write_text("\n".join(lines) + "\n")
    return str(proc)


async def test_mount_table_resolves_without_snapshot_calls(tmp_path: Path) -> None:
    with FakeContainerd(tmp_path) as fake:
        mounted = fake.add_pod("ws-a", labels=mk2_labels("inst-a", "w", "o"))
        unmounted = fake.add_pod("ws-b", labels=mk2_labels("inst-b", "w", "o"))
        a = mounted.containers["workspace"]
        proc = _proc_with_rootfs(tmp_path, {a: "/host/upper-a"})
        settings = Settings(address=fake.address, proc_root=proc)
        async with open_watcher(settings=settings) as w:
            ws_a = w.instance("inst-a")
            ws_b = w.instance("inst-b")
        assert ws_a.upperdir == "/host/upper-a" and ws_a.rootfs == f"{TASKS}/{a}/rootfs"
        # not in the mount table: the Snapshots service answers (and there is no rootfs)
        assert ws_b.upperdir is not None and ws_b.upperdir.endswith("/fs")
        assert ws_b.rootfs is None and ws_b.container_id == unmounted.containers["workspace"]
        mounts_calls = [c for c in fake.calls() if c.method == Rpc.SNAPSHOTS_MOUNTS]
        assert len(mounts_calls) == 1


async def test_a_new_task_takes_its_upperdir_from_the_event(tmp_path: Path) -> None:
    with FakeContainerd(tmp_path) as fake:
        async with open_watcher(settings=Settings(address=fake.address)) as w:
            fake.clear_calls()
            pod = await trio.to_thread.run_sync(
                lambda: fake.add_pod("ws-c", labels=mk2_labels("inst-c", "w", "o"))
            )
            with trio.fail_after(10):
                ws = await w.wait_for_container("inst-c")
        assert ws.container_id == pod.containers["workspace"] and ws.upperdir
        assert not [c for c in fake.calls() if c.method == Rpc.SNAPSHOTS_MOUNTS]
