"""What the index is fed: typed inputs, one per thing the shell learned, and the stream's
envelopes that carry them.

`ts` on every input is the wall-clock time the watcher learned of it (the shell stamps it),
so the index itself never reads a clock. Made by `decode` (events) and the shell (answers to
the index's needs, listings); read only by the index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from watcher.containerd_records import ContainerId, ContainerRecord, LayerMount, TaskRecord


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
class ContainerAnnounced:
    """A container (or pod sandbox) told by NRI, from the runtime's own call: for an app
    container, before containerd creates it (NRI's CreateContainer), so a listing may not
    show it yet. Provisional until containerd shows it (`ContainerSeen`, a listing, its
    /containers/create); its record lacks what only containerd keeps (created_at, the
    snapshot, the log path), which containerd's record adds later. `mono` as on
    `ContainerSeen`.
    """

    ts: float
    container: ContainerRecord
    mono: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StartAnnounced:
    """NRI's StartContainer: the runtime is about to start the container's process."""

    ts: float
    container_id: ContainerId


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnouncementWithdrawn:
    """NRI's RemoveContainer. For a container containerd never showed (its creation failed
    after NRI's CreateContainer) this ends it; for one containerd holds it says nothing: its
    /containers/delete does, once containerd really deleted it."""

    ts: float
    container_id: ContainerId


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
    rootfs_mounts: tuple[LayerMount, ...] = ()
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
    ContainerAnnounced
    | StartAnnounced
    | AnnouncementWithdrawn
    | ContainerChanged
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
