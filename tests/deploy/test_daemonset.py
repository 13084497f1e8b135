"""The DaemonSet run for real: its pod template through CRI on a private containerd, as a
kubelet would run it, with the image made from the wheel (needs root).

What is the manifest's, unchanged: the container's args, its security context (user,
groups, capabilities, no-new-privileges, seccomp, read-only root file system), its
resources, its volume mounts (read-only flags, HostToContainer propagation), the pod's
namespaces. What stands in for a node is ``watcher.testing.deployment``'s (the rig's dirs
for host paths, the host's network, the image made from the wheel).

Checked from inside the watcher's container (CRI ExecSync, as ``kubectl exec``): the
watcher there sees the rig's workspace pods with their PIDs, cgroups, rootfs and upperdirs,
mapped to paths that hold the workspace's own files when read in that container; the
process runs with exactly the privileges the manifest grants. Then its probes, as the
kubelet's prober calls them, and its API on the socket in the host directory the manifest
gives it. NRI: where the rig's containerd has it (1.7 and later: turned on, as 2.x ships
it), the manifest's ``--nri-socket`` reaches it through the NRI socket's host directory, and
the watcher's metrics show it registered and told of the workspaces through NRI (as root; as
non-root, NRI's socket dir is root's: not connected); on 1.6, never connected.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from containerd_protos.cri.runtime.v1 import api_pb2 as cri
from watcher.testing import Pods, PrivateContainerd, host, mk2_labels, reclaim_stale, versions
from watcher.testing.config import NRI_SINCE
from watcher.testing.deployment import (
    Deployed,
    daemonset_template,
    deploy,
    import_image,
    node_paths,
)
from watcher.testing.kubelet import Probe, http_get_probe, quantity
from watcher.testing.wheel_image import WheelImage, build_wheel_image

pytestmark = pytest.mark.containerd

SOCKET_GID = 2001
"""The group the non-root variant gives containerd's socket (the manifest's example)."""
NONROOT = 65532
WORKSPACES = 3
STARTUP = 60.0
"""How long the kubelet's probes may take to pass after the start (the image imports
Python from a cold page cache on a loaded CI machine)."""


@pytest.fixture(scope="module")
def image() -> WheelImage:
    return build_wheel_image()


def _node(ctrd: PrivateContainerd, image: WheelImage) -> Iterator[PrivateContainerd]:
    reclaim_stale()
    try:
        ctrd.start()
        ctrd.import_images()
        import_image(ctrd, image)
        yield ctrd
    finally:
        ctrd.cleanup()


@pytest.fixture(scope="module")
def nri() -> bool:
    """Whether the rig's containerd has NRI (1.7 and later): its nodes then serve it, as a
    2.x node does by default and a 1.7 node with NRI turned on."""
    binaries = versions.bin_dir()
    host.ensure_installed(binaries)  # the system's containerd, before asking its version
    return versions.version_of(binaries) >= NRI_SINCE


@pytest.fixture(scope="module")
def node(image: WheelImage, nri: bool) -> Iterator[PrivateContainerd]:
    """A containerd laid out as a node's, its socket root's as on a stock node."""
    yield from _node(PrivateContainerd(node_layout=True, nri=nri), image)


@pytest.fixture(scope="module")
def grouped_node(image: WheelImage, nri: bool) -> Iterator[PrivateContainerd]:
    """The same, its socket given a group (``[grpc] gid``): the non-root set-up."""
    yield from _node(PrivateContainerd(node_layout=True, socket_gid=SOCKET_GID, nri=nri), image)


def start_workspaces(pods: Pods, n: int) -> list[tuple[str, str]]:
    """``n`` workspace pods, each with a marker file written through CRI (no race with the
    container's start): (instance id, container id)."""
    made = []
    for _ in range(n):
        iid = f"inst-{uuid.uuid4().hex[:8]}"
        pod = pods.run_pod(f"ws-{iid}", labels=mk2_labels(iid, f"ws-{iid}", "owner-1"))
        cid = pod.containers["workspace"]
        done = pods.cri.exec_sync(cid, ["sh", "-c", f"echo {iid} > /marker"])
        assert done.exit_code == 0, done.stderr
        made.append((iid, cid))
    return made


def upperdir(ctrd: PrivateContainerd, cid: str) -> str:
    out = ctrd.ctr("snapshots", "--snapshotter", "overlayfs", "mounts", "/x", cid)
    return out.split("upperdir=", 1)[1].split(",", 1)[0].split()[0]


_READ = """
import json, sys
out = {}
for name, path in json.loads(sys.argv[1]).items():
    try:
        with open(path) as f:
            out[name] = f.read()
    except OSError as exc:
        out[name] = f"error: {exc}"
print(json.dumps(out))
"""

_PRIVILEGES = """
import errno, json, os
status = dict(line.split(":", 1) for line in open("/proc/1/status").read().splitlines())
try:
    open("/written-to-root", "w")
    root_fs = "writable"
except OSError as exc:
    root_fs = errno.errorcode[exc.errno]
print(json.dumps({
    "uid": status["Uid"].split(), "gid": status["Gid"].split(),
    "groups": status["Groups"].split(), "CapEff": status["CapEff"].strip(),
    "CapPrm": status["CapPrm"].strip(), "CapBnd": status["CapBnd"].strip(),
    "NoNewPrivs": status["NoNewPrivs"].strip(), "Seccomp": status["Seccomp"].strip(),
    "root_fs": root_fs, "cmdline": open("/proc/1/cmdline").read().split("\\0")[:2],
}))
"""


def check_sees_workspaces(
    ctrd: PrivateContainerd, pods: Pods, watcher: Deployed, *, files: bool = True
) -> dict[str, dict[str, Any]]:
    """Each workspace as the watcher in the container reports it, against the rig's truth;
    with ``files``, its paths read in the container hold the workspace's own files (not as
    non-root: the files are root's, and containerd's snapshot dirs root's only). Returns the
    workspaces by instance id."""
    seen_by_instance = {}
    for iid, cid in start_workspaces(pods, WORKSPACES):
        ws = watcher.ws_watcher("wait", iid, "--timeout", "60s", "-o", "json")
        assert ws["container_id"] == cid
        assert ws["pid"] == pods.cri.container_pid(cid)
        spec = ctrd.container_info(cid)["Spec"]
        assert isinstance(spec, dict)
        assert ws["cgroup_path"] == spec["linux"]["cgroupsPath"]
        task = f"io.containerd.runtime.v2.task/k8s.io/{cid}/rootfs"
        assert ws["rootfs"] == f"/host/run/containerd/{task}"
        host_upper = upperdir(ctrd, cid)
        assert ws["upperdir"] == "/host/var/lib/containerd" + host_upper.removeprefix(
            str(ctrd.root_dir)
        )
        paths = {"cgroup": f"/host/proc/{ws['pid']}/cgroup"}
        if files:
            paths |= {"rootfs": f"{ws['rootfs']}/marker", "upperdir": f"{ws['upperdir']}/marker"}
        read = watcher.python(_READ, json.dumps(paths))
        assert cid in read["cgroup"]
        if files:
            assert read["rootfs"] == read["upperdir"] == f"{iid}\n"
        seen_by_instance[iid] = ws
    listed = watcher.ws_watcher("ls", "-o", "json")
    assert {w["instance_id"] for w in listed} == set(seen_by_instance)
    return seen_by_instance


def check_privileges(watcher: Deployed, uid: int, gid: int, groups: Sequence[int]) -> None:
    """The watcher's own process (PID 1 of its container) holds what the manifest grants."""
    seen = watcher.python(_PRIVILEGES)
    assert seen["uid"] == [str(uid)] * 4
    assert seen["gid"] == [str(gid)] * 4
    assert sorted(int(g) for g in seen["groups"]) == sorted({gid, *groups})
    assert seen["CapEff"] == seen["CapPrm"] == seen["CapBnd"] == "0000000000000000"
    assert seen["NoNewPrivs"] == "1"
    assert seen["Seccomp"] == "2"  # a filter: RuntimeDefault
    assert seen["root_fs"] == errno.errorcode[errno.EROFS]
    assert Path(seen["cmdline"][1]).name == "ws-watcher"


def check_resources(ctrd: PrivateContainerd, watcher: Deployed) -> None:
    (container,) = daemonset_template()["spec"]["containers"]
    limit = quantity(container["resources"]["limits"]["memory"])
    spec = ctrd.container_info(watcher.cid)["Spec"]
    assert isinstance(spec, dict)
    assert spec["linux"]["resources"]["memory"]["limit"] == limit


def probe_ok(probe: Probe) -> bool:
    try:
        return 200 <= http_get_probe(probe, "127.0.0.1") < 400  # the kubelet's success
    except OSError:
        return False  # not listening (yet)


def check_probes(watcher: Deployed) -> None:
    """The kubelet's prober: readiness probed every period until it passes (a readiness probe
    only polls: /readyz has nothing to wait on) within the start-up allowance; then
    liveness passes at once."""
    ready = watcher.probe("readinessProbe")
    deadline = time.monotonic() + STARTUP
    while not probe_ok(ready):
        assert time.monotonic() < deadline, f"{ready.path} not ready after {STARTUP}s"
        time.sleep(ready.period)  # the kubelet's period between probes
    assert probe_ok(watcher.probe("livenessProbe"))


_SAME = ("container_id", "pid", "cgroup_path", "rootfs", "upperdir", "pod_uid")


def check_serves(ctrd: PrivateContainerd, watcher: Deployed,
                 workspaces: Mapping[str, Mapping[str, Any]]) -> None:  # fmt: skip
    """The serving watcher: its probes as the kubelet calls them, its metrics, and its API on
    the socket in the host directory the manifest gives it, answering as the CLI did."""
    check_probes(watcher)
    metrics = replace(watcher.probe("livenessProbe"), path="/metrics")
    assert http_get_probe(metrics, "127.0.0.1") == 200
    sock = watcher.api_socket  # in the host dir of the manifest's /run/ws-watcher volume
    assert sock.parent == Path(node_paths(ctrd).host("/run/ws-watcher"))
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o660
    for iid, ws in workspaces.items():
        status, served = watcher.api_get(f"/v1/workspaces/{iid}/wait?for=running&timeout=60s")
        assert status == 200, served
        assert {k: served[k] for k in _SAME} == {k: ws[k] for k in _SAME}
    status, listed = watcher.api_get("/v1/workspaces")
    assert status == 200, listed
    assert {w["instance_id"] for w in listed} == set(workspaces)


NRI_CONNECTED = "ws_watcher_nri_connected"
NRI_REGISTRATIONS = "ws_watcher_nri_registrations_total"
NRI_DELIVERED = "ws_watcher_nri_events_delivered_total"
NRI_EVENTS = 'ws_watcher_events_total{topic="nri"}'  # as `series` keys it
NRI_PER_WORKSPACE = 3
"""NRI calls per workspace pod, at least, each handed to the index with one input at least:
RunPodSandbox, CreateContainer, StartContainer (``watcher.nri_source``)."""


def series(name: str, labels: Mapping[str, str] | None = None) -> str:
    """A metric's series as `metrics` keys it: ``name{a="x",b="y"}``."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def metrics(watcher: Deployed) -> dict[str, float]:
    """Each sample of a scrape, by its series, parsed as Prometheus does."""
    return {
        series(sample.name, sample.labels): sample.value
        for family in text_string_to_metric_families(watcher.metrics_text())
        for sample in family.samples
    }


def scrape(watcher: Deployed) -> dict[str, float] | None:
    """Its metrics, or None while nothing listens (yet)."""
    try:
        return metrics(watcher)
    except OSError:
        return None


def wait_for_metrics(
    watcher: Deployed, what: str, ok: Callable[[dict[str, float]], bool]
) -> dict[str, float]:
    """The first scrape ``ok`` accepts, scraped every 0.2 s (nothing else tells when the
    watcher's counters move) within the start-up allowance."""
    seen: list[dict[str, float]] = []

    def accepted() -> bool:
        metrics = scrape(watcher)
        if metrics is None or not ok(metrics):
            return False
        seen.append(metrics)
        return True

    host.wait_until(what, accepted, STARTUP, interval=0.2)
    return seen[-1]


def check_nri_registered(watcher: Deployed) -> dict[str, float]:
    """Registered with the rig containerd's NRI, through the manifest's ``--nri-socket``
    (the NRI socket's host directory): ``ws_watcher_nri_connected 1``. Returns the scrape."""
    return wait_for_metrics(
        watcher, "the deployed watcher's NRI registration",
        lambda m: m.get(NRI_CONNECTED) == 1 and m.get(NRI_REGISTRATIONS, 0) >= 1,
    )  # fmt: skip


def check_nri_told(watcher: Deployed, before: Mapping[str, float], workspaces: int) -> None:
    """The workspace pods started since the scrape ``before`` came through NRI too: its calls
    delivered to the index and counted as NRI's events, still registered."""
    want = NRI_PER_WORKSPACE * workspaces

    def told(m: Mapping[str, float]) -> bool:
        return (m.get(NRI_DELIVERED, 0) - before[NRI_DELIVERED] >= want
                and m.get(NRI_EVENTS, 0) - before.get(NRI_EVENTS, 0) >= want)  # fmt: skip

    after = wait_for_metrics(watcher, f"NRI's calls for {workspaces} workspaces", told)
    assert after[NRI_CONNECTED] == 1
    assert after["ws_watcher_nri_events_dropped_total"] == 0


def check_nri_not_connected(watcher: Deployed) -> None:
    """Nothing NRI serves is reachable (1.6, or as non-root: NRI's dir and socket are
    root's): the plugin runs (``--nri-socket`` is given), never registered; the watcher
    works on the event stream alone (checked before this)."""
    scraped = metrics(watcher)
    assert scraped[NRI_CONNECTED] == 0
    assert scraped[NRI_REGISTRATIONS] == 0
    assert scraped.get(NRI_EVENTS, 0) == 0


def check_running(pods: Pods, watcher: Deployed) -> None:
    """Still running at the end: nothing above made it crash."""
    status = pods.cri.container_status(watcher.cid)
    assert status.state == cri.CONTAINER_RUNNING, (status.reason, status.message)


def test_daemonset_as_shipped(node: PrivateContainerd, image: WheelImage, nri: bool) -> None:
    """The manifest as it is: uid 0 without capabilities, on a stock socket (root:root);
    NRI's socket (root's) reached where containerd serves it."""
    with Pods(node) as pods:
        watcher = deploy(node, pods, image, daemonset_template())
        check_privileges(watcher, uid=0, gid=0, groups=[])
        check_resources(node, watcher)
        registered = check_nri_registered(watcher) if nri else None
        workspaces = check_sees_workspaces(node, pods, watcher)
        check_serves(node, watcher, workspaces)
        if registered is not None:
            check_nri_told(watcher, registered, len(workspaces))
        else:
            check_nri_not_connected(watcher)
        check_running(pods, watcher)


def nonroot(template: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's documented non-root variant (its comment, README "Running on a node")."""
    variant: dict[str, Any] = json.loads(json.dumps(template))
    spec = variant["spec"]
    spec["securityContext"]["supplementalGroups"] = [SOCKET_GID]
    sc = spec["containers"][0]["securityContext"]
    sc.update(runAsUser=NONROOT, runAsGroup=NONROOT, runAsNonRoot=True)
    return variant


def test_daemonset_non_root(grouped_node: PrivateContainerd, image: WheelImage) -> None:
    """Non-root where the socket's group allows it: the same checks, as uid 65532."""
    node = grouped_node
    # the README's node preparation for a non-root API socket: its directory the user's
    api_dir = Path(node_paths(node).host("/run/ws-watcher"))
    api_dir.mkdir(mode=0o750)
    os.chown(api_dir, NONROOT, SOCKET_GID)
    with Pods(node) as pods:
        watcher = deploy(node, pods, image, nonroot(daemonset_template()))
        check_privileges(watcher, uid=NONROOT, gid=NONROOT, groups=[SOCKET_GID])
        workspaces = check_sees_workspaces(node, pods, watcher, files=False)
        check_serves(node, watcher, workspaces)
        check_nri_not_connected(watcher)  # NRI's socket dir is root's, served or not
        check_running(pods, watcher)
