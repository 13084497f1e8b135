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
  off; the paths are set anyway, and ``nri=True`` turns it on (``disable = false``, the same
  key in 1.7 and 2.x) for the NRI plugin's tests. The socket has a dir of its own
  (``nri_socket_path``), as a node's ``/var/run/nri``: a pod can mount it alone.
* from 1.7, the transfer service (what 2.x's ``ctr images import`` goes through) unpacks
  for CRI's snapshotter: by default it unpacks for ``overlayfs`` only, and an import for
  ``native`` fails with "no unpack platforms defined".
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from .errors import RigError
from .host import CAP_SYS_RESOURCE, has_capability
from .image import GOARCH, PAUSE_IMAGE
from .versions import Version

NRI_SINCE = Version(1, 7, 0)
"""The first version with NRI and the transfer service (whose settings are rendered)."""
NRI_DIR = "nri-run"
"""The dir of NRI's socket under the base dir: its own, as a node's ``/var/run/nri``, so that
a pod mounts NRI's socket dir and nothing else of the rig (``watcher.testing.deployment``)."""

DISABLED_SNAPSHOTTERS = ("btrfs", "zfs", "aufs", "devmapper")
"""They cannot initialise without their kernel modules or pools; disabled, the log stays clean."""
DEFAULT_SNAPSHOTTER = "overlayfs"
"""What nodes mostly run; ``native`` (plain copies, the task's rootfs a bind mount, no upper
layer) stands in for nodes without overlay: devmapper, zfs, btrfs, remote snapshotters."""


def nri_socket_path(base: Path) -> Path:
    """Where the config puts NRI's socket (from 1.7) for a containerd rooted at ``base``."""
    return base / NRI_DIR / "nri.sock"


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
    socket_gid: int | None = None,
    nri: bool = False,
    nri_request_timeout: float | None = None,
) -> str:
    """The ``config.toml`` text for a containerd rooted at ``base`` listening on ``socket``.

    ``snapshotter`` is the one CRI makes its containers' rootfs with; images must be imported
    into the same one (``ctr images import --snapshotter``), or CRI finds them unpacked nowhere.

    ``restrict_oom`` defaults to "this process lacks CAP_SYS_RESOURCE": without it runc cannot
    set the sandbox's ``oom_score_adj=-998`` and fails with ``can't get final child's PID from
    pipe: EOF``; the CRI option ``restrict_oom_score_adj`` caps the value at our own instead.

    ``version`` is the version of the containerd that will load it (None: 1.6); see the
    module's docstring for what depends on it.

    ``socket_gid``: the group containerd gives its socket (``[grpc] gid``, mode 0660); None
    leaves containerd's default, root's.

    ``nri``: turn NRI on (from 1.7; its socket is ``nri_socket_path(base)``), whatever the version's
    default; ``nri_request_timeout``: how long containerd waits for a plugin's reply (its
    default: 2 s). False/None leave the version's defaults.

    Raises:
        RigError: ``nri`` for a containerd before 1.7.
    """
    if restrict_oom is None:
        restrict_oom = not has_capability(CAP_SYS_RESOURCE)
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    disabled = [f"io.containerd.snapshotter.v1.{name}" for name in DISABLED_SNAPSHOTTERS]
    since_1_7 = version is not None and version >= NRI_SINCE
    if nri and not since_1_7:
        raise RigError(f"containerd {version or '1.6'} has no NRI (it came with {NRI_SINCE})")
    newer = _nri_and_transfer(base, snapshotter, nri, nri_request_timeout) if since_1_7 else ""
    gid = f"\n  gid = {int(socket_gid)}" if socket_gid is not None else ""
    return f"""\
version = 2
root = {_q(str(base / "root"))}
state = {_q(str(base / "state"))}
oom_score = 0
disabled_plugins = {_q(disabled)}

[grpc]
  address = {_q(str(socket))}{gid}

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


def _nri_and_transfer(
    base: Path, snapshotter: str, nri: bool, request_timeout: float | None
) -> str:
    arch = GOARCH.get(platform.machine(), platform.machine())
    nri_on = "\n  disable = false" if nri else ""
    if request_timeout is not None:  # a Go duration, as `containerd config dump` shows it
        nri_on += f"\n  plugin_request_timeout = {_q(f'{int(request_timeout * 1000)}ms')}"
    return f"""
[plugins."io.containerd.nri.v1.nri"]{nri_on}
  socket_path = {_q(str(nri_socket_path(base)))}
  plugin_path = {_q(str(base / "nri" / "plugins"))}
  plugin_config_path = {_q(str(base / "nri" / "conf.d"))}

[[plugins."io.containerd.transfer.v1.local".unpack_config]]
  platform = {_q(f"linux/{arch}")}
  snapshotter = {_q(snapshotter)}
"""
