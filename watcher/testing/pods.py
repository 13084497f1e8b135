"""Kubernetes pods made the way the kubelet makes them, over CRI, on a private containerd.

Synopsis::

    pods = Pods(ctrd)
    marker = ContainerSpec(command=("sh", "-c", "echo hi > /m; sleep infinity"))
    pod = pods.run_pod("ws-1", labels=mk2_labels("inst", "ws", "owner"), containers=[marker])
    pod.containers["workspace"]                  # the container id, by container name
    pod = pods.replace_container(pod, "workspace")  # kubelet restart: attempt 1, old one exited
    pods.remove_pod(pod)                          # Stop/RemoveContainer, Stop/RemovePodSandbox
    pods.remove_all()                             # whatever is left (a fixture's teardown)

Pod cgroups go under ``/kubepods/besteffort/pod<uid>`` as on a kubelet's node (the tests and
the watcher's cgroup paths expect that); ``Pods(ctrd, cgroup_parent_prefix="/mine")`` puts
them under ``/mine/pod<uid>`` instead: on a node whose kubelet owns ``/kubepods`` (the demo).

Why emulate the kubelet instead of starting containers with ctr: the watcher reads exactly
what the CRI plugin writes (sandbox vs. container labels, ``io.cri-containerd.kind``, cgroup
paths under the pod's cgroup parent, CRI metadata extensions); only real CRI calls produce it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from types import TracebackType

from containerd_protos.cri.runtime.v1 import api_pb2 as cri

from . import host
from .containerd import PrivateContainerd
from .cri_client import CRIClient
from .errors import CRIError, RigError
from .image import WORKSPACE_IMAGE

KUBEPODS_PARENT = "/kubepods/besteffort"
"""The kubelet's cgroupfs parent of best-effort pods (QoS class of pods without requests)."""


def _host_network() -> cri.NamespaceOption:
    # Host network, own pid namespace per container, shared ipc: what the kubelet asks for a
    # hostNetwork pod; no CNI is needed for it.
    return cri.NamespaceOption(network=cri.NODE, pid=cri.CONTAINER, ipc=cri.POD)


NAMESPACES = _host_network()


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """One container of a pod; ``command``/``args`` override the image's entrypoint/cmd."""

    name: str = "workspace"
    image: str = WORKSPACE_IMAGE
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: host volumes, as the kubelet passes a pod's volumeMounts (``kubelet.py``)
    mounts: tuple[cri.Mount, ...] = ()
    #: user, capabilities, read-only rootfs, seccomp...; namespaces come from the pod
    security_context: cri.LinuxContainerSecurityContext | None = None
    resources: cri.LinuxContainerResources | None = None


@dataclass(frozen=True, kw_only=True)
class Pod:
    """A pod the rig made. Immutable: ``replace_container`` returns the pod's next version."""

    name: str
    namespace: str
    uid: str
    labels: Mapping[str, str]
    sandbox_id: str
    containers: Mapping[str, str]  # container name -> id of its current attempt
    attempts: Mapping[str, int]  # container name -> current attempt number
    specs: Mapping[str, ContainerSpec]
    exited: tuple[str, ...] = ()  # ids of replaced attempts not removed yet
    cgroup_parent: str | None
    log_directory: Path
    sandbox_config: cri.PodSandboxConfig = field(compare=False, repr=False)
    namespaces: cri.NamespaceOption = field(
        default_factory=_host_network, compare=False, repr=False
    )


class Pods:
    """Creates and removes kubelet-style pods on ``ctrd``; remembers them for ``remove_all``."""

    def __init__(
        self, ctrd: PrivateContainerd, *, cgroup_parent_prefix: str = KUBEPODS_PARENT
    ) -> None:
        # an absolute cgroupfs path without ".." (it is joined below every hierarchy's root)
        parts = PurePosixPath(cgroup_parent_prefix).parts
        if not cgroup_parent_prefix.startswith("/") or len(parts) < 2 or ".." in parts:
            raise RigError(f"not a cgroup parent for pods: {cgroup_parent_prefix!r}")
        self.ctrd = ctrd
        self.cgroup_parent_prefix = cgroup_parent_prefix.rstrip("/")
        self.cri = CRIClient(ctrd.address)
        self._pods: dict[str, Pod] = {}  # by uid

    @property
    def pods(self) -> list[Pod]:
        """The pods made and not removed yet (their latest versions)."""
        return list(self._pods.values())

    def run_pod(
        self,
        name: str,
        namespace: str = "default",
        uid: str | None = None,
        labels: Mapping[str, str] | None = None,
        containers: Iterable[ContainerSpec] = (ContainerSpec(),),
        *,
        cgroup_parent: bool = True,
        annotations: Mapping[str, str] | None = None,
        namespaces: cri.NamespaceOption = NAMESPACES,
        security_context: cri.LinuxSandboxSecurityContext | None = None,
    ) -> Pod:
        """RunPodSandbox, then CreateContainer + StartContainer for each container.

        With ``cgroup_parent`` the pod's cgroup is ``<cgroup_parent_prefix>/pod<uid>``; without,
        the pod has none and containerd puts each container under ``/k8s.io/<id>``.
        ``namespaces`` (e.g. the host's PID namespace) and ``security_context`` (its
        ``namespace_options`` are ``namespaces``) are the sandbox's, as the kubelet derives
        them from a pod spec; the containers share the namespaces.

        Raises:
            CRIError: a CRI call failed (the half-made pod is removed first).
        """
        uid = uid or str(uuid.uuid4())
        specs = {spec.name: spec for spec in containers}
        parent = f"{self.cgroup_parent_prefix}/pod{uid}" if cgroup_parent else None
        log_dir = self.ctrd.pods_dir / f"{namespace}_{name}_{uid}"
        for spec in specs.values():  # the kubelet creates them before CreateContainer
            (log_dir / spec.name).mkdir(parents=True, exist_ok=True)
        config = cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            hostname="",  # only allowed with network=NODE
            log_directory=str(log_dir),
            labels={
                "io.kubernetes.pod.name": name,
                "io.kubernetes.pod.namespace": namespace,
                "io.kubernetes.pod.uid": uid,
                **(labels or {}),
            },
            annotations=dict(annotations or {}),
            linux=cri.LinuxPodSandboxConfig(
                cgroup_parent=parent or "",
                security_context=cri.LinuxSandboxSecurityContext(namespace_options=NAMESPACES),
            ),
        )
        if security_context is not None:
            config.linux.security_context.CopyFrom(security_context)
        config.linux.security_context.namespace_options.CopyFrom(namespaces)
        if parent:
            self.ctrd.track_cgroup(parent)
        sandbox_id = self.cri.run_pod_sandbox(config)
        pod = Pod(
            name=name, namespace=namespace, uid=uid, labels=dict(labels or {}),
            sandbox_id=sandbox_id, containers={}, attempts={}, specs=specs,
            cgroup_parent=parent, log_directory=log_dir, sandbox_config=config,
            namespaces=namespaces,
        )  # fmt: skip
        self._pods[uid] = pod
        try:
            for spec in specs.values():
                pod = self._start_container(pod, spec, attempt=0)
        except BaseException:
            self.remove_pod(pod)
            raise
        return pod

    def _start_container(self, pod: Pod, spec: ContainerSpec, attempt: int) -> Pod:
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=spec.name, attempt=attempt),
            image=cri.ImageSpec(image=spec.image),
            command=list(spec.command),
            args=list(spec.args),
            envs=[cri.KeyValue(key=k, value=v.encode()) for k, v in spec.env.items()],
            labels={
                "io.kubernetes.container.name": spec.name,
                "io.kubernetes.pod.name": pod.name,
                "io.kubernetes.pod.namespace": pod.namespace,
                "io.kubernetes.pod.uid": pod.uid,
            },
            annotations={"io.kubernetes.container.restartCount": str(attempt), **spec.annotations},
            log_path=f"{spec.name}/{attempt}.log",
            mounts=list(spec.mounts),
        )
        if spec.security_context is not None:
            config.linux.security_context.CopyFrom(spec.security_context)
        config.linux.security_context.namespace_options.CopyFrom(pod.namespaces)
        if spec.resources is not None:
            config.linux.resources.CopyFrom(spec.resources)
        container_id = self.cri.create_container(pod.sandbox_id, config, pod.sandbox_config)
        if pod.cgroup_parent is None:
            self.ctrd.track_cgroup(f"/k8s.io/{container_id}")
        pod = replace(
            pod,
            containers={**pod.containers, spec.name: container_id},
            attempts={**pod.attempts, spec.name: attempt},
        )
        self._pods[pod.uid] = pod
        self.cri.start_container(container_id)
        return pod

    def replace_container(self, pod: Pod, name: str, *, remove_old: bool = False) -> Pod:
        """The kubelet after a crash: old attempt killed and left exited, attempt+1 started.

        The new container runs in the same sandbox with the same spec. With ``remove_old`` the
        exited attempt is removed afterwards (as the kubelet's garbage collection would);
        otherwise its id is kept in ``Pod.exited`` until ``remove_exited`` or ``remove_pod``.
        """
        old = pod.containers[name]
        self.cri.stop_container(old, timeout=0)
        pod = replace(pod, exited=(*pod.exited, old))
        self._pods[pod.uid] = pod
        pod = self._start_container(pod, pod.specs[name], attempt=pod.attempts[name] + 1)
        return self.remove_exited(pod, old) if remove_old else pod

    def remove_exited(self, pod: Pod, container_id: str) -> Pod:
        """RemoveContainer an exited attempt (kubelet garbage collection)."""
        self._ignore_missing(self.cri.remove_container, container_id)
        pod = replace(pod, exited=tuple(c for c in pod.exited if c != container_id))
        self._pods[pod.uid] = pod
        return pod

    def remove_pod(self, pod: Pod) -> None:
        """Tear down as the kubelet does: StopContainer (timeout 0), RemoveContainer,
        StopPodSandbox, RemovePodSandbox; then rmdir the pod's cgroup (when empty)."""
        pod = self._pods.get(pod.uid, pod)
        for container_id in (*pod.containers.values(), *pod.exited):
            self._ignore_missing(self.cri.stop_container, container_id)
            self._ignore_missing(self.cri.remove_container, container_id)
        self._ignore_missing(self.cri.stop_pod_sandbox, pod.sandbox_id)
        self._ignore_missing(self.cri.remove_pod_sandbox, pod.sandbox_id)
        if pod.cgroup_parent:
            # the prefix stays: other pods may live there (whoever chose it removes it)
            host.remove_cgroup(pod.cgroup_parent, keep_parents_of=self.cgroup_parent_prefix)
        self._pods.pop(pod.uid, None)

    def remove_all(self) -> None:
        """Remove every pod made here and not removed yet."""
        for pod in list(self._pods.values()):
            self.remove_pod(pod)

    @staticmethod
    def _ignore_missing(call: Callable[[str], None], container_id: str) -> None:
        try:
            call(container_id)
        except CRIError as exc:
            if exc.code != "NOT_FOUND":
                raise

    def wait_container_state(
        self, container_id: str, state: int, timeout: float = 10.0
    ) -> cri.ContainerStatus:
        """Poll ContainerStatus until ``state`` (e.g. ``cri.CONTAINER_EXITED``); return it."""
        deadline = time.monotonic() + timeout
        while (status := self.cri.container_status(container_id)).state != state:
            if time.monotonic() > deadline:
                want = cri.ContainerState.Name(state)
                raise RigError(f"container {container_id} not {want} after {timeout}s")
            time.sleep(0.05)
        return status

    def close(self) -> None:
        self.cri.close()

    def __enter__(self) -> Pods:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        try:
            self.remove_all()
        finally:
            self.close()
