"""The rig on whichever containerd it runs (``$WS_WATCHER_CONTAINERD_BIN``, else the system's):
that version's binaries, and what differs between versions, checked on the version it runs.

CI runs this file on 1.6, 1.7 and 2.1; what each version does differently is said where it
is checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

from watcher.testing import host
from watcher.testing.containerd import NAMESPACE, SHIM_SOCKET_DIRS, PrivateContainerd
from watcher.testing.image import PAUSE_IMAGE
from watcher.testing.pods import Pods
from watcher.testing.versions import Version, bin_dir, tool, version_of

V2 = Version(2, 0, 0)
V1_7 = Version(1, 7, 0)
TASKS = "io.containerd.runtime.v2.task"


def _exe(pid: int) -> str:
    return os.path.realpath(f"/proc/{pid}/exe")


def _expected_exe(ctrd: PrivateContainerd, name: str) -> str:
    found = str(ctrd.binaries / name) if ctrd.binaries else shutil.which(name)
    assert found is not None
    return os.path.realpath(found)


def test_the_rig_runs_the_version_it_is_given(containerd: PrivateContainerd, pods: Pods) -> None:
    assert containerd.binaries == bin_dir()
    assert containerd.version == version_of(bin_dir())
    assert containerd.pid is not None
    assert _exe(containerd.pid) == _expected_exe(containerd, "containerd")
    # its shims too: containerd looks them up on PATH, which starts with its own dir
    pods.run_pod("ws-version")
    shims = host.shims_of(containerd.address)
    assert shims
    assert {_exe(p) for p in shims} == {_expected_exe(containerd, "containerd-shim-runc-v2")}


def _effective_config(ctrd: PrivateContainerd) -> dict[str, Any]:
    """``containerd config dump``: the config as this version reads ours (2.x: migrated)."""
    done = subprocess.run(
        [tool("containerd", ctrd.binaries), "--config", str(ctrd.config_path), "config", "dump"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return tomllib.loads(done.stdout)


def test_the_config_as_this_version_reads_it(containerd: PrivateContainerd) -> None:
    config = _effective_config(containerd)
    plugins = config["plugins"]
    if containerd.version >= V2:
        # 2.x migrates the version-2 config to version 3: CRI's settings move to plugins of
        # their own
        assert config["version"] == 3
        images = plugins["io.containerd.cri.v1.images"]
        runtime = plugins["io.containerd.cri.v1.runtime"]
        assert images["pinned_images"]["sandbox"] == PAUSE_IMAGE
        assert images["snapshotter"] == containerd.snapshotter
        runc = runtime["containerd"]["runtimes"]["runc"]
    else:
        cri = plugins["io.containerd.grpc.v1.cri"]
        assert cri["sandbox_image"] == PAUSE_IMAGE
        assert cri["containerd"]["snapshotter"] == containerd.snapshotter
        runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["Root"] == str(containerd.base / "runc")
    assert runc["options"]["SystemdCgroup"] is False
    assert config["root"] == str(containerd.base / "root")
    assert config["state"] == str(containerd.base / "state")


def test_nri_stays_in_the_base(containerd: PrivateContainerd) -> None:
    plugins = _effective_config(containerd)["plugins"]
    if containerd.version < V1_7:
        assert "io.containerd.nri.v1.nri" not in plugins  # 1.6 has no NRI
        return
    nri = plugins["io.containerd.nri.v1.nri"]
    for key in ("socket_path", "plugin_path", "plugin_config_path"):
        assert Path(nri[key]).is_relative_to(containerd.base), key
    socket = Path(nri["socket_path"])
    if containerd.version >= V2:
        # on by default from 2.0: the socket is made, here and not at /var/run/nri/nri.sock
        assert nri["disable"] is False
        assert stat.S_ISSOCK(socket.stat().st_mode)
    else:
        assert nri["disable"] is True  # 1.7 ships it off
        assert not socket.exists()


def test_images_are_unpacked_for_the_rigs_snapshotter(
    native_containerd: PrivateContainerd, native_pods: Pods
) -> None:
    # 2.x's ctr imports through the transfer service, which unpacks for the snapshotters
    # of its unpack_config only (overlayfs by default): the rig's config names native too
    pod = native_pods.run_pod("ws-native-import")
    info = native_containerd.container_info(pod.containers["workspace"])
    assert info["Snapshotter"] == "native"


def _shim_address(task: Path) -> str:
    """Where a task's shim listens, as its state dir says: 1.x an ``address`` file, 2.x a
    ``bootstrap.json`` (``{"version": 3, "address": …, "protocol": "ttrpc"}``) instead."""
    if (task / "address").exists():
        return (task / "address").read_text().strip()
    bootstrap = json.loads((task / "bootstrap.json").read_text())
    assert bootstrap["protocol"] == "ttrpc"
    return str(bootstrap["address"])


def test_shim_sockets_are_where_the_rig_derives_them(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    # the clean-up removes shim sockets by name, derived as containerd names them (it never
    # reads a state file for a path): the derivation must hold on every version
    pod = pods.run_pod("ws-shim")
    tasks = containerd.base / "state" / TASKS / NAMESPACE
    derived = hashlib.sha256(f"{containerd.address}/{NAMESPACE}/{pod.sandbox_id}".encode())
    expected = f"unix://{SHIM_SOCKET_DIRS[0] / derived.hexdigest()}"
    # CRI groups a pod's containers in the sandbox's shim
    for cid in (pod.sandbox_id, *pod.containers.values()):
        assert _shim_address(tasks / cid) == expected
        assert (tasks / cid / "rootfs").is_dir()  # the task rootfs the watcher looks for
    assert (tasks / pod.sandbox_id / "address").exists() == (containerd.version < V2)
