"""A pod template run the way a kubelet runs it, over CRI on the rig's private containerd.

Synopsis::

    node = NodePaths({"/run/containerd": str(ctrd.state_dir), "/proc": "/proc", ...})
    plan = plan_pod(template, node=node, image=image.ref, image_user=65532,
                    volumes_dir=ctrd.base / "volumes")
    pod = pods.run_pod("ws-watcher-x1", "ws-watcher", **plan.run_pod_args())
    status = http_get_probe(plan.containers[0].probes["readinessProbe"], host="127.0.0.1")

No Kubernetes runs on the test machines, but the DaemonSet's pod must be tested as a kubelet
would run it: this module translates a pod template (``spec.template`` of the manifest, as
parsed YAML) into the CRI requests a kubelet makes — the sandbox's namespaces and security
context, each container's command and args, env, mounts (``hostPath`` and ``emptyDir``
volumes), security context (user, groups, capabilities, read-only root file system,
no-new-privileges, seccomp) and resources (CPU shares and quota, memory limit), computed as
the kubelet computes them.

What differs from a kubelet, on purpose, and nothing else:

* host paths are the rig's: ``NodePaths`` maps each node path the template names
  (``/run/containerd``, ``/var/log/pods``...) to the rig's dir standing for it; a path it
  does not map is refused, so a template can never mount the test machine's real dirs;
* the rig has no CNI: a pod that asks for its own network gets the host's (its ports are
  then the host's: the caller picks free ones);
* the image is the locally built one (``image``);
* fields the translation does not know are refused (``Unsupported``), so a manifest change
  that a test could not honour fails loudly rather than being dropped.
"""

from __future__ import annotations

import http.client
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from containerd_protos.cri.runtime.v1 import api_pb2 as cri

from .errors import RigError
from .pods import ContainerSpec

CPU_PERIOD = 100_000
"""The CFS period the kubelet uses (100 ms), in µs."""
MIN_SHARES = 2
"""The kubelet's floor of ``cpu.shares`` (a pod without CPU requests)."""

_POD_KEYS = {
    "containers", "volumes", "hostPID", "hostIPC", "hostNetwork", "securityContext",
    "automountServiceAccountToken", "tolerations", "priorityClassName", "nodeSelector",
    "terminationGracePeriodSeconds", "serviceAccountName", "enableServiceLinks",
    "dnsPolicy", "restartPolicy", "affinity",
}  # fmt: skip
"""Pod fields understood: those that shape the CRI requests, and those that only the API
server or the scheduler acts on (tolerations, priority, node selection)."""
_CONTAINER_KEYS = {
    "name", "image", "imagePullPolicy", "command", "args", "env", "ports", "volumeMounts",
    "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe",
    "terminationMessagePolicy", "terminationMessagePath",
}  # fmt: skip
_POD_SECURITY_KEYS = {
    "runAsUser", "runAsGroup", "runAsNonRoot", "supplementalGroups", "fsGroup", "seccompProfile",
}  # fmt: skip
_CONTAINER_SECURITY_KEYS = {
    "runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem",
    "allowPrivilegeEscalation", "capabilities", "privileged", "seccompProfile",
}  # fmt: skip
_PROPAGATION = {
    None: cri.PROPAGATION_PRIVATE,
    "None": cri.PROPAGATION_PRIVATE,
    "HostToContainer": cri.PROPAGATION_HOST_TO_CONTAINER,
    "Bidirectional": cri.PROPAGATION_BIDIRECTIONAL,
}
_QUANTITY = re.compile(r"^([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTOR = {
    None: 1, "m": 0.001, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


class Unsupported(RigError):
    """The template asks for something this emulation does not do."""


@dataclass(frozen=True)
class NodePaths:
    """Node paths → the rig's dirs standing for them (longest prefix wins)."""

    paths: Mapping[str, str]

    def host(self, node_path: str) -> str:
        """Where the rig keeps ``node_path``; raise for a path no entry covers."""
        best = max(
            (p for p in self.paths if node_path == p or node_path.startswith(p.rstrip("/") + "/")),
            key=len,
            default=None,
        )
        if best is None:
            raise Unsupported(f"host path {node_path} is not one the rig stands in for")
        return self.paths[best] + node_path[len(best) :]

    def path_map_args(self, args: Sequence[str]) -> list[str]:
        """``--path-map HOST=LOCAL`` options with HOST as the rig has it (LOCAL, a path in
        the container, stays): the watcher's view of the rig's node, as of a real one."""
        out = []
        for arg in args:
            if arg.startswith("--path-map="):
                host, _, local = arg.removeprefix("--path-map=").partition("=")
                arg = f"--path-map={self.host(host)}={local}"
            out.append(arg)
        return out


@dataclass(frozen=True, kw_only=True)
class Probe:
    """An ``httpGet`` probe, its port resolved to a number."""

    path: str
    port: int
    timeout: float
    period: float = 10.0
    failure_threshold: int = 3
    scheme: str = "HTTP"


@dataclass(frozen=True, kw_only=True)
class PlannedContainer:
    spec: ContainerSpec
    ports: Mapping[str, int]  # name -> containerPort
    probes: Mapping[str, Probe]  # livenessProbe, readinessProbe, startupProbe


@dataclass(frozen=True, kw_only=True)
class PodPlan:
    """What the kubelet would ask CRI for: the sandbox's part and the containers'."""

    namespaces: cri.NamespaceOption
    security_context: cri.LinuxSandboxSecurityContext
    containers: tuple[PlannedContainer, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def run_pod_args(self) -> dict[str, Any]:
        """Keyword arguments of ``Pods.run_pod`` for this plan."""
        return {
            "labels": self.labels,
            "annotations": self.annotations,
            "containers": [c.spec for c in self.containers],
            "namespaces": self.namespaces,
            "security_context": self.security_context,
        }


def _check_keys(where: str, value: Mapping[str, Any], known: set[str]) -> None:
    if unknown := sorted(set(value) - known):
        raise Unsupported(f"{where}: not emulated: {', '.join(unknown)}")


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity (``100m``, ``64Mi``, ``1``) as a number (cores, bytes)."""
    m = _QUANTITY.match(str(text))
    if not m:
        raise Unsupported(f"not a quantity: {text!r}")
    return float(m[1]) * _FACTOR[m[2]]


def plan_pod(
    template: Mapping[str, Any],
    *,
    node: NodePaths,
    image: str,
    image_user: int,
    volumes_dir: Path,
    args: Mapping[str, Sequence[str]] | None = None,
) -> PodPlan:
    """Translate a pod template (``metadata`` + ``spec``) into the CRI requests.

    Args:
        node: where the rig keeps each host path the template mounts.
        image: the image every container runs (the locally built one).
        image_user: the image's numeric ``User``: what ``runAsNonRoot`` is checked against
            when the template gives no ``runAsUser`` (as the kubelet checks the image's).
        volumes_dir: where ``emptyDir`` volumes are made (the kubelet's
            ``/var/lib/kubelet/pods/<uid>/volumes``).
        args: per container name, args replacing the template's (a test's rewrites).

    Raises:
        Unsupported: a field the emulation does not do, or a host path ``node`` lacks.
        RigError: what the kubelet would refuse too (``runAsNonRoot`` with user 0, a
            ``hostPath`` of type Directory that does not exist).
    """
    spec = template["spec"]
    _check_keys("spec", spec, _POD_KEYS)
    pod_sc = spec.get("securityContext") or {}
    _check_keys("spec.securityContext", pod_sc, _POD_SECURITY_KEYS)
    namespaces = cri.NamespaceOption(
        # no CNI in the rig: every pod gets the host's network (see the module's docstring)
        network=cri.NODE,
        pid=cri.NODE if spec.get("hostPID") else cri.CONTAINER,
        ipc=cri.NODE if spec.get("hostIPC") else cri.POD,
    )
    groups = [int(g) for g in pod_sc.get("supplementalGroups", [])]
    if "fsGroup" in pod_sc:  # the kubelet adds it to every container's groups
        groups.append(int(pod_sc["fsGroup"]))
    sandbox_sc = cri.LinuxSandboxSecurityContext(
        supplemental_groups=groups, seccomp=_seccomp(pod_sc.get("seccompProfile"))
    )
    if "runAsUser" in pod_sc:
        sandbox_sc.run_as_user.value = int(pod_sc["runAsUser"])
    if "runAsGroup" in pod_sc:
        sandbox_sc.run_as_group.value = int(pod_sc["runAsGroup"])
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    args = args or {}
    containers = tuple(
        _plan_container(
            c, pod_sc, groups, volumes, node, image, image_user, volumes_dir, args.get(c["name"])
        )
        for c in spec["containers"]
    )
    meta = template.get("metadata") or {}
    return PodPlan(
        namespaces=namespaces,
        security_context=sandbox_sc,
        containers=containers,
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
    )


def _seccomp(profile: Mapping[str, Any] | None) -> cri.SecurityProfile:
    kind = (profile or {}).get("type", "Unconfined")  # the kubelet's default: unconfined
    if kind == "RuntimeDefault":
        return cri.SecurityProfile(profile_type=cri.SecurityProfile.RuntimeDefault)
    if kind == "Unconfined":
        return cri.SecurityProfile(profile_type=cri.SecurityProfile.Unconfined)
    raise Unsupported(f"seccompProfile type {kind}")


def _plan_container(
    c: Mapping[str, Any],
    pod_sc: Mapping[str, Any],
    groups: list[int],
    volumes: Mapping[str, Mapping[str, Any]],
    node: NodePaths,
    image: str,
    image_user: int,
    volumes_dir: Path,
    args: Sequence[str] | None,
) -> PlannedContainer:
    name = c["name"]
    _check_keys(f"container {name}", c, _CONTAINER_KEYS)
    sc = c.get("securityContext") or {}
    _check_keys(f"container {name} securityContext", sc, _CONTAINER_SECURITY_KEYS)

    def effective(key: str) -> Any:  # the container's setting, else the pod's
        return sc.get(key, pod_sc.get(key))

    security = cri.LinuxContainerSecurityContext(
        privileged=bool(sc.get("privileged", False)),
        readonly_rootfs=bool(sc.get("readOnlyRootFilesystem", False)),
        # allowPrivilegeEscalation false is no_new_privs; unset, the kubelet leaves it off
        no_new_privs=sc.get("allowPrivilegeEscalation") is False,
        supplemental_groups=groups,
        seccomp=_seccomp(effective("seccompProfile")),
    )
    caps = sc.get("capabilities") or {}
    _check_keys(f"container {name} capabilities", caps, {"add", "drop"})
    security.capabilities.add_capabilities.extend(caps.get("add", []))
    security.capabilities.drop_capabilities.extend(caps.get("drop", []))
    user = effective("runAsUser")
    if user is not None:
        security.run_as_user.value = int(user)
    if (group := effective("runAsGroup")) is not None:
        security.run_as_group.value = int(group)
    if effective("runAsNonRoot") and (image_user if user is None else int(user)) == 0:
        # the kubelet's check (kuberuntime_container_linux: verifyRunAsNonRoot)
        raise RigError(f"container {name} has runAsNonRoot and would run as root")
    mounts = tuple(_mount(m, volumes, node, volumes_dir) for m in c.get("volumeMounts", []))
    ports = {p.get("name", str(p["containerPort"])): int(p["containerPort"])
             for p in c.get("ports", [])}  # fmt: skip
    probes = {
        kind: _probe(c[kind], ports)
        for kind in ("livenessProbe", "readinessProbe", "startupProbe")
        if kind in c
    }
    return PlannedContainer(
        spec=ContainerSpec(
            name=name,
            image=image,
            command=tuple(c.get("command", ())),
            args=tuple(args if args is not None else c.get("args", ())),
            env={e["name"]: str(e["value"]) for e in c.get("env", [])},
            mounts=mounts,
            security_context=security,
            resources=_resources(c.get("resources") or {}),
        ),
        ports=ports,
        probes=probes,
    )


def _mount(
    m: Mapping[str, Any],
    volumes: Mapping[str, Mapping[str, Any]],
    node: NodePaths,
    volumes_dir: Path,
) -> cri.Mount:
    _check_keys(f"volumeMount {m.get('name')}", m,
                {"name", "mountPath", "readOnly", "mountPropagation"})  # fmt: skip
    volume = volumes[m["name"]]
    if "hostPath" in volume:
        source = volume["hostPath"]
        host = node.host(source["path"])
        kind = source.get("type", "")
        if kind == "DirectoryOrCreate":
            Path(host).mkdir(mode=0o755, parents=True, exist_ok=True)
        elif kind == "Directory" and not Path(host).is_dir():
            raise RigError(f"hostPath {source['path']} ({host}): not a directory")
        elif kind not in ("", "Directory"):
            raise Unsupported(f"hostPath type {kind}")
    elif "emptyDir" in volume:
        host_dir = volumes_dir / m["name"]
        host_dir.mkdir(mode=0o777, parents=True, exist_ok=True)
        host_dir.chmod(0o777)  # as the kubelet makes them: any user of the pod writes there
        host = str(host_dir)
    else:
        raise Unsupported(f"volume {m['name']}: only hostPath and emptyDir are emulated")
    return cri.Mount(
        container_path=m["mountPath"],
        host_path=host,
        readonly=bool(m.get("readOnly", False)),
        propagation=_PROPAGATION[m.get("mountPropagation")],
    )


def _resources(resources: Mapping[str, Any]) -> cri.LinuxContainerResources:
    """CPU shares from the request, quota from the limit, the memory limit: as the kubelet
    (``pkg/kubelet/cm/helpers_linux.go``: MilliCPUToShares, MilliCPUToQuota)."""
    _check_keys("resources", resources, {"requests", "limits"})
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    out = cri.LinuxContainerResources(cpu_period=CPU_PERIOD)
    cpu_request = requests.get("cpu", limits.get("cpu"))
    milli = round(quantity(cpu_request) * 1000) if cpu_request is not None else 0
    out.cpu_shares = max(MIN_SHARES, milli * 1024 // 1000)
    if "cpu" in limits:
        out.cpu_quota = max(1000, round(quantity(limits["cpu"]) * 1000) * CPU_PERIOD // 1000)
    if "memory" in limits:
        out.memory_limit_in_bytes = math.ceil(quantity(limits["memory"]))
    return out


def _probe(probe: Mapping[str, Any], ports: Mapping[str, int]) -> Probe:
    if "httpGet" not in probe:
        raise Unsupported("only httpGet probes are emulated")
    get = probe["httpGet"]
    port = get["port"]
    return Probe(
        path=get.get("path", "/"),
        port=ports[port] if isinstance(port, str) else int(port),
        timeout=float(probe.get("timeoutSeconds", 1)),
        period=float(probe.get("periodSeconds", 10)),
        failure_threshold=int(probe.get("failureThreshold", 3)),
        scheme=get.get("scheme", "HTTP"),
    )


def http_get_probe(probe: Probe, host: str) -> int:
    """GET the probe's path as the kubelet's prober does; return the status code.

    The kubelet counts 200 to 399 as success. A connection that fails raises ``OSError``.
    """
    if probe.scheme != "HTTP":
        raise Unsupported(f"probe scheme {probe.scheme}")
    conn = http.client.HTTPConnection(host, probe.port, timeout=probe.timeout)
    try:
        conn.request("GET", probe.path, headers={"User-Agent": "kube-probe/1.35"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
