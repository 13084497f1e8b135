"""The kubelet emulation's translation of a pod template into CRI requests (no root)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from containerd_protos.cri.runtime.v1 import api_pb2 as cri
from watcher.testing.deployment import daemonset_template
from watcher.testing.errors import RigError
from watcher.testing.kubelet import NodePaths, Unsupported, plan_pod, quantity


def node(tmp_path: Path) -> NodePaths:
    for sub in ("state", "root", "logs", "api"):
        (tmp_path / sub).mkdir(exist_ok=True)
    return NodePaths({
        "/run/containerd": str(tmp_path / "state"),
        "/var/lib/containerd": str(tmp_path / "root"),
        "/var/log/pods": str(tmp_path / "logs"),
        "/run/ws-watcher": str(tmp_path / "api"),
        "/var/run/nri": str(tmp_path / "nri"),
        "/proc": "/proc",
    })  # fmt: skip


def template(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i"}], **spec}}  # fmt: skip


def plan(tmp_path: Path, t: dict[str, Any], image_user: int = 65532) -> Any:
    return plan_pod(t, node=node(tmp_path), image="img", image_user=image_user,
                    volumes_dir=tmp_path / "volumes")  # fmt: skip


def test_quantities() -> None:
    assert quantity("20m") == pytest.approx(0.02)
    assert quantity("256Mi") == 256 * 2**20
    assert quantity("1") == 1 and quantity(2) == 2 and quantity("1G") == 10**9


def test_the_shipped_manifest(tmp_path: Path) -> None:
    """What the kubelet would ask for the DaemonSet: no privilege, the mounts as written."""
    p = plan(tmp_path, daemonset_template())
    assert p.namespaces.pid == cri.CONTAINER and p.namespaces.ipc == cri.POD
    assert p.security_context.seccomp.profile_type == cri.SecurityProfile.RuntimeDefault
    (c,) = p.containers
    sc = c.spec.security_context
    assert not sc.privileged and sc.no_new_privs and sc.readonly_rootfs
    assert list(sc.capabilities.drop_capabilities) == ["ALL"]
    assert not sc.capabilities.add_capabilities
    assert sc.run_as_user.value == 0
    mounts = {m.container_path: m for m in c.spec.mounts}
    state = mounts["/host/run/containerd"]
    assert state.host_path == str(tmp_path / "state") and state.readonly
    assert state.propagation == cri.PROPAGATION_HOST_TO_CONTAINER
    assert mounts["/host/proc"].host_path == "/proc"
    assert [m.container_path for m in c.spec.mounts if not m.readonly] == ["/run/ws-watcher"]
    assert c.spec.resources.memory_limit_in_bytes == 256 * 2**20
    assert c.spec.resources.cpu_shares == 20 * 1024 // 1000
    assert c.spec.resources.cpu_quota == 0  # no CPU limit
    assert {k: (v.path, v.port) for k, v in c.probes.items()} == {
        "livenessProbe": ("/healthz", 9102), "readinessProbe": ("/readyz", 9102),
    }  # fmt: skip


def test_run_as_non_root_is_checked_as_the_kubelet_does(tmp_path: Path) -> None:
    root = template(securityContext={"runAsNonRoot": True, "runAsUser": 0})
    with pytest.raises(RigError, match="runAsNonRoot"):
        plan(tmp_path, root)
    image_root = template(securityContext={"runAsNonRoot": True})
    with pytest.raises(RigError, match="runAsNonRoot"):
        plan(tmp_path, image_root, image_user=0)
    assert plan(tmp_path, image_root, image_user=65532)


def test_groups_cpu_limit_and_fs_group(tmp_path: Path) -> None:
    t = template(securityContext={"supplementalGroups": [2001], "fsGroup": 3000})
    t["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "500m", "memory": "64Mi"}}
    (c,) = plan(tmp_path, t).containers
    assert list(c.spec.security_context.supplemental_groups) == [2001, 3000]
    # no request: the limit is the request, as the API server defaults it
    assert c.spec.resources.cpu_shares == 512
    assert c.spec.resources.cpu_quota == 50_000
    assert c.spec.resources.memory_limit_in_bytes == 64 * 2**20


def test_what_it_does_not_emulate_fails(tmp_path: Path) -> None:
    with pytest.raises(Unsupported, match="initContainers"):
        plan(tmp_path, template(initContainers=[]))
    t = template(volumes=[{"name": "v", "hostPath": {"path": "/etc"}}])
    t["spec"]["containers"][0]["volumeMounts"] = [{"name": "v", "mountPath": "/x"}]
    with pytest.raises(Unsupported, match="/etc"):  # never the test machine's own dirs
        plan(tmp_path, t)
    t = template()
    t["spec"]["containers"][0]["livenessProbe"] = {"exec": {"command": ["true"]}}
    with pytest.raises(Unsupported, match="httpGet"):
        plan(tmp_path, t)


def test_node_paths() -> None:
    paths = NodePaths({"/run": "/rig/run", "/run/containerd": "/rig/state"})
    assert paths.host("/run/containerd/containerd.sock") == "/rig/state/containerd.sock"
    assert paths.host("/run/other") == "/rig/run/other"
    with pytest.raises(Unsupported):
        paths.host("/running")
    assert paths.path_map_args(["serve", "--path-map=/run/containerd=/host/run/containerd"]) == [
        "serve", "--path-map=/rig/state=/host/run/containerd",
    ]  # fmt: skip
