"""The real-containerd rig for programs: what `ws-watcher demo` and the tests' fixtures share.

Rules:

* No pytest, nor anything of the test suite's tooling (the fake containerd, the fixtures,
  `watching`): a shipped program imports the rig from here, and importing it loads only the
  rig (tests/unit/test_layers.py pins it).
* It adds nothing to the rig but `missing_packages`; the rest are the rig's own names,
  gathered once (`watcher.testing` re-exports them).
"""

from __future__ import annotations

import shutil

from . import host
from .containerd import NAMESPACE, PrivateContainerd, reclaim_stale
from .cri_client import CRIClient
from .errors import CRIError, RigError
from .host import PACKAGES, ensure_installed
from .image import BUSYBOX, PAUSE_IMAGE, WORKSPACE_IMAGE, ImageDef, build_image_layout
from .labels import mk1_labels, mk2_labels
from .pods import ContainerSpec, Pod, Pods


def missing_packages() -> list[str]:
    """The Debian packages the rig needs and this host lacks (what the rig would install)."""
    missing = sorted({pkg for exe, pkg in PACKAGES.items() if shutil.which(exe) is None})
    if not BUSYBOX.is_file():
        missing.append("busybox-static")
    return missing


__all__ = [
    "NAMESPACE",
    "PAUSE_IMAGE",
    "WORKSPACE_IMAGE",
    "CRIClient",
    "CRIError",
    "ContainerSpec",
    "ImageDef",
    "Pod",
    "Pods",
    "PrivateContainerd",
    "RigError",
    "build_image_layout",
    "ensure_installed",
    "host",
    "missing_packages",
    "mk1_labels",
    "mk2_labels",
    "reclaim_stale",
]
