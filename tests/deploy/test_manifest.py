"""examples/daemonset.yaml: valid for current Kubernetes versions, and least privilege.

Validation is offline: kubernetes-validate (PyPI) ships the JSON schemas of each Kubernetes
release's API; the strict ones refuse unknown fields, so a misspelt key fails here rather
than being dropped silently by a lenient API server client. The properties below are the
manifest's promises (README: "Running on a node"); test_daemonset.py runs the pod.
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from watcher.testing.kubelet import quantity

MANIFEST = Path(__file__).parents[2] / "examples" / "daemonset.yaml"
KUBERNETES = ("1.35", "1.36", "1.37")
"""The newest three releases whose schemas kubernetes-validate ships (it has 1.25 to 1.37)."""
PEAK_RSS_MIB = 67
"""The deployed watcher's measured peak RSS (``benchmarks/deploy_rss.py``: 62 MiB synced and
idle, 63 MiB with 100 workspaces): the request's floor."""


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def pod_spec() -> dict[str, Any]:
    (ds,) = [d for d in documents() if d["kind"] == "DaemonSet"]
    spec: dict[str, Any] = ds["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (c,) = pod_spec()["containers"]
    assert isinstance(c, dict)
    return c


def options(name: str) -> list[str]:
    """The values of ``--name=VALUE`` among the container's args."""
    return [a.split("=", 1)[1] for a in container()["args"] if a.startswith(f"--{name}=")]


def host_mounts() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(volumeMount, its hostPath) for each hostPath volume the container mounts."""
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    for mount in container()["volumeMounts"]:
        if "hostPath" in volumes[mount["name"]]:
            yield mount, volumes[mount["name"]]["hostPath"]


def mount_of(host_path: str) -> dict[str, Any]:
    (found,) = [m for m, source in host_mounts() if source["path"] == host_path]
    return found


@pytest.mark.parametrize("version", KUBERNETES)
def test_validates_against_the_schema(version: str) -> None:
    for doc in documents():
        assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_the_validation_is_not_vacuous() -> None:
    """A misspelt field and a wrong type fail: the strict schemas are in force."""
    (ds,) = [d for d in documents() if d["kind"] == "DaemonSet"]
    typo = copy.deepcopy(ds)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    wrong = copy.deepcopy(ds)
    wrong["spec"]["template"]["spec"]["hostPID"] = "no"
    for bad in (typo, wrong):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, KUBERNETES[-1], strict=True)


def test_no_privilege_beyond_the_socket() -> None:
    spec, sc = pod_spec(), container()["securityContext"]
    assert spec["automountServiceAccountToken"] is False
    for namespace in ("hostPID", "hostNetwork", "hostIPC"):
        assert not spec.get(namespace), namespace
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    for seccomp in (spec["securityContext"], sc):
        assert seccomp["seccompProfile"] == {"type": "RuntimeDefault"}
    # root's uid only as the stock socket's owner, said beside it (runAsNonRoot: false)
    assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False


def test_the_socket_directory_is_mounted_not_the_socket() -> None:
    (address,) = options("address")
    for _, source in host_mounts():
        assert source.get("type") != "Socket" and not source["path"].endswith(".sock")
    state = mount_of("/run/containerd")
    assert posixpath.dirname(address) == state["mountPath"]
    assert state["readOnly"] is True
    # rootfs mounts made after the pod started must show up in it
    assert state["mountPropagation"] == "HostToContainer"


def test_nri_socket_directory_is_mounted_read_only() -> None:
    """NRI's socket is made anew by each containerd start, as containerd's own: its directory
    is mounted (read-only: connecting needs no write access), and the watcher is pointed into
    it (`--nri-socket`: the default applies only at containerd's default address)."""
    (nri_socket,) = options("nri-socket")
    nri = mount_of("/var/run/nri")
    assert posixpath.dirname(nri_socket) == nri["mountPath"]
    assert nri["readOnly"] is True
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    # a node without NRI (containerd 1.6, 1.7 with NRI off) has no such directory
    assert volumes[nri["name"]]["hostPath"]["type"] == "DirectoryOrCreate"


def test_host_directories_are_read_only_but_the_api_socket_s() -> None:
    (api_socket,) = options("socket")
    writable = [m for m, _ in host_mounts() if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == [posixpath.dirname(api_socket)]
    assert mount_of("/var/log/pods")["readOnly"] is True


def test_path_maps_and_proc_match_the_mounts() -> None:
    """Each --path-map HOST=LOCAL is a hostPath HOST mounted at LOCAL; --proc is the host's
    /proc; the log dir is mapped (the exited-at-start rule reads log files)."""
    maps = dict(m.split("=", 1) for m in options("path-map"))
    assert set(maps) == {"/run/containerd", "/var/lib/containerd", "/var/log/pods"}
    for host, local in maps.items():
        assert mount_of(host)["mountPath"] == local
    assert options("proc") == [mount_of("/proc")["mountPath"]]


def test_probes_on_the_metrics_port() -> None:
    c = container()
    (listen,) = options("metrics-listen")
    port = int(listen.rpartition(":")[2])
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[kind]["httpGet"]
        assert get["path"] == path
        assert named[get["port"]] == port


def test_resources_from_the_measured_rss() -> None:
    resources = container()["resources"]
    request = quantity(resources["requests"]["memory"])
    limit = quantity(resources["limits"]["memory"])
    assert request >= PEAK_RSS_MIB * 2**20
    assert limit > request
    assert "cpu" not in resources["limits"]  # a CPU limit throttles event bursts; none


def test_priority_class_is_defined_or_a_system_one() -> None:
    name = pod_spec()["priorityClassName"]
    defined = {d["metadata"]["name"] for d in documents() if d["kind"] == "PriorityClass"}
    assert name in defined | {"system-node-critical", "system-cluster-critical"}


def test_every_grant_says_why() -> None:
    """A comment beside each volume mount, capability and namespace setting: the manifest's
    reasons live next to what they justify."""
    lines = MANIFEST.read_text().splitlines()

    def commented(pattern: str) -> None:
        # the first occurrence: the grant (a volume's mount comes before its volume)
        i = next(i for i, line in enumerate(lines) if re.search(pattern, line))
        around = lines[max(0, i - 8) : i + 1]
        assert any("#" in x for x in around), f"no reason given near: {lines[i].strip()}"

    for mount, _ in host_mounts():
        commented(rf"^\s+- name: {re.escape(mount['name'])}$")
    for key in ("hostPID", "hostNetwork", "capabilities", "runAsUser", "privileged"):
        commented(rf"^\s+{key}:")
