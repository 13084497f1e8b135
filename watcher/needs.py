"""What the index asks the shell for: its needs, as typed requests (h11's NEED_DATA, typed).

The index never does I/O. When an input leaves it missing a fact it cannot compute, it
queues a need; the shell takes them (`Index.take_needs()`), answers each from containerd, the
node's mount table or /proc, concurrently and in any order, and feeds the answer back in as an
ordinary input. The index is order-independent, so an answer that comes late, out of order,
or never (a lookup that failed) changes nothing but when a fact becomes known.

| need             | asked when                                   | answered by (input)          |
|------------------|----------------------------------------------|------------------------------|
| `NeedRecord`     | `/containers/create` or `/update` (no labels) | `ContainerSeen`; nothing when |
|                  |                                              | containerd has no such id    |
| `NeedLocation`   | a workspace's task lives, its upperdir/rootfs | `Resolved` (also when nothing |
|                  | not told by an event                         | was found)                   |
| `NeedLogCheck`   | the first listing shows a CRI container       | `LogChecked`                 |
|                  | without a task                               |                              |
| `NeedRelist`     | a listing kept a container NRI announced     | a `Relisted` taken after `at` |
|                  | and containerd did not show (yet)            |                              |
"""

from __future__ import annotations

from dataclasses import dataclass

from .containerd_records import ContainerId

__all__ = ["Need", "NeedLocation", "NeedLogCheck", "NeedRecord", "NeedRelist"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NeedRecord:
    """The container's record (Containers.Get): a create/update event carries no labels."""

    container_id: ContainerId


@dataclass(frozen=True, slots=True, kw_only=True)
class NeedLocation:
    """Where a live workspace task's files are: its upperdir, rootfs mount point and, when
    no `/tasks/start` told it, the start time of `pid`. `snapshotter`/`snapshot_key` are
    the container's, for Snapshots.Mounts when the node's mount table cannot tell."""

    container_id: ContainerId
    pid: int
    snapshotter: str
    snapshot_key: str
    want_started_at: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class NeedLogCheck:
    """Does the container's log file exist? CRI creates it when it starts the container, so
    a CRI container with a log file and no task has run and exited (its task deleted)."""

    container_id: ContainerId
    log_path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NeedRelist:
    """A listing taken at `at` or later (the shell's monotonic clock, as `Relisted.mono`).

    A listing kept a container that NRI announced and containerd did not show: it may not
    exist *yet* (NRI tells before containerd creates), so it is kept for the start grace
    after it was told. Only a listing after that tells whether it ever came, and nothing else
    would: a containerd SIGKILLed between NRI's CreateContainer and its own creation never
    makes the container, never publishes its end, and NRI's RemoveContainer never comes.
    Without this, such a container stayed `created` until the next periodic relist.
    """

    at: float


Need = NeedRecord | NeedLocation | NeedLogCheck | NeedRelist
