"""Records of a CRI pod's containers, as the shell hands them to the index and as the index
publishes them: one builder each, for every test directory (tests/ is on sys.path, as for
`rpc_wiretap`).

Each builder fills in plausible values for what a test does not care about; a test passes
what it does care about, or wraps a builder with defaults of its own. The oracle of the
property tests builds its expected `Workspace`s itself, field by field: an expectation made
with the same helper as the input would prove nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from watcher.containerd_records import (
    ContainerId,
    ContainerRecord,
    CriContainerMeta,
    CriSandboxMeta,
    SandboxId,
    SpecMount,
)
from watcher.published import InstanceId, Workspace, WorkspaceState
from watcher.testing.labels import kubelet_labels

#: an app container's image
IMAGE = "docker.io/gitpod/workspace-full:latest"
#: the published workspace's fields, in order: issue 5's, then issue 7's, then the scheme's
#: name (issue 14) (the JSON contract of `ls`/`get`/`watch`)
WORKSPACE_FIELDS = [
    "instance_id", "workspace_id", "owner_id", "pod_name", "pod_namespace", "pod_uid",
    "sandbox_id", "container_id", "image", "pod_labels", "pid", "upperdir", "cgroup_path",
    "rootfs", "exit_status", "created_at",
    "container_name", "attempt", "state", "image_ref", "log_path", "mounts",
    "pod_annotations", "container_annotations", "started_at", "exited_at",
    "scheme",
]  # fmt: skip
#: `workspace()`'s container id, and the roots of its paths
CID = "0123456789abcdef" * 4
STATE = "/var/lib/containerd"
RUN = "/run/containerd"


def sandbox_record(
    sid: str,
    *,
    uid: str,
    pod: str,
    labels: Mapping[str, str],
    created_at: float,
    namespace: str = "default",
    image: str = "pause:3.9",
    cri: bool = True,
    attempt: int = 0,
    annotations: Mapping[str, str] | None = None,
) -> ContainerRecord:
    """A pod's sandbox: the pod's `labels` plus the kubelet's and CRI's kind; CRI's metadata
    unless `cri=False` (a container made by another client)."""
    return ContainerRecord(
        id=ContainerId(sid),
        labels={
            **kubelet_labels(pod, namespace, uid),
            **labels,
            "io.cri-containerd.kind": "sandbox",
        },
        image=image,
        snapshotter="overlayfs",
        snapshot_key=sid,
        created_at=created_at,
        cri_sandbox=(
            CriSandboxMeta(
                name=pod,
                namespace=namespace,
                uid=uid,
                attempt=attempt,
                annotations=annotations or {},
            )
            if cri
            else None
        ),
    )


def container_record(
    cid: str,
    *,
    sid: str | None,
    uid: str,
    pod: str,
    created_at: float,
    name: str = "workspace",
    namespace: str = "default",
    attempt: int = 0,
    image: str = IMAGE,
    image_ref: str = "sha256:feed",
    cgroup_path: str | None = None,
    mounts: tuple[SpecMount, ...] = (),
    cri: bool = True,
    annotations: Mapping[str, str] | None = None,
) -> ContainerRecord:
    """An app container of a pod: the kubelet's labels only (the pod's are on the sandbox),
    cgroupsPath under the pod's (`/kubepods/besteffort/pod<uid>/<cid>` by default); CRI's
    metadata, joining it to sandbox `sid`, unless `cri=False`."""
    return ContainerRecord(
        id=ContainerId(cid),
        labels={
            **kubelet_labels(pod, namespace, uid),
            "io.kubernetes.container.name": name,
            "io.cri-containerd.kind": "container",
        },
        image=image,
        snapshotter="overlayfs",
        snapshot_key=cid,
        created_at=created_at,
        cgroup_path=f"/kubepods/besteffort/pod{uid}/{cid}" if cgroup_path is None else cgroup_path,
        mounts=mounts,
        cri_container=(
            CriContainerMeta(
                name=name,
                attempt=attempt,
                sandbox_id=SandboxId(sid) if sid is not None else None,
                image_ref=image_ref,
                log_path=f"/var/log/pods/{pod}/{name}/{attempt}.log",
                annotations=annotations or {},
            )
            if cri
            else None
        ),
    )


def workspace(**changes: object) -> Workspace:
    """A published workspace, running, every field set (`changes` replace fields)."""
    ws = Workspace(
        instance_id=InstanceId("inst-1"),
        workspace_id="ws-1",
        owner_id="owner-1",
        pod_name="ws-inst-1",
        pod_namespace="default",
        pod_uid="uid-1",
        sandbox_id=SandboxId("f" * 64),
        container_id=ContainerId(CID),
        image="localhost/ws:1",
        pod_labels={"gpwsman": "true", "workspaceID": "inst-1"},
        created_at=1_700_000_000.25,
        state=WorkspaceState.RUNNING,
        pid=4242,
        upperdir=f"{STATE}/io.containerd.snapshotter.v1.overlayfs/snapshots/7/fs",
        cgroup_path="/kubepods/besteffort/poduid-1/" + CID,
        rootfs=f"{RUN}/io.containerd.runtime.v2.task/k8s.io/{CID}/rootfs",
        container_name="workspace",
        attempt=0,
        image_ref="sha256:" + "a" * 64,
        log_path="/var/log/pods/default_ws-inst-1_uid-1/workspace/0.log",
        mounts=(
            SpecMount(destination="/proc", source="proc", type="proc"),
            SpecMount(destination="/workspace", source=f"{STATE}/vols/w", type="bind"),
            SpecMount(destination="/etc/hosts", source="/etc/hosts", type="bind"),
        ),
        pod_annotations={"a": "1"},
        container_annotations={"io.kubernetes.container.restartCount": "0"},
        started_at=1_700_000_001.5,
        scheme="gitpod-mk1",
    )
    return replace(ws, **changes)  # type: ignore[arg-type]
