"""What is known of one app container: its record, its task's facts, and how they grow.

Synopsis::

    facts = Facts()                          # pending: task facts before the record
    facts.learn(phase=ALIVE, pid=42)         # True: something was learned
    facts.learn_task(task)                   # a TaskRecord of a listing, joined in
    facts.state()                            # WorkspaceState.CREATED / RUNNING / EXITED
    facts.ask_where()                        # the NeedLocation to send once, or None
    merge(old_record, new_record)            # the newer record, keeping what the old knew
    tombstones.bury(cid)                     # False if it was buried already

Rules of this module (the index's rules about facts live here):

* **Facts form a join-semilattice.** `learn` only *adds*: a known value is never replaced by
  less (pid 0, an empty upperdir or None mean "not known" and change nothing) and the task
  phase only moves forward, `NO_TASK < ALIVE < EXITED`. When two inputs disagree on a value
  the first one known wins (they never do for one task in practice), so any order and any
  duplication of a complete set of inputs give the same facts.
* **A record is merged, not replaced**: a newer description of a container keeps what the
  older one knew and the newer one lacks (`merge`).
* **Running means the task runs**: a container is `RUNNING` once its task lives with a known
  PID and the node was asked where its files are (or the /tasks/create event told it); an
  ended task is `EXITED` for good.
* **Where its files are is asked once per listing**: `ask_where` hands out one `NeedLocation`
  for a live task whose upperdir no event told; `asked` is reset by the index after a listing.
* **Tombstones are bounded**: containerd never reuses a container id, so a deleted id may
  ignore every later input; only the newest `limit` ids are remembered, so create/delete
  cycles do not grow memory without bound.

Nothing here knows sandboxes, schemes or what was published: that is `watcher.podjoin` and
`watcher.publishing`. No I/O, no clock.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Final

from watcher.containerd_records import ContainerRecord, SandboxId, TaskRecord, TaskStatus
from watcher.cri import CONTAINER_NAME_LABEL
from watcher.needs import NeedLocation
from watcher.published import WorkspaceState

__all__ = [
    "ALIVE",
    "EXITED",
    "NO_TASK",
    "Facts",
    "Tombstones",
    "container_name",
    "merge",
    "record_newness",
]

logger = logging.getLogger("watcher.index")  # one logger for the index and its rooms

# task phases: a join-semilattice, only ever raised (plain ints, not an enum: compared on
# every event of the hot path)
NO_TASK: Final = 0  # no task seen
ALIVE: Final = 1  # a task was created / started / listed alive
EXITED: Final = 2  # the task exited, was deleted, or is gone from a listing


@dataclass(slots=True)
class Facts:
    """What is known about one app container (record None: pending, only task facts)."""

    record: ContainerRecord | None = None
    # the join keys, derived from the record when `watcher.podjoin` attaches it
    name: str | None = None
    sandbox_ref: SandboxId | None = None  # CRI metadata's sandbox id
    uid_ref: str | None = None  # pod uid, used to join only when there is no sandbox_ref
    # task facts
    phase: int = NO_TASK
    pid: int | None = None
    upperdir: str | None = None
    rootfs: str | None = None
    exit_status: int | None = None
    started_at: float | None = None
    exited_at: float | None = None
    # where its files are: `told` by the /tasks/create event (all the node can tell), or
    # `settled` by any answer to a NeedLocation; `asked`: a NeedLocation went out since the
    # last listing (a lookup that found nothing is asked again after the next one)
    told: bool = False
    settled: bool = False
    asked: bool = False
    touched: int = 0  # `Index.mark()` of the last input about it (see `Relisted.since`)
    first_seen: float | None = None  # the shell's monotonic clock when its record came
    # exited by inference (no task for long, a log file), not by containerd's word: a later
    # sign of a live task revises it
    inferred_exit: bool = False
    # told by NRI only, containerd has not shown it yet (see `ContainerAnnounced`)
    announced: bool = False

    def learn(
        self,
        *,
        phase: int = NO_TASK,
        pid: int | None = None,
        upperdir: str | None = None,
        rootfs: str | None = None,
        exit_status: int | None = None,
        started_at: float | None = None,
        exited_at: float | None = None,
    ) -> bool:
        """Join these facts in; True if anything was learned."""
        changed = False
        if phase > self.phase:
            self.phase = phase
            changed = True
        elif self.inferred_exit and phase == EXITED:
            self.inferred_exit = False  # containerd says so now
        elif self.inferred_exit and phase == ALIVE and pid:
            self.phase, self.inferred_exit = ALIVE, False  # it was starting after all
            changed = True
        if pid:  # 0 means "not known" in containerd's messages
            if self.pid is None:
                self.pid = pid
                changed = True
            elif self.pid != pid:
                logger.debug("conflicting pids %s and %s: keeping the first", self.pid, pid)
        if upperdir and self.upperdir is None:
            self.upperdir = upperdir
            changed = True
        if rootfs and self.rootfs is None:
            self.rootfs = rootfs
            changed = True
        if exit_status is not None and self.exit_status is None:
            self.exit_status = exit_status
            changed = True
        if started_at is not None and self.started_at is None:
            self.started_at = started_at
            changed = True
        if exited_at is not None and self.exited_at is None:
            self.exited_at = exited_at
            changed = True
        return changed

    def learn_task(self, task: TaskRecord) -> bool:
        """Join a listed task in; True if anything was learned."""
        if task.status is TaskStatus.STOPPED:
            return self.learn(
                phase=EXITED,
                pid=task.pid,
                exit_status=task.exit_status,
                exited_at=task.exited_at,
            )
        # created, running, paused, pausing; UNKNOWN (shim unreachable) too: a task exists
        return self.learn(phase=ALIVE, pid=task.pid)

    def infer_exit(self) -> bool:
        """Take a task-less container as exited (revised by a later sign of a live task)."""
        if self.phase != NO_TASK:
            return False
        self.phase, self.inferred_exit = EXITED, True
        return True

    def state(self) -> WorkspaceState:
        """The lifecycle step the container has reached: running once its task lives with a
        PID and the node was asked where its files are (or the event told)."""
        if self.phase == EXITED:
            return WorkspaceState.EXITED
        if self.phase == ALIVE and self.pid is not None and (self.settled or self.upperdir):
            return WorkspaceState.RUNNING
        return WorkspaceState.CREATED

    def ask_where(self) -> NeedLocation | None:
        """The `NeedLocation` of a live task whose files no event told, if none went out
        since the last listing (then it counts as asked); else None."""
        rec = self.record
        if (
            self.phase != ALIVE
            or self.pid is None
            or self.upperdir is not None
            or self.told
            or self.asked
            or rec is None
        ):
            return None
        self.asked = True
        return NeedLocation(
            container_id=rec.id,
            pid=self.pid,
            snapshotter=rec.snapshotter,
            snapshot_key=rec.snapshot_key or rec.id,
            want_started_at=self.started_at is None,
        )


class Tombstones(OrderedDict[str, None]):
    """The newest `limit` deleted container ids, oldest first (an ordered set).

    A dict underneath so that `cid in tombstones`, asked of most inputs, stays a plain
    dict lookup.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def bury(self, cid: str) -> bool:
        """Remember `cid` as deleted, forgetting the oldest beyond `limit`; False if it was
        buried already."""
        if cid in self:
            return False
        self[cid] = None
        if len(self) > self.limit:
            self.popitem(last=False)
        return True


def container_name(rec: ContainerRecord) -> str | None:
    """The Kubernetes container name: its label, else the CRI metadata's."""
    name = rec.labels.get(CONTAINER_NAME_LABEL)
    if name is None and rec.cri_container is not None:
        name = rec.cri_container.name
    return name


def record_newness(rec: ContainerRecord) -> tuple[int, float, str]:
    """Order of a pod's containers: highest attempt, then latest creation, then id."""
    cri = rec.cri_container
    attempt = cri.attempt if cri is not None and cri.attempt is not None else -1
    created = float("-inf") if rec.created_at is None else rec.created_at
    return (attempt, created, rec.id)


def merge(old: ContainerRecord, new: ContainerRecord) -> ContainerRecord:
    """The newer description of a container, without losing what the older one knew."""
    updates: dict[str, object] = {}
    for name in ("image", "runtime", "snapshotter", "snapshot_key", "mounts"):
        if not getattr(new, name) and getattr(old, name):
            updates[name] = getattr(old, name)
    for name in ("created_at", "cgroup_path", "cri_container", "cri_sandbox"):
        if getattr(new, name) is None and getattr(old, name) is not None:
            updates[name] = getattr(old, name)
    return replace(new, **updates) if updates else new  # type: ignore[arg-type]
