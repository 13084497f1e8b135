"""The rig itself: pods look exactly as the kubelet's do, restarts keep them, clean-up is total.

The watcher's integration tests trust these facts; if containerd (or the rig) changes them,
this file says so first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from containerd_protos.cri.runtime.v1 import api_pb2 as cri
from watcher.testing import (
    PAUSE_IMAGE,
    WORKSPACE_IMAGE,
    ContainerSpec,
    Pods,
    PrivateContainerd,
    host,
    mk1_labels,
    mk2_labels,
    reclaim_stale,
)

T = TypeVar("T")


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    """Poll ``probe`` until it returns something truthy (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def info(ctrd: PrivateContainerd, container_id: str) -> dict[str, Any]:
    return ctrd.container_info(container_id)


def task_pids(ctrd: PrivateContainerd) -> dict[str, tuple[int, str]]:
    """``ctr tasks ls``: container id -> (pid, status)."""
    rows = ctrd.ctr("tasks", "ls").splitlines()[1:]
    return {r.split()[0]: (int(r.split()[1]), r.split()[2]) for r in rows if r.strip()}


def upperdir(ctrd: PrivateContainerd, container_id: str) -> Path:
    mounts = ctrd.ctr("snapshots", "--snapshotter", "overlayfs", "mounts", "/x", container_id)
    option = next(o for o in mounts.replace(" ", ",").split(",") if o.startswith("upperdir="))
    return Path(option.removeprefix("upperdir="))


def test_pod_is_made_like_the_kubelet(containerd: PrivateContainerd, pods: Pods) -> None:
    labels = mk2_labels("inst-1", "ws-1", "owner-1")
    pod = pods.run_pod("ws-inst-1", namespace="default", labels=labels)
    sandbox, app = pod.sandbox_id, pod.containers["workspace"]

    listed = containerd.ctr("containers", "ls", "-q").split()
    assert {sandbox, app} <= set(listed)

    sandbox_info = info(containerd, sandbox)
    assert sandbox_info["Labels"] == {
        **labels,
        "io.kubernetes.pod.name": "ws-inst-1",
        "io.kubernetes.pod.namespace": "default",
        "io.kubernetes.pod.uid": pod.uid,
        "io.cri-containerd.kind": "sandbox",
    }
    assert sandbox_info["Image"] == PAUSE_IMAGE

    app_info = info(containerd, app)
    assert app_info["Labels"] == {
        "io.cri-containerd.kind": "container",
        "io.kubernetes.container.name": "workspace",
        "io.kubernetes.pod.name": "ws-inst-1",
        "io.kubernetes.pod.namespace": "default",
        "io.kubernetes.pod.uid": pod.uid,
    }
    assert app_info["Image"] == WORKSPACE_IMAGE
    assert app_info["Snapshotter"] == "overlayfs"
    assert app_info["SnapshotKey"] == app
    cgroup = f"/kubepods/besteffort/pod{pod.uid}/{app}"
    assert app_info["Spec"]["linux"]["cgroupsPath"] == cgroup
    assert "io.cri-containerd.container.metadata" in app_info["Extensions"]

    pid, status = task_pids(containerd)[app]
    assert status == "RUNNING"
    assert pods.cri.container_pid(app) == pid
    assert any(
        line.endswith(":" + cgroup) for line in Path(f"/proc/{pid}/cgroup").read_text().split()
    )
    assert (pod.log_directory / "workspace").is_dir()


def test_mk1_pod_without_cgroup_parent(containerd: PrivateContainerd, pods: Pods) -> None:
    labels = mk1_labels("inst-2", "ws-2", "owner-2")
    pod = pods.run_pod("ws-inst-2", labels=labels, cgroup_parent=False)
    app = pod.containers["workspace"]
    assert info(containerd, pod.sandbox_id)["Labels"]["gpwsman"] == "true"
    assert info(containerd, app)["Spec"]["linux"]["cgroupsPath"] == f"/k8s.io/{app}"


def test_command_writes_into_the_live_writable_layer(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    spec = ContainerSpec(command=("sh", "-c", "echo hi > /marker; sleep infinity"))
    pod = pods.run_pod("ws-marker", containers=[spec, ContainerSpec(name="sidecar")])
    marker = upperdir(containerd, pod.containers["workspace"]) / "marker"
    eventually("the marker file", lambda: marker.is_file() and marker.read_text() == "hi\n")
    assert set(pod.containers) == {"workspace", "sidecar"}


def test_replace_container_emulates_a_kubelet_restart(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    pod = pods.run_pod("ws-restart")
    old = pod.containers["workspace"]
    pod = pods.replace_container(pod, "workspace")
    new = pod.containers["workspace"]

    assert new != old and pod.exited == (old,)
    assert pods.cri.container_status(old).state == cri.CONTAINER_EXITED
    status = pods.cri.container_status(new)
    assert status.state == cri.CONTAINER_RUNNING
    assert status.metadata.attempt == 1
    assert status.annotations["io.kubernetes.container.restartCount"] == "1"
    assert status.log_path == str(pod.log_directory / "workspace" / "1.log")
    assert [c.pod_sandbox_id for c in pods.cri.list_containers(pod.sandbox_id)] == [
        pod.sandbox_id
    ] * 2

    pod = pods.remove_exited(pod, old)
    assert pod.exited == ()
    assert old not in containerd.ctr("containers", "ls", "-q").split()


def test_kill9_and_start_pick_running_containers_up(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    pod = pods.run_pod("ws-survivor")
    app = pod.containers["workspace"]
    pid, _ = task_pids(containerd)[app]
    old_containerd = containerd.pid

    containerd.kill9()
    assert not containerd.running and old_containerd and not host.alive(old_containerd)
    assert host.shims_of(containerd.address), "shims outlive containerd"
    assert host.alive(pid), "the container outlives containerd"

    containerd.start()
    assert task_pids(containerd)[app] == (pid, "RUNNING")
    assert pods.cri.container_status(app).state == cri.CONTAINER_RUNNING


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
@pytest.mark.parametrize("containerd_state", ["running", "killed"])
def test_cleanup_leaves_nothing_behind(containerd_state: str, snapshotter: str) -> None:
    ctrd = PrivateContainerd(snapshotter=snapshotter)
    try:
        ctrd.__enter__()
        pods = Pods(ctrd)  # not as a context manager: cleanup() alone must remove the pods
        pod = pods.run_pod("ws-doomed", cgroup_parent=True)
        other = pods.run_pod("ws-doomed-2", cgroup_parent=False)
        pids = [p for p, _ in task_pids(ctrd).values()]
        pods.close()
    finally:
        if containerd_state == "killed":
            ctrd.kill9()
        ctrd.cleanup()
    ctrd.cleanup()  # idempotent

    assert pids and not any(host.alive(p) for p in pids)
    assert not host.shims_of(ctrd.address)
    assert not any(ctrd.address in " ".join(host.cmdline(p)) for p in host.pids())
    assert not host.mounts_under(ctrd.base)
    assert not ctrd.base.exists()
    for root in host.cgroup_roots():
        assert not (root / f"kubepods/besteffort/pod{pod.uid}").exists()
        for container_id in other.containers.values():
            assert not (root / f"k8s.io/{container_id}").exists()


def test_images_are_distinct_and_unlabelled(containerd: PrivateContainerd) -> None:
    rows = [r.split() for r in containerd.ctr("images", "ls").splitlines()[1:]]
    manifests = {row[0]: row[2] for row in rows}
    configs = {}
    for ref in (PAUSE_IMAGE, WORKSPACE_IMAGE):
        manifest = json.loads(containerd.ctr("content", "get", manifests[ref]))
        configs[ref] = json.loads(containerd.ctr("content", "get", manifest["config"]["digest"]))
    assert configs[PAUSE_IMAGE]["history"] != configs[WORKSPACE_IMAGE]["history"]
    for config in configs.values():
        assert "Labels" not in config["config"]  # image labels would leak into CRI labels
        assert config["config"]["Entrypoint"] == ["/bin/sleep", "infinity"]


def test_reclaim_stale_cleans_up_after_a_killed_owner() -> None:
    script = (
        "import os, sys\n"
        "from watcher.testing import PrivateContainerd, Pods\n"
        "ctrd = PrivateContainerd(); ctrd.__enter__()\n"
        "Pods(ctrd).run_pod('ws-orphan')\n"
        "print(ctrd.base, ctrd.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)  # no finally, no atexit: everything is left running\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    base, containerd_pid = Path(done.stdout.split()[0]), int(done.stdout.split()[1])
    assert host.alive(containerd_pid) and host.mounts_under(base)

    assert base in reclaim_stale()
    assert not host.alive(containerd_pid)
    assert not host.mounts_under(base) and not base.exists()


def test_config_follows_the_host(containerd: PrivateContainerd) -> None:
    config = tomllib.loads(containerd.config_path.read_text())
    cri_plugin = config["plugins"]["io.containerd.grpc.v1.cri"]
    # without CAP_SYS_RESOURCE runc cannot set the sandbox's oom_score_adj=-998
    assert cri_plugin["restrict_oom_score_adj"] is not host.has_capability(host.CAP_SYS_RESOURCE)
    assert cri_plugin["containerd"]["snapshotter"] == containerd.snapshotter == "overlayfs"
    runc = cri_plugin["containerd"]["runtimes"]["runc"]
    assert runc["options"]["Root"] == str(containerd.base / "runc")
    assert config["grpc"]["address"] == containerd.address
    assert len(containerd.address) < 100
    assert all(Path(config[k]).is_relative_to(containerd.base) for k in ("root", "state"))
