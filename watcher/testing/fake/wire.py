"""What the fake's clients see of containerd's API: names, constants and the RPCs served.

Rules:

* Plain values only: no state, no gRPC server, no I/O. The other modules of the fake take
  their names from here, so a constant is written once.
* `Rpc` lists exactly the RPCs the fake implements; every other RPC of its services answers
  UNIMPLEMENTED. A client that only reads calls nothing outside `READ_ONLY_RPCS`.
* Constants are what containerd and its CRI plugin put on the wire (type URLs, extension
  keys, the namespace metadata key), not choices of the fake; the images are made up (the
  fake runs nothing).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

#: the CRI plugin's namespace, where kubelet pods live
NAMESPACE: Final = "k8s.io"
NAMESPACE_METADATA: Final = "containerd-namespace"
SPEC_TYPE_URL: Final = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
CRI_CONTAINER_EXTENSION: Final = "io.cri-containerd.container.metadata"
CRI_SANDBOX_EXTENSION: Final = "io.cri-containerd.sandbox.metadata"
CRI_CONTAINER_EXTENSION_URL: Final = "github.com/containerd/cri/pkg/store/container/Metadata"
CRI_SANDBOX_EXTENSION_URL: Final = "github.com/containerd/cri/pkg/store/sandbox/Metadata"
RUNTIME: Final = "io.containerd.runc.v2"
SNAPSHOTTER: Final = "overlayfs"
#: the image CRI runs as every pod's sandbox (any image will do for the fake)
PAUSE_IMAGE: Final = "registry.k8s.io/pause:3.9"
WORKSPACE_IMAGE: Final = "eu.gcr.io/gitpod-dev/workspace-images:fake"
#: containerd's own limit; the client raises its receive limit to the same
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
#: truncated protobuf: field 1, length-delimited, claims 5 bytes but carries 2
GARBAGE: Final = b"\x0a\x05ab"


class Rpc(enum.StrEnum):
    """Full gRPC method names of the RPCs the fake implements (what the watcher may call)."""

    VERSION = "/containerd.services.version.v1.Version/Version"
    CONTAINERS_LIST = "/containerd.services.containers.v1.Containers/List"
    CONTAINERS_GET = "/containerd.services.containers.v1.Containers/Get"
    #: what containerd's own client lists with (List answers in one message, capped at
    #: 16 MiB: a node with thousands of containers exceeds it)
    CONTAINERS_LIST_STREAM = "/containerd.services.containers.v1.Containers/ListStream"
    TASKS_LIST = "/containerd.services.tasks.v1.Tasks/List"
    TASKS_GET = "/containerd.services.tasks.v1.Tasks/Get"
    SNAPSHOTS_MOUNTS = "/containerd.services.snapshots.v1.Snapshots/Mounts"
    EVENTS_SUBSCRIBE = "/containerd.services.events.v1.Events/Subscribe"
    NAMESPACES_LIST = "/containerd.services.namespaces.v1.Namespaces/List"


#: every RPC that only reads: a read-only client calls nothing else
READ_ONLY_RPCS: Final = frozenset(str(r) for r in Rpc)


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One RPC the fake received: full method name, `containerd-namespace` (None if absent)."""

    method: str
    namespace: str | None


def check_method(method: Rpc | str) -> str:
    """`method` as a full gRPC method name (`/package.Service/Method`); ValueError if not."""
    name = str(method)
    if not name.startswith("/") or name.count("/") != 2:
        raise ValueError(f"{name!r} is not a full gRPC method name (use Rpc.*)")
    return name
