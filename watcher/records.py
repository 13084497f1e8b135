"""Plain records of what containerd holds, as the rest of ws-watcher sees it.

Everything here is a frozen, slotted, keyword-only dataclass: the decode module turns protobuf
messages into these, the index consumes and publishes them, and nothing past the decode module
ever sees a protobuf object. Timestamps are floats, seconds since the epoch.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NewType

ContainerId = NewType("ContainerId", str)
SandboxId = NewType("SandboxId", str)
InstanceId = NewType("InstanceId", str)

#: label CRI puts on every container it creates: "sandbox" or "container"
KIND_LABEL = "io.cri-containerd.kind"
KIND_SANDBOX = "sandbox"
KIND_CONTAINER = "container"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_UID_LABEL = "io.kubernetes.pod.uid"
#: prefixes of the bookkeeping labels the kubelet and CRI add; not the pod's own labels
BOOKKEEPING_PREFIXES = ("io.kubernetes.", "io.cri-containerd.")


def _frozen() -> Mapping[str, str]:
    return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """One OCI spec mount (issue: records on par): where, from where, what type."""

    destination: str
    source: str
    type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CriContainerMeta:
    """What the CRI plugin stores on an app container (its metadata extension)."""

    name: str | None = None  # the Kubernetes container name
    attempt: int | None = None
    sandbox_id: SandboxId | None = None
    image_ref: str | None = None
    log_path: str | None = None
    # kept for in-process code, out of repr: annotations carry credentials (watcher.disclosure)
    annotations: Mapping[str, str] = field(default_factory=_frozen, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class CriSandboxMeta:
    """What the CRI plugin stores on a sandbox container (its metadata extension)."""

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    attempt: int | None = None
    # kept for in-process code, out of repr: annotations carry credentials (watcher.disclosure)
    annotations: Mapping[str, str] = field(default_factory=_frozen, repr=False)


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
    mounts: tuple[Mount, ...] = ()
    cri_container: CriContainerMeta | None = None
    cri_sandbox: CriSandboxMeta | None = None

    @property
    def kind(self) -> str | None:
        return self.labels.get(KIND_LABEL)


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
class SnapshotMount:
    """One containerd `types.Mount` (TaskCreate rootfs, Snapshots.Mounts)."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()


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


# --- events: what the index is fed -------------------------------------------------------
# `ts` on every event is the wall-clock time the watcher learned of it (the shell stamps it),
# so the index itself never reads a clock.


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerSeen:
    """A container exists (from a Get after /containers/create or /containers/update).

    `mono`: the shell's monotonic clock when it learned it (seconds; None: not stamped).
    Durations the index reasons about (how long a container has been without a task) are
    measured on it: a wall clock steps (NTP), and containerd's `created_at` is wall time.
    """

    ts: float
    container: ContainerRecord
    mono: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerDeleted:
    """/containers/delete: containerd has removed the container."""

    ts: float
    container_id: ContainerId


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskCreated:
    """/tasks/create, as decoded: the PID, the task's rootfs mounts and its bundle dir.

    `upperdir`/`rootfs` are what the resolution room read from those (`resolve.locate`);
    `located` says it did, so the index asks the node nothing more (on a snapshotter without
    an upper layer the upperdir stays None: there is none to find).
    """

    ts: float
    container_id: ContainerId
    pid: int
    upperdir: str | None = None
    rootfs: str | None = None
    located: bool = False
    rootfs_mounts: tuple[SnapshotMount, ...] = ()
    bundle: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStarted:
    """/tasks/start; `started_at` is containerd's envelope time of the event."""

    ts: float
    container_id: ContainerId
    pid: int
    started_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _TaskEnded:
    """A process of the task ended. `exec_id` empty or equal to `container_id` means the
    task's own process; anything else is an exec'd process, which is not the task ending."""

    ts: float
    container_id: ContainerId
    exec_id: str
    pid: int
    exit_status: int
    exited_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskExited(_TaskEnded):
    """/tasks/exit (containerd sets `exec_id` to the container id for the task itself)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskDeleted(_TaskEnded):
    """/tasks/delete (`exec_id` empty for the task itself)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSeen:
    """A task from a listing (start-up, resync)."""

    ts: float
    task: TaskRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    """Facts the shell looked up for a container: upperdir (Snapshots), rootfs (mount table),
    the start time of its task's process (/proc) when no /tasks/start event told it."""

    ts: float
    container_id: ContainerId
    upperdir: str | None = None
    rootfs: str | None = None
    started_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Relisted:
    """A full listing of containers and tasks: authoritative about everything the index
    learned before it began.

    `since` is `Index.mark()` taken just before the listing was requested: inputs applied
    after that mark are newer than the listing and win over it (a container created or
    deleted, a task started, while the listing ran). None: the listing is newer than
    everything (a test, or a shell that stops the stream while it lists).
    """

    ts: float
    containers: tuple[ContainerRecord, ...]
    tasks: tuple[TaskRecord, ...]
    since: int | None = None
    mono: float | None = None  # as on `ContainerSeen`


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupFailed:
    """A `NeedLocation` that could not be answered (containerd went away meanwhile): the
    index asks again later instead of waiting for an answer that will not come."""

    ts: float
    container_id: ContainerId


@dataclass(frozen=True, slots=True, kw_only=True)
class LogChecked:
    """The answer to `NeedLogCheck`: whether the container's log file exists."""

    ts: float
    container_id: ContainerId
    exists: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerChanged:
    """/containers/create (`labels` None: the event carries none) or /containers/update
    (with the container's labels). The index asks for the record (`NeedRecord`) unless the
    labels already say it does not matter or are those it knows; the shell Gets it and feeds
    a `ContainerSeen` (or nothing when containerd answers NotFound: already gone)."""

    ts: float
    container_id: ContainerId
    labels: Mapping[str, str] | None = None


Event = (
    ContainerChanged
    | ContainerSeen
    | ContainerDeleted
    | TaskCreated
    | TaskStarted
    | TaskExited
    | TaskDeleted
    | TaskSeen
    | Resolved
    | Relisted
    | LogChecked
    | LookupFailed
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One message of containerd's event stream, decoded.

    `event` is None for topics the watcher does not model (images, snapshots, exec-started,
    ...); `type_name` still says what it was.
    """

    topic: str
    namespace: str
    timestamp: float | None
    type_name: str
    event: Event | None


# --- what the index publishes ------------------------------------------------------------


class WorkspaceState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


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
    mounts: tuple[Mount, ...] = ()
    # out of repr: annotations carry credentials (see watcher.disclosure)
    pod_annotations: Mapping[str, str] = field(default_factory=_frozen, repr=False)
    container_annotations: Mapping[str, str] = field(default_factory=_frozen, repr=False)
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


Change = WorkspaceChange | Synced | Disconnected
