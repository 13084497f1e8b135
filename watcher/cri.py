"""The CRI plugin's vocabulary on containerd's containers: the labels it and the kubelet set.

CRI (containerd's Kubernetes plugin) makes two kinds of containers per pod: one *sandbox*
holding the pod's own labels, and *app containers* carrying only the kubelet's bookkeeping
labels. `kind_of` is the one place that tells them apart.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

#: label CRI puts on every container it creates: "sandbox" or "container"
KIND_LABEL = "io.cri-containerd.kind"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_UID_LABEL = "io.kubernetes.pod.uid"
#: prefixes of the bookkeeping labels the kubelet and CRI add; not the pod's own labels
BOOKKEEPING_PREFIXES = ("io.kubernetes.", "io.cri-containerd.")


class ContainerKind(enum.Enum):
    SANDBOX = "sandbox"
    CONTAINER = "container"


def kind_of(labels: Mapping[str, str]) -> ContainerKind | None:
    """Which of CRI's two kinds a container with these labels is (None: not CRI's)."""
    value = labels.get(KIND_LABEL)
    if value == "sandbox":
        return ContainerKind.SANDBOX
    if value == "container":
        return ContainerKind.CONTAINER
    return None
