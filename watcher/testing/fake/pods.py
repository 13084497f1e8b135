"""Kubelet-style pods: what CRI makes of a pod in containerd, and the fake's pod operations.

Rules:

* A pod is what CRI leaves in containerd: a sandbox container (the pod's labels, the
  kubelet's `io.kubernetes.pod.*` and `io.cri-containerd.kind=sandbox`) and one container per
  attempt of each app container (only the kubelet's labels and `kind=container`: the pod's own
  labels are on the sandbox alone), CRI's metadata extension on each, cgroupsPath under the
  pod's cgroup parent (`/k8s.io/<id>` for a pod made without one).
* Ids are stable per seed (pod uid from namespace and name, container id from uid, name and
  attempt): tests and benchmarks are reproducible.
* `FakePod` is an immutable record of what was made; operations that change a pod
  (`replace_container`) return the next record. Each operation is made of containerd's
  steps (`containers`), so it publishes what they publish, or nothing with `publish=False`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from containerd_protos.services.containers.v1 import containers_pb2
from containerd_protos.types.task import task_pb2 as task_types

from ..labels import kubelet_labels, mk2_labels
from .containers import ContainerLifecycle
from .messages import build_container, oci_spec, overlay_mount
from .wire import (
    CRI_CONTAINER_EXTENSION,
    CRI_CONTAINER_EXTENSION_URL,
    CRI_SANDBOX_EXTENSION,
    NAMESPACE,
    PAUSE_IMAGE,
    SNAPSHOTTER,
    SPEC_TYPE_URL,
    WORKSPACE_IMAGE,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FakePod:
    """A kubelet-style pod the fake holds. Immutable: `replace_container` returns the next one.

    `containers` maps the Kubernetes container name to the id of its current attempt; `pids`
    maps every container id of the pod (sandbox included) to its task's PID.
    """

    name: str
    namespace: str
    uid: str
    labels: Mapping[str, str]
    sandbox_id: str
    containers: Mapping[str, str]
    attempts: Mapping[str, int]
    pids: Mapping[str, int]
    cgroup_parent: str | None
    containerd_namespace: str = NAMESPACE
    exited: tuple[str, ...] = ()


class Kubelet(ContainerLifecycle):
    """Pods made, crashed and torn down as the kubelet does it through CRI."""

    def add_pod(
        self,
        name: str,
        namespace: str = "default",
        uid: str | None = None,
        labels: Mapping[str, str] | None = None,
        containers: Iterable[str] = ("workspace",),
        *,
        image: str = WORKSPACE_IMAGE,
        cgroup_parent: bool = True,
        annotations: Mapping[str, str] | None = None,
        start: bool = True,
        containerd_namespace: str = NAMESPACE,
        publish: bool = True,
    ) -> FakePod:
        """A pod as CRI makes it: the sandbox (labels = pod labels + `io.kubernetes.pod.*` +
        `io.cri-containerd.kind=sandbox`), then each app container (only the kubelet's
        labels + `io.cri-containerd.kind=container`), each with its task started unless
        `start=False`; CRI metadata extensions on all. cgroupsPath is
        `/kubepods/besteffort/pod<uid>/<id>` (`/k8s.io/<id>` with `cgroup_parent=False`)."""
        uid = uid or _uuid(f"pod/{namespace}/{name}")
        parent = f"/kubepods/besteffort/pod{uid}" if cgroup_parent else None
        pod_labels = {**(labels or {}), **kubelet_labels(name, namespace, uid)}
        sandbox_id = _container_id(f"{uid}/sandbox/0")
        with self._lock:
            self.create_container(
                sandbox_id,
                labels={**pod_labels, "io.cri-containerd.kind": "sandbox"},
                image=PAUSE_IMAGE,
                spec=oci_spec(_cgroups_path(parent, sandbox_id), annotations=annotations),
                extensions={
                    CRI_SANDBOX_EXTENSION: _sandbox_metadata(
                        sandbox_id, name, namespace, uid, pod_labels, annotations, parent
                    )
                },
                namespace=containerd_namespace,
                publish=publish,
            )
            pids: dict[str, int] = {}
            if start:
                pids[sandbox_id] = self.start_task(
                    sandbox_id, namespace=containerd_namespace, publish=publish
                )
            pod = FakePod(
                name=name,
                namespace=namespace,
                uid=uid,
                labels=pod_labels,
                sandbox_id=sandbox_id,
                containers={},
                attempts={},
                pids=pids,
                cgroup_parent=parent,
                containerd_namespace=containerd_namespace,
            )
            for cname in containers:
                pod = self._add_app_container(
                    pod, cname, 0, image=image, start=start, publish=publish
                )
            return pod

    def _add_app_container(
        self, pod: FakePod, cname: str, attempt: int, *, image: str, start: bool, publish: bool
    ) -> FakePod:
        cid = _container_id(f"{pod.uid}/{cname}/{attempt}")
        self.create_container(
            cid,
            labels={
                "io.cri-containerd.kind": "container",
                "io.kubernetes.container.name": cname,
                **kubelet_labels(pod.name, pod.namespace, pod.uid),
            },
            image=image,
            spec=oci_spec(_cgroups_path(pod.cgroup_parent, cid)),
            extensions={
                CRI_CONTAINER_EXTENSION: _container_metadata(cid, pod, cname, attempt, image)
            },
            namespace=pod.containerd_namespace,
            publish=publish,
        )
        pids = dict(pod.pids)
        if start:
            pids[cid] = self.start_task(cid, namespace=pod.containerd_namespace, publish=publish)
        return replace(
            pod,
            containers={**pod.containers, cname: cid},
            attempts={**pod.attempts, cname: attempt},
            pids=pids,
        )

    def replace_container(
        self, pod: FakePod, cname: str = "workspace", *, exit_status: int = 1, publish: bool = True
    ) -> FakePod:
        """What the kubelet does after a crash: the current attempt's task exits (it stays,
        exited, listed in `exited`), attempt + 1 is created and started in the same sandbox."""
        with self._lock:
            old = pod.containers[cname]
            task = self._ns(pod.containerd_namespace).tasks.get(old)
            if task is not None and task.status != task_types.STOPPED:
                self.exit_task(
                    old,
                    exit_status=exit_status,
                    namespace=pod.containerd_namespace,
                    publish=publish,
                )
            new = self._add_app_container(
                pod,
                cname,
                pod.attempts[cname] + 1,
                image=WORKSPACE_IMAGE,
                start=True,
                publish=publish,
            )
            return replace(new, exited=(*pod.exited, old))

    def remove_pod(self, pod: FakePod, *, publish: bool = True) -> None:
        """Tear the pod down as the kubelet does: app containers (current and exited
        attempts), then the sandbox — each task exited and deleted, then the container."""
        with self._lock:
            ns = self._ns(pod.containerd_namespace)
            for cid in (*pod.containers.values(), *pod.exited, pod.sandbox_id):
                if cid in ns.containers:
                    self.delete_container(cid, namespace=pod.containerd_namespace, publish=publish)

    def add_synthetic_workspaces(
        self, n: int, *, prefix: str = "ws", namespace: str = NAMESPACE
    ) -> list[FakePod]:
        """`n` running mk2 workspace pods (sandbox + `workspace` container, tasks running),
        silently (no events), for benchmarks: the protobufs are built from one template each
        instead of through the helpers, so 10 000 pods take about a second."""
        sandbox_tpl = build_container(
            "", image=PAUSE_IMAGE, spec=None, labels={"io.cri-containerd.kind": "sandbox"}
        )
        app_tpl = build_container(
            "",
            image=WORKSPACE_IMAGE,
            labels={
                "io.cri-containerd.kind": "container",
                "io.kubernetes.container.name": "workspace",
            },
        )
        pods: list[FakePod] = []
        with self._lock:
            ns = self._ns(namespace)
            first = next(self._pids)
            for i in range(n):
                name = f"{prefix}-{i}"
                uid = _uuid(f"synthetic/{prefix}/{i}")
                instance = _uuid(f"instance/{prefix}/{i}")
                sid, cid = _container_id(f"{uid}/sandbox/0"), _container_id(f"{uid}/workspace/0")
                parent = f"/kubepods/besteffort/pod{uid}"
                kube = kubelet_labels(name, "default", uid)
                pod_labels = {**mk2_labels(instance, f"{prefix}-{i}", f"owner-{i % 97}"), **kube}
                sandbox = _synthetic(sandbox_tpl, sid, pod_labels, parent)
                app = _synthetic(app_tpl, cid, kube, parent)
                ext = app.extensions[CRI_CONTAINER_EXTENSION]
                ext.type_url = CRI_CONTAINER_EXTENSION_URL
                ext.value = _SYNTH_CONTAINER_EXT.format(cid=cid, sid=sid, pod=name).encode()
                spid, cpid = first + 2 * i + 1, first + 2 * i + 2
                base = f"{self.snapshot_root}/io.containerd.snapshotter.v1.overlayfs/snapshots"
                for c, pid, snap in ((sandbox, spid, 2 * i + 1), (app, cpid, 2 * i + 2)):
                    ns.containers[c.id] = c
                    ns.tasks[c.id] = task_types.Process(id=c.id, pid=pid, status=task_types.RUNNING)
                    ns.mounts[(SNAPSHOTTER, c.id)] = [
                        overlay_mount(f"{base}/s{snap}/fs", f"{base}/s{snap}/work")
                    ]
                pods.append(
                    FakePod(
                        name=name,
                        namespace="default",
                        uid=uid,
                        labels=pod_labels,
                        sandbox_id=sid,
                        containers={"workspace": cid},
                        attempts={"workspace": 0},
                        pids={sid: spid, cid: cpid},
                        cgroup_parent=parent,
                        containerd_namespace=namespace,
                    )
                )
            self._pids = itertools.count(first + 2 * n + 1)
        return pods


def pod_ids(
    name: str, namespace: str = "default", containers: Iterable[str] = ("workspace",)
) -> tuple[str, str, dict[str, str]]:
    """The (uid, sandbox id, {container name: id}) `add_pod` gives such a pod (first attempt):
    to tell of it from elsewhere (NRI) before the fake holds it."""
    uid = _uuid(f"pod/{namespace}/{name}")
    return (
        uid,
        _container_id(f"{uid}/sandbox/0"),
        {c: _container_id(f"{uid}/{c}/0") for c in containers},
    )


def _uuid(seed: str) -> str:
    """A stable UUID-shaped id from a seed: tests and benchmarks are reproducible."""
    h = hashlib.sha256(seed.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _container_id(seed: str) -> str:
    """A 64-hex id, like CRI's, stable per seed."""
    return hashlib.sha256(seed.encode()).hexdigest()


def _cgroups_path(parent: str | None, cid: str) -> str:
    return f"{parent}/{cid}" if parent else f"/k8s.io/{cid}"


def _sandbox_metadata(
    sid: str,
    name: str,
    namespace: str,
    uid: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None,
    parent: str | None,
) -> dict[str, Any]:
    return {
        "Version": "v1",
        "Metadata": {
            "ID": sid,
            "Name": f"{name}_{namespace}_{uid}_0",
            "Config": {
                "metadata": {"name": name, "uid": uid, "namespace": namespace, "attempt": 0},
                "log_directory": f"/var/log/pods/{namespace}_{name}_{uid}",
                "labels": dict(labels),
                "annotations": dict(annotations or {}),
                "linux": {"cgroup_parent": parent or ""},
            },
            "NetNSPath": "",
            "RuntimeHandler": "",
        },
    }


def _container_metadata(
    cid: str, pod: FakePod, cname: str, attempt: int, image: str
) -> dict[str, Any]:
    log_dir = f"/var/log/pods/{pod.namespace}_{pod.name}_{pod.uid}"
    return {
        "Version": "v1",
        "Metadata": {
            "ID": cid,
            "Name": f"{cname}_{pod.name}_{pod.namespace}_{pod.uid}_{attempt}",
            "SandboxID": pod.sandbox_id,
            "Config": {
                "metadata": {"name": cname, "attempt": attempt},
                "image": {"image": image},
                "labels": {},
                "annotations": {"io.kubernetes.container.restartCount": str(attempt)},
                "log_path": f"{cname}/{attempt}.log",
            },
            "ImageRef": "sha256:" + hashlib.sha256(image.encode()).hexdigest(),
            "LogPath": f"{log_dir}/{cname}/{attempt}.log",
            "StopSignal": "SIGTERM",
        },
    }


# doubled braces: str.format templates of the synthetic loader (json.dumps per pod is the
# slow part of building 10 000 pods)
_SYNTH_SPEC = (
    '{{"ociVersion":"1.1.0","process":{{"args":["/bin/sleep","infinity"],"cwd":"/"}},'
    '"root":{{"path":"rootfs"}},"linux":{{"cgroupsPath":"{cgroup}"}}}}'
)
_SYNTH_CONTAINER_EXT = (
    '{{"Version":"v1","Metadata":{{"ID":"{cid}","Name":"workspace_{pod}_default_0",'
    '"SandboxID":"{sid}","Config":{{"metadata":{{"name":"workspace","attempt":0}}}}}}}}'
)


def _synthetic(
    template: containers_pb2.Container, cid: str, labels: Mapping[str, str], parent: str
) -> containers_pb2.Container:
    """`template` as container `cid` (its own snapshot key) of the pod whose cgroup is
    `parent`, with `labels` added."""
    made = containers_pb2.Container()
    made.CopyFrom(template)
    made.id = made.snapshot_key = cid
    made.labels.update(labels)
    made.spec.type_url = SPEC_TYPE_URL
    made.spec.value = _SYNTH_SPEC.format(cgroup=f"{parent}/{cid}").encode()
    return made
