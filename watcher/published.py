"""What the index publishes: workspaces and their lifecycle changes, as callers read them.

Immutable all the way down: a `Workspace` is a snapshot whose mappings are read-only and
shared with the index, so no caller can change the index's state through one. Made by the
index (and the loop, for `Synced`/`Disconnected`; the change hub, for `Lagged`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NewType

from watcher.containerd_records import EMPTY_MAP, ContainerId, SandboxId, SpecMount

InstanceId = NewType("InstanceId", str)


def _empty() -> Mapping[str, str]:
    return EMPTY_MAP


class WorkspaceState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"


@dataclass(frozen=True, slots=True, kw_only=True)
class Workspace:
    """One workspace container, joined with its pod: an immutable snapshot.

    A new object is published on every change; never mutate one.
    """

    instance_id: InstanceId
    workspace_id: str | None
    owner_id: str | None
    pod_name: str
    pod_namespace: str
    pod_uid: str
    sandbox_id: SandboxId
    container_id: ContainerId
    image: str
    pod_labels: Mapping[str, str]
    created_at: float | None
    state: WorkspaceState = WorkspaceState.CREATED
    pid: int | None = None
    upperdir: str | None = None
    cgroup_path: str | None = None
    rootfs: str | None = None
    exit_status: int | None = None
    # richer facts (CRI extensions, OCI spec); None when unknown
    container_name: str | None = None
    attempt: int | None = None
    image_ref: str | None = None
    log_path: str | None = None
    mounts: tuple[SpecMount, ...] = ()
    # out of repr: annotations carry credentials (see watcher.disclosure)
    pod_annotations: Mapping[str, str] = field(default_factory=_empty, repr=False)
    container_annotations: Mapping[str, str] = field(default_factory=_empty, repr=False)
    started_at: float | None = None
    exited_at: float | None = None
    #: the name of the label scheme that made the pod a workspace ("gitpod-mk1", ...)
    scheme: str | None = None

    @property
    def running(self) -> bool:
        """What `wait_for_container` waits for: the task has started and its PID is known.

        By then the node has also been asked where its files are: `upperdir` and `rootfs`
        are set wherever the node can tell them. `upperdir` is None on a snapshotter without
        an overlay upper layer (native, devmapper, zfs, btrfs, ...): there is none.
        """
        return self.state is WorkspaceState.RUNNING


class ChangeKind(enum.Enum):
    CREATED = "created"
    #: about to run: the runtime is starting its process (only with the NRI source on)
    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceChange:
    """A lifecycle step of one workspace container."""

    kind: ChangeKind
    ts: float
    workspace: Workspace


@dataclass(frozen=True, slots=True, kw_only=True)
class Synced:
    """The watcher finished a (re)sync; the index equals what containerd held."""

    ts: float
    workspaces: int
    initial: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnected:
    """The connection to containerd was lost (once per outage); the watcher reconnects."""

    ts: float
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Lagged:
    """This follower was too slow: `missed` changes before this one were dropped."""

    ts: float
    missed: int


Change = WorkspaceChange | Synced | Disconnected
