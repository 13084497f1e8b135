"""What containerd holds, decoded: containers, tasks, images, mounts, its version.

Made by `decode` (nothing past it sees a protobuf object), read by the index and the
resolution room. Every record is a frozen, slotted, keyword-only dataclass and every mapping
in one is read-only (`frozen_map`): records are shared into published workspaces, so a
caller must not be able to change the index's state through one. Timestamps are floats,
seconds since the epoch.

Two kinds of mount, named for where they come from: `SpecMount` (a mount in the container's
OCI spec: what the container sees where) and `LayerMount` (containerd's `types.Mount`: how a
snapshot's layers are mounted as the task's rootfs). The node's own mount table has its
entries in `watcher.mountinfo`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, NewType

ContainerId = NewType("ContainerId", str)
SandboxId = NewType("SandboxId", str)

EMPTY_MAP: Final[Mapping[str, str]] = MappingProxyType({})


def frozen_map(items: Mapping[str, str]) -> Mapping[str, str]:
    """A read-only copy of `items` (the shared empty map when empty)."""
    if isinstance(items, MappingProxyType):
        return items
    return MappingProxyType(dict(items)) if items else EMPTY_MAP


def _empty() -> Mapping[str, str]:
    return EMPTY_MAP


@dataclass(frozen=True, slots=True, kw_only=True)
class Version:
    """containerd's Version service: what the daemon says it is."""

    version: str
    revision: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SpecMount:
    """One mount of a container's OCI spec: where, from where, what type."""

    destination: str
    source: str
    type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerMount:
    """One containerd `types.Mount` (a task's rootfs on /tasks/create, Snapshots.Mounts)."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CriContainerMeta:
    """What the CRI plugin stores on an app container (its metadata extension)."""

    name: str | None = None  # the Kubernetes container name
    attempt: int | None = None
    sandbox_id: SandboxId | None = None
    image_ref: str | None = None
    log_path: str | None = None
    # kept for in-process code, out of repr: annotations carry credentials (watcher.disclosure)
    annotations: Mapping[str, str] = field(default_factory=_empty, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class CriSandboxMeta:
    """What the CRI plugin stores on a sandbox container (its metadata extension)."""

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    attempt: int | None = None
    # kept for in-process code, out of repr: annotations carry credentials (watcher.disclosure)
    annotations: Mapping[str, str] = field(default_factory=_empty, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerRecord:
    """A container as containerd's Containers service describes it, decoded.

    `cgroup_path` is already converted from the spec's `linux.cgroupsPath` (None when the spec
    is missing, not JSON, or has no such field); `cri_container` / `cri_sandbox` are None for
    containers the CRI plugin did not create or whose extension was unreadable.
    """

    id: ContainerId
    labels: Mapping[str, str]
    image: str = ""
    runtime: str = ""
    snapshotter: str = ""
    snapshot_key: str = ""
    created_at: float | None = None
    cgroup_path: str | None = None
    mounts: tuple[SpecMount, ...] = ()
    cri_container: CriContainerMeta | None = None
    cri_sandbox: CriSandboxMeta | None = None


class TaskStatus(enum.Enum):
    """containerd's task states (types/task/task.proto), as the index needs them."""

    UNKNOWN = "unknown"
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    PAUSING = "pausing"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """A task from the Tasks service (List/Get). `container_id` is the task's id."""

    container_id: ContainerId
    pid: int
    status: TaskStatus
    exit_status: int | None = None
    exited_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageInfo:
    """An image as containerd's Images and Content services describe it (read-only).

    `digest` is the manifest's (what a registry pulls by), `id` the config's (what CRI calls
    the image id and stores as a container's `image_ref`), `size` the config plus all layers
    as stored (compressed) in the content store.
    """

    name: str
    digest: str
    media_type: str
    id: str | None
    size: int | None
    annotations: Mapping[str, str]
    labels: Mapping[str, str]
    created_at: float | None
