"""A real-containerd test rig: a private containerd, hand-built images, kubelet-style pods.

Synopsis::

    from watcher.testing import ContainerSpec, Pods, PrivateContainerd, mk2_labels

    with PrivateContainerd() as ctrd, Pods(ctrd) as pods:
        pod = pods.run_pod("ws-1", labels=mk2_labels("inst-1", "ws-1", "owner-1"))
        ...  # point the watcher at ctrd.address
        ctrd.kill9(); ctrd.start()  # the containerd-restart case

pytest users: ``from watcher.testing.fixtures import containerd, pods`` in a ``conftest.py``.
Needs root, Linux, and containerd + runc + busybox-static (apt-installed when missing).
"""

from .containerd import NAMESPACE, PrivateContainerd, reclaim_stale
from .cri_client import CRIClient
from .errors import CRIError, RigError
from .host import ensure_installed
from .image import PAUSE_IMAGE, WORKSPACE_IMAGE, ImageDef, build_image_layout
from .labels import mk1_labels, mk2_labels
from .pods import ContainerSpec, Pod, Pods

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
    "mk1_labels",
    "mk2_labels",
    "reclaim_stale",
]
