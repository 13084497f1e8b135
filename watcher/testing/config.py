"""The containerd configuration (version 2 format) of a private, self-contained containerd.

Everything containerd writes lives under one base dir, so several rigs (and a system
containerd) can coexist and a clean-up is "stop, kill, unmount, remove the dir". Valid for
containerd 1.6, 1.7 and 2.x (Debian 12, 13 and sid). 2.x migrates this format to its own
version 3 when it loads it: the CRI settings move to plugins of their own
(``io.containerd.cri.v1.images``: ``snapshotter``, ``pinned_images.sandbox``;
``io.containerd.cri.v1.runtime``: runtimes, ``restrict_oom_score_adj``), which
``containerd config dump`` shows; the values are ours either way.

What differs by version is rendered by version (``version``, None: 1.6):

* from 1.7, NRI's socket and plugin dirs go under the base dir. 2.x turns NRI on by default
  with its socket at ``/var/run/nri/nri.sock``: a private containerd would take the host's
  NRI socket (and two rigs each other's), and run the host's NRI plugins. 1.7 leaves NRI
  off; the paths are set anyway, should a test turn it on.
* from 1.7, the transfer service (what 2.x's ``ctr images import`` goes through) unpacks
  for CRI's snapshotter: by default it unpacks for ``overlayfs`` only, and an import for
  ``native`` fails with "no unpack platforms defined".
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from .host import CAP_SYS_RESOURCE, has_capability
from .image import GOARCH, PAUSE_IMAGE
from .versions import Version

NRI_SINCE = Version(1, 7, 0)
"""The first version with NRI and the transfer service (whose settings are rendered)."""

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
    version: Version | None = None,
) -> str:
    """The ``config.toml`` text for a containerd rooted at ``base`` listening on ``socket``.

    ``snapshotter`` is the one CRI makes its containers' rootfs with; images must be imported
    into the same one (``ctr images import --snapshotter``), or CRI finds them unpacked nowhere.

    ``restrict_oom`` defaults to "this process lacks CAP_SYS_RESOURCE": without it runc cannot
    set the sandbox's ``oom_score_adj=-998`` and fails with ``can't get final child's PID from
    pipe: EOF``; the CRI option ``restrict_oom_score_adj`` caps the value at our own instead.

    ``version`` is the version of the containerd that will load it (None: 1.6); see the
    module's docstring for what depends on it.
    """
    if restrict_oom is None:
        restrict_oom = not has_capability(CAP_SYS_RESOURCE)
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    disabled = [f"io.containerd.snapshotter.v1.{name}" for name in DISABLED_SNAPSHOTTERS]
    since_1_7 = version is not None and version >= NRI_SINCE
    newer = _nri_and_transfer(base, snapshotter) if since_1_7 else ""
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
{newer}"""


def _nri_and_transfer(base: Path, snapshotter: str) -> str:
    arch = GOARCH.get(platform.machine(), platform.machine())
    return f"""
[plugins."io.containerd.nri.v1.nri"]
  socket_path = {_q(str(base / "nri.sock"))}
  plugin_path = {_q(str(base / "nri" / "plugins"))}
  plugin_config_path = {_q(str(base / "nri" / "conf.d"))}

[[plugins."io.containerd.transfer.v1.local".unpack_config]]
  platform = {_q(f"linux/{arch}")}
  snapshotter = {_q(snapshotter)}
"""
