"""The containerd configuration (version 2 format) of a private, self-contained containerd.

Everything containerd writes lives under one base dir, so several rigs (and a system
containerd) can coexist and a clean-up is "stop, kill, unmount, remove the dir". Valid for
containerd 1.6 and 1.7 (Debian 12 and 13).
"""

from __future__ import annotations

import json
from pathlib import Path

from .host import CAP_SYS_RESOURCE, has_capability
from .image import PAUSE_IMAGE

DISABLED_SNAPSHOTTERS = ("btrfs", "zfs", "aufs", "devmapper")
"""They cannot initialise without their kernel modules or pools; disabled, the log stays clean."""
DEFAULT_SNAPSHOTTER = "overlayfs"
"""What nodes mostly run; ``native`` (plain copies, the task's rootfs a bind mount, no upper
layer) stands in for nodes without overlay: devmapper, zfs, btrfs, remote snapshotters."""


def _q(value: object) -> str:
    # TOML basic strings and booleans are JSON-compatible for the values used here
    return json.dumps(value)


def render_config(
    base: Path,
    socket: Path,
    *,
    sandbox_image: str = PAUSE_IMAGE,
    restrict_oom: bool | None = None,
    snapshotter: str = DEFAULT_SNAPSHOTTER,
) -> str:
    """The ``config.toml`` text for a containerd rooted at ``base`` listening on ``socket``.

    ``snapshotter`` is the one CRI makes its containers' rootfs with; images must be imported
    into the same one (``ctr images import --snapshotter``), or CRI finds them unpacked nowhere.

    ``restrict_oom`` defaults to "this process lacks CAP_SYS_RESOURCE": without it runc cannot
    set the sandbox's ``oom_score_adj=-998`` and fails with ``can't get final child's PID from
    pipe: EOF``; the CRI option ``restrict_oom_score_adj`` caps the value at our own instead.
    """
    if restrict_oom is None:
        restrict_oom = not has_capability(CAP_SYS_RESOURCE)
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    disabled = [f"io.containerd.snapshotter.v1.{name}" for name in DISABLED_SNAPSHOTTERS]
    return f"""\
version = 2
root = {_q(str(base / "root"))}
state = {_q(str(base / "state"))}
oom_score = 0
disabled_plugins = {_q(disabled)}

[grpc]
  address = {_q(str(socket))}

[plugins."io.containerd.internal.v1.opt"]
  path = {_q(str(base / "opt"))}

{cri}]
  sandbox_image = {_q(sandbox_image)}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  restrict_oom_score_adj = {_q(restrict_oom)}

{cri}.containerd]
  snapshotter = {_q(snapshotter)}
  default_runtime_name = "runc"

{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = {_q(str(base / "runc"))}

{cri}.cni]
  bin_dir = {_q(str(base / "cni" / "bin"))}
  conf_dir = {_q(str(base / "cni" / "conf"))}
"""
