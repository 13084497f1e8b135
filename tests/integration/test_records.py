"""Richer workspace records against a real containerd: CRI metadata, OCI spec, task, image."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from watcher.containerd_records import TaskStatus
from watcher.errors import NotFound
from watcher.published import WorkspaceState
from watcher.testing import labels
from watcher.testing.containerd import PrivateContainerd
from watcher.testing.image import WORKSPACE_IMAGE
from watcher.testing.pods import ContainerSpec, Pods
from watcher.testing.versions import tool
from watcher.testing.watching import run, watching

WAIT = 30


@pytest.mark.parametrize("scheme", ["mk1", "mk2"])
async def test_cri_fields(containerd: PrivateContainerd, pods: Pods, scheme: str) -> None:
    make = labels.mk1_labels if scheme == "mk1" else labels.mk2_labels
    before = time.time()
    async with watching(containerd) as (w, _):
        pod = await run(
            pods.run_pod,
            f"ws-rec-{scheme}",
            labels=make(f"inst-{scheme}", "ws", "owner"),
            annotations={"gitpod.io/annotation": "pod-level"},
            containers=[ContainerSpec(annotations={"gitpod.io/c": "container-level"})],
        )
        with trio.fail_after(WAIT):
            ws = await w.wait_for_container(f"inst-{scheme}")
        assert ws.container_name == "workspace" and ws.attempt == 0
        assert ws.state is WorkspaceState.RUNNING
        assert ws.image == WORKSPACE_IMAGE
        image = await w.image_info(ws.container_id)
        assert image.name == WORKSPACE_IMAGE
        assert ws.image_ref is not None and ws.image_ref == image.id
        assert image.digest.startswith("sha256:") and image.size and image.size > 1_000_000
        assert ws.log_path is not None and os.path.isabs(ws.log_path)
        assert ws.log_path.startswith(str(pod.log_directory))
        assert Path(ws.log_path).exists()
        destinations = {m.destination: m for m in ws.mounts}
        assert destinations["/proc"].type == "proc"
        hosts = destinations["/etc/hosts"]
        assert hosts.type == "bind" and Path(hosts.source).is_file()
        assert ws.pod_annotations == {"gitpod.io/annotation": "pod-level"}
        assert ws.container_annotations["gitpod.io/c"] == "container-level"
        assert ws.container_annotations["io.kubernetes.container.restartCount"] == "0"
        # `running` may come with /tasks/create, a moment before /tasks/start tells the time
        with trio.fail_after(WAIT):
            ws = await w.wait_until(
                lambda: ws if (ws := w.instance(f"inst-{scheme}")).started_at else None
            )
        assert ws.started_at is not None and before - 1 <= ws.started_at <= time.time() + 1
        assert ws.exited_at is None and ws.exit_status is None
        assert ws.created_at is not None and before - 1 <= ws.created_at <= ws.started_at

        task = await w.task_info(ws.container_id)
        assert task.status is TaskStatus.RUNNING and task.pid == ws.pid
        assert task.exited_at is None and task.exit_status is None


async def test_replaced_container_attempt_and_exit(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    async with watching(containerd) as (w, _):
        pod = await run(pods.run_pod, "ws-rep", labels=labels.mk2_labels("inst-rep", "w", "o"))
        with trio.fail_after(WAIT):
            old = await w.wait_for_container("inst-rep")
        killed_at = time.time()
        replaced = await run(pods.replace_container, pod, "workspace")
        new_id = replaced.containers["workspace"]
        with trio.fail_after(WAIT):
            new = await w.wait_until(
                lambda: (
                    ws
                    if (ws := w.workspaces().get("inst-rep"))
                    and ws.container_id == new_id
                    and ws.running
                    else None
                )
            )
            gone = await w.wait_until(
                lambda: (
                    ws if (ws := w.container(old.container_id)).exit_status is not None else None
                )
            )
        assert new.attempt == 1
        assert new.container_annotations["io.kubernetes.container.restartCount"] == "1"
        assert gone.state is WorkspaceState.EXITED
        assert gone.exit_status == 137  # SIGKILL: StopContainer with timeout 0
        assert gone.exited_at is not None and killed_at - 1 <= gone.exited_at <= time.time() + 1
        with pytest.raises(NotFound):
            await w.task_info(old.container_id)  # CRI deleted the exited task


def _ctr_argv(ctrd: PrivateContainerd, *args: str) -> list[str]:
    return [tool("ctr", ctrd.binaries), "-a", ctrd.address, "-n", "k8s.io", *args]


def _ctr(ctrd: PrivateContainerd, *args: str) -> None:
    subprocess.run(_ctr_argv(ctrd, *args), check=True, capture_output=True, timeout=60)


@pytest.fixture
def native_pod(containerd: PrivateContainerd) -> Iterator[tuple[str, str, str]]:
    """A workspace 'pod' made with containerd's own client: labels, no CRI extensions."""
    uid = str(uuid.uuid4())
    pod_labels = {
        "io.kubernetes.pod.name": "ws-native",
        "io.kubernetes.pod.namespace": "default",
        "io.kubernetes.pod.uid": uid,
    }
    sandbox, workspace = f"native-sandbox-{uid[:8]}", f"native-ws-{uid[:8]}"
    made: list[str] = []
    try:
        for cid, kind_labels in (
            (
                sandbox,
                {"io.cri-containerd.kind": "sandbox", **labels.mk2_labels("inst-native", "w", "o")},
            ),
            (
                workspace,
                {
                    "io.cri-containerd.kind": "container",
                    "io.kubernetes.container.name": "workspace",
                },
            ),
        ):
            label_args = [
                a for k, v in {**pod_labels, **kind_labels}.items() for a in ("--label", f"{k}={v}")
            ]
            _ctr(
                containerd,
                "run",
                "-d",
                "--snapshotter",
                "overlayfs",
                *label_args,
                WORKSPACE_IMAGE,
                cid,
            )
            made.append(cid)
        yield sandbox, workspace, uid
    finally:
        for cid in reversed(made):
            subprocess.run(
                _ctr_argv(containerd, "task", "kill", "-s", "9", cid),
                capture_output=True,
                timeout=30,
            )
            for _ in range(100):
                done = subprocess.run(
                    _ctr_argv(containerd, "task", "delete", cid),
                    capture_output=True,
                    timeout=30,
                )
                if done.returncode == 0 or b"not found" in done.stderr:
                    break
            subprocess.run(
                _ctr_argv(containerd, "containers", "delete", cid),
                capture_output=True,
                timeout=30,
            )


async def test_container_without_cri_extensions(
    containerd: PrivateContainerd, native_pod: tuple[str, str, str]
) -> None:
    sandbox, workspace, uid = native_pod
    async with watching(containerd) as (w, _):
        with trio.fail_after(WAIT):
            ws = await w.wait_for_container("inst-native")
        assert ws.container_id == workspace and ws.sandbox_id == sandbox
        assert ws.pod_uid == uid and ws.pod_name == "ws-native"
        assert ws.pid is not None and ws.upperdir is not None and ws.cgroup_path is not None
        assert ws.attempt is None and ws.image_ref is None and ws.log_path is None
        assert ws.pod_annotations == {} and ws.container_annotations == {}
        assert ws.mounts  # from the OCI spec, which ctr writes too
