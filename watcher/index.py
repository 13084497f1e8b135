"""The index: a pure state machine from containerd records and events to workspaces.

Synopsis::

    index = Index()                                   # GITPOD_SCHEMES
    for change in index.apply(event):                 # any records.Event
        ...                                           # WorkspaceChange, in causal order
    index.by_instance(iid)        # the instance's newest workspace container, or None
    index.by_container(cid)       # any visible workspace container, or None
    index.workspaces()            # {instance id: newest Workspace}  (an immutable snapshot)
    index.containers()            # {container id: Workspace}        (an immutable snapshot)
    index.is_candidate(labels)    # worth a Get / a resolve?
    index.unresolved()            # live workspace tasks whose upperdir is unknown

Rules of this module (everything that affects the state lives here):

* No I/O, no clock, no trio, no grpc: timestamps arrive on the events (`ts`).
* **Facts form a join-semilattice.** Each event only *adds* facts about one container: a known
  value is never replaced by less (a second TaskCreate with pid 0 or no upperdir keeps what is
  known) and the task phase only moves forward (none < alive < exited; deletion is a
  tombstone). Hence, for a complete set of events, any order and any duplication give the same
  state. When two events disagree on a value (they never do for one task in practice) the
  first one known wins.
* **CRI join.** Sandbox containers carry the pod's labels; app containers only their container
  name and pod name/namespace/uid. An app container joins its sandbox by the CRI metadata's
  `sandbox_id`, else by pod uid (the newest matching sandbox of that uid). A container is a
  *visible workspace* iff it is seen and not deleted, of kind `container`, named like its
  sandbox's scheme's `container_name`, and its sandbox is known and matches a scheme.
  Sidecars and other pods are never visible.
* **Pending facts.** Task facts for a container not seen yet are kept and used when it shows
  up; they are dropped by its deletion (tombstone) or the next `Relisted`.
* **Tombstones.** Container ids are never reused: a deleted id ignores every later event (the
  newest `tombstone_limit` ids are remembered). A deleted sandbox's facts are kept while a live
  app container of it is known, so the order of the two deletions does not matter.
* **`Relisted` is authoritative**: what it lacks is gone, what it holds is (re)indexed, task
  states are re-read; tombstones, ignored ids and pending facts of absent containers are
  cleared; facts of present containers (pid, upperdir, rootfs, ...) are kept.
* **Changes** are the diff of each affected container's visible snapshot: `created` when it
  becomes visible, `running` once it is `Workspace.running` (at most once), `exited` once its
  task is gone (`running` is skipped if it never ran for us), `removed` when it stops being
  visible. Every change carries an immutable `Workspace` (the new one; for `removed` the last
  one published) and the event's `ts`; published objects are never mutated.
* **A listing cannot tell "not started yet" from "exited".** CRI creates a container's task
  only in StartContainer and deletes it once it exited, so a `Relisted` container without a
  task is taken as exited, unless nothing ever showed it a task and it was created less than
  `start_grace` seconds before the listing's `ts` (then it is "created", waiting for its
  TaskCreate). A container reported exited never comes back to running.
* **Cost.** An event touches only the containers it affects: O(1) per event, except
  `Relisted` (O(listing)) and a sandbox event (O(containers of the pod)).

What the shell must know:

* Feed a `ContainerSeen` for every container whose labels pass `is_candidate` (sandboxes
  included: they carry the pod labels); feeding others is harmless and lets the index drop
  their pending task facts at once (else they go with the `ContainerDeleted`).
* Stamp `ts` on every event; `Relisted.ts` must be the time of the listing (start grace).
* After each `apply`, resolve `unresolved()` and feed one `Resolved` per container, also when
  nothing was found (the container then leaves `unresolved()` until the next `Relisted`).
* Waiting for "the instance's containers are all gone" is `by_instance(iid) is None`.

Rejected: rebuilding all workspaces after each event (O(n) per event); a "second pass" over a
listing to join containers to sandboxes listed after them (the join is recomputed whenever
either side changes, so one pass suffices); treating a sandbox deletion as the end of its
containers (the kubelet deletes the containers first; a reordered delivery must not matter).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final

from watcher.errors import UsageError
from watcher.labels import GITPOD_SCHEMES, LabelScheme, WorkspaceIdentity, pod_labels
from watcher.needs import Need, NeedLocation, NeedLogCheck, NeedRecord
from watcher.records import (
    CONTAINER_NAME_LABEL,
    KIND_CONTAINER,
    KIND_LABEL,
    KIND_SANDBOX,
    POD_NAME_LABEL,
    POD_NAMESPACE_LABEL,
    POD_UID_LABEL,
    ChangeKind,
    ContainerChanged,
    ContainerDeleted,
    ContainerId,
    ContainerRecord,
    ContainerSeen,
    Event,
    InstanceId,
    LogChecked,
    Relisted,
    Resolved,
    SandboxId,
    TaskCreated,
    TaskDeleted,
    TaskExited,
    TaskRecord,
    TaskSeen,
    TaskStarted,
    TaskStatus,
    Workspace,
    WorkspaceChange,
    WorkspaceState,
)

__all__ = ["DEFAULT_START_GRACE", "DEFAULT_TOMBSTONE_LIMIT", "Index"]

logger = logging.getLogger(__name__)

#: deleted container ids remembered, so late events for them are ignored; containerd never
#: reuses an id, and a few thousand create/delete cycles must not grow memory without bound
DEFAULT_TOMBSTONE_LIMIT: Final = 10_000

#: seconds after its creation during which a container that a listing shows *without a task*
#: is taken as "not started yet" rather than "exited". CRI creates the containerd container in
#: CreateContainer and its task only in StartContainer, and deletes the task once it exited, so
#: a listing alone cannot tell the two apart; the kubelet starts a container right after it
#: created it. 0 = the plain rule "no task in a listing means exited".
DEFAULT_START_GRACE: Final = 30.0

# task phases: a join-semilattice, only ever raised
_NONE: Final = 0  # no task seen
_ALIVE: Final = 1  # a task was created / started / listed alive
_EXITED: Final = 2  # the task exited, was deleted, or is gone from a listing


# which changes a container has had reported (bit flags)
_REPORTED_CREATED: Final = 1
_REPORTED_RUNNING: Final = 2
_REPORTED_EXITED: Final = 4

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(slots=True)
class _Facts:
    """What is known about one app container (record None: pending, only task facts)."""

    record: ContainerRecord | None = None
    # derived from the record at attach time
    name: str | None = None
    sandbox_ref: SandboxId | None = None  # CRI metadata's sandbox id
    uid_ref: str | None = None  # pod uid, used to join only when there is no sandbox_ref
    # task facts
    phase: int = _NONE
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

    def learn(
        self,
        *,
        phase: int = _NONE,
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
        if task.status is TaskStatus.STOPPED:
            return self.learn(
                phase=_EXITED,
                pid=task.pid,
                exit_status=task.exit_status,
                exited_at=task.exited_at,
            )
        # created, running, paused, pausing; UNKNOWN (shim unreachable) too: a task exists
        return self.learn(phase=_ALIVE, pid=task.pid)


@dataclass(slots=True)
class _Sandbox:
    """A known sandbox that matches a scheme."""

    id: SandboxId
    record: ContainerRecord
    scheme: LabelScheme
    identity: WorkspaceIdentity
    uid: str | None
    pod_name: str
    pod_namespace: str
    pod_labels: Mapping[str, str]
    pod_annotations: Mapping[str, str]
    order: tuple[int, float, str]  # newest sandbox of a uid = max
    deleted: bool = False
    touched: int = 0


def _state(facts: _Facts) -> WorkspaceState:
    """The lifecycle step a container has reached: running once its task lives with a PID
    and the node was asked where its files are (or the event told)."""
    if facts.phase == _EXITED:
        return WorkspaceState.EXITED
    if facts.phase == _ALIVE and facts.pid is not None and (facts.settled or facts.upperdir):
        return WorkspaceState.RUNNING
    return WorkspaceState.CREATED


def _container_name(rec: ContainerRecord) -> str | None:
    name = rec.labels.get(CONTAINER_NAME_LABEL)
    if name is None and rec.cri_container is not None:
        name = rec.cri_container.name
    return name


def _newness(ws: Workspace) -> tuple[int, float, str]:
    """Order of an instance's containers: highest attempt, then latest creation, then id."""
    return (
        -1 if ws.attempt is None else ws.attempt,
        float("-inf") if ws.created_at is None else ws.created_at,
        ws.container_id,
    )


def _record_newness(rec: ContainerRecord) -> tuple[int, float, str]:
    cri = rec.cri_container
    attempt = cri.attempt if cri is not None and cri.attempt is not None else -1
    created = float("-inf") if rec.created_at is None else rec.created_at
    return (attempt, created, rec.id)


def _merge(old: ContainerRecord, new: ContainerRecord) -> ContainerRecord:
    """The newer description of a container, without losing what the older one knew."""
    updates: dict[str, object] = {}
    for name in ("image", "runtime", "snapshotter", "snapshot_key", "mounts"):
        if not getattr(new, name) and getattr(old, name):
            updates[name] = getattr(old, name)
    for name in ("created_at", "cgroup_path", "cri_container", "cri_sandbox"):
        if getattr(new, name) is None and getattr(old, name) is not None:
            updates[name] = getattr(old, name)
    return replace(new, **updates) if updates else new  # type: ignore[arg-type]


class Index:
    """Workspaces by container and by instance, from containerd records and events.

    Args:
        schemes: the label schemes that make a pod a workspace pod (first match wins).
        tombstone_limit: how many deleted container ids to remember.
        start_grace: see `DEFAULT_START_GRACE`.

    The index is not thread-safe and needs no lock in a single trio task: `apply` runs to
    completion, and every query answers from immutable published objects.
    """

    def __init__(
        self,
        schemes: Sequence[LabelScheme] = GITPOD_SCHEMES,
        *,
        tombstone_limit: int = DEFAULT_TOMBSTONE_LIMIT,
        start_grace: float = DEFAULT_START_GRACE,
    ) -> None:
        if not schemes:
            raise UsageError("the index needs at least one label scheme")
        if tombstone_limit < 1:
            raise UsageError("tombstone_limit must be at least 1")
        if start_grace < 0:
            raise UsageError("start_grace must not be negative")
        self._schemes: tuple[LabelScheme, ...] = tuple(schemes)
        self._names: frozenset[str] = frozenset(s.container_name for s in self._schemes)
        self._tombstone_limit = tombstone_limit
        self._start_grace = start_grace
        # facts
        self._facts: dict[ContainerId, _Facts] = {}
        self._sandboxes: dict[SandboxId, _Sandbox] = {}
        self._sandboxes_by_uid: dict[str, set[SandboxId]] = {}
        self._children_by_sid: dict[SandboxId, set[ContainerId]] = {}
        self._children_by_uid: dict[str, set[ContainerId]] = {}
        self._ignored: set[str] = set()  # seen, not of interest (noise, sidecars, other pods)
        self._tombstones: OrderedDict[str, None] = OrderedDict()
        self._applied = 0  # inputs applied: the clock of `mark()`
        self._listed = False  # a first listing was applied
        self._needs: list[Need] = []
        # published
        self._visible: dict[ContainerId, Workspace] = {}
        self._reported: dict[ContainerId, int] = {}
        self._instances: dict[InstanceId, dict[ContainerId, Workspace]] = {}
        self._newest: dict[InstanceId, Workspace] = {}
        self._unresolved: dict[ContainerId, None] = {}  # an ordered set
        self._containers_snapshot: Mapping[ContainerId, Workspace] | None = None
        self._workspaces_snapshot: Mapping[InstanceId, Workspace] | None = None

    # --- queries ---------------------------------------------------------------------------

    def workspaces(self) -> Mapping[InstanceId, Workspace]:
        """Every instance with a visible workspace container, mapped to its newest one.

        An immutable snapshot (copied once after each change, then shared): use `by_instance`
        in hot paths.
        """
        if self._workspaces_snapshot is None:
            self._workspaces_snapshot = MappingProxyType(dict(self._newest))
        return self._workspaces_snapshot

    def containers(self) -> Mapping[ContainerId, Workspace]:
        """Every visible workspace container, old exited ones of a replaced instance too."""
        if self._containers_snapshot is None:
            self._containers_snapshot = MappingProxyType(dict(self._visible))
        return self._containers_snapshot

    def by_instance(self, instance_id: InstanceId | str) -> Workspace | None:
        """The instance's newest workspace container; None once none is left."""
        return self._newest.get(InstanceId(instance_id))

    def by_container(self, container_id: ContainerId | str) -> Workspace | None:
        return self._visible.get(ContainerId(container_id))

    def is_candidate(self, labels: Mapping[str, str]) -> bool:
        """Could a container with these labels matter: a matching sandbox, or an app container
        named like a scheme's main container? (Others need no Get and no resolving.)"""
        kind = labels.get(KIND_LABEL)
        if kind == KIND_SANDBOX:
            return any(s.identify(labels) is not None for s in self._schemes)
        if kind == KIND_CONTAINER:
            return labels.get(CONTAINER_NAME_LABEL) in self._names
        return False

    def unresolved(self) -> list[ContainerId]:
        """Workspace containers with a `NeedLocation` out and not answered yet.

        A container is listed until a `Resolved` for it was applied, even one that found
        nothing (so a failing lookup is not retried on every event); after the next
        `Relisted` it is asked for again if its upperdir is still unknown.
        """
        return list(self._unresolved)

    def take_needs(self) -> list[Need]:
        """What the inputs applied since the last call left the index missing (see
        `watcher.needs`); each need is handed out once. Answer them in any order."""
        needs, self._needs = self._needs, []
        return needs

    def mark(self) -> int:
        """A point in the input order: give it to a `Relisted` as `since` when the listing
        is requested, so what arrives while it runs is not undone by it."""
        return self._applied

    def container_record(self, container_id: ContainerId | str) -> ContainerRecord | None:
        """The record of a known app container (workspace or not yet joined), else None.

        For the shell's lookups (snapshotter and snapshot key); sandboxes, sidecars and
        other pods' containers are not kept.
        """
        facts = self._facts.get(ContainerId(container_id))
        return None if facts is None else facts.record

    # --- the one mutator -------------------------------------------------------------------

    def apply(self, event: Event) -> list[WorkspaceChange]:
        """Join the event's facts in; the resulting workspace changes, in causal order."""
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise UsageError(f"not an index event: {type(event).__name__}")
        self._applied += 1
        return handler(self, event)

    # --- handlers --------------------------------------------------------------------------

    def _on_container_changed(self, event: ContainerChanged) -> list[WorkspaceChange]:
        if event.container_id not in self._tombstones:
            self._needs.append(NeedRecord(container_id=event.container_id))
        return []

    def _on_log_checked(self, event: LogChecked) -> list[WorkspaceChange]:
        facts = self._facts.get(event.container_id)
        if facts is None or facts.record is None or not event.exists:
            return []
        if not facts.learn(phase=_EXITED):
            return []
        return self._after_learning(event.container_id, facts, event.ts)

    def _on_container_seen(self, event: ContainerSeen) -> list[WorkspaceChange]:
        rec = event.container
        cid = rec.id
        if cid in self._tombstones:
            return []
        kind = rec.labels.get(KIND_LABEL)
        if kind == KIND_SANDBOX:
            return self._sandbox_seen(rec, event.ts)
        if kind == KIND_CONTAINER and _container_name(rec) in self._names:
            return self._container_seen(rec, event.ts)
        return self._ignore(cid, event.ts)

    def _on_container_deleted(self, event: ContainerDeleted) -> list[WorkspaceChange]:
        cid = event.container_id
        if cid in self._tombstones:
            return []
        self._tombstones[cid] = None
        if len(self._tombstones) > self._tombstone_limit:
            self._tombstones.popitem(last=False)
        self._ignored.discard(cid)
        sandbox = self._sandboxes.get(SandboxId(cid))
        if sandbox is not None:
            sandbox.deleted = True
            self._maybe_purge(sandbox)
            return []
        facts = self._facts.pop(cid, None)
        if facts is None or facts.record is None:
            return []
        self._detach(cid, facts)
        out: list[WorkspaceChange] = []
        self._refresh(cid, event.ts, out)
        if facts.sandbox_ref is not None:
            joined = self._sandboxes.get(facts.sandbox_ref)
            if joined is not None:
                self._maybe_purge(joined)
        elif facts.uid_ref is not None:
            for sid in list(self._sandboxes_by_uid.get(facts.uid_ref, ())):
                self._maybe_purge(self._sandboxes[sid])
        return out

    def _on_task_created(self, event: TaskCreated) -> list[WorkspaceChange]:
        facts = self._task_facts(event.container_id)
        if facts is None:
            return []
        told = event.located and not facts.told
        if told:
            facts.told = facts.settled = True
        learned = facts.learn(
            phase=_ALIVE, pid=event.pid, upperdir=event.upperdir, rootfs=event.rootfs
        )
        if not (learned or told):
            return []
        return self._after_learning(event.container_id, facts, event.ts)

    def _on_task_started(self, event: TaskStarted) -> list[WorkspaceChange]:
        facts = self._task_facts(event.container_id)
        if facts is None or not facts.learn(
            phase=_ALIVE, pid=event.pid, started_at=event.started_at
        ):
            return []
        return self._after_learning(event.container_id, facts, event.ts)

    def _on_task_ended(self, event: TaskExited | TaskDeleted) -> list[WorkspaceChange]:
        cid = event.container_id
        if event.exec_id and event.exec_id != cid:
            return []  # an exec'd process ended, not the container's task
        facts = self._task_facts(cid)
        if facts is None or not facts.learn(
            phase=_EXITED,
            pid=event.pid,
            exit_status=event.exit_status,
            exited_at=event.exited_at,
        ):
            return []
        return self._after_learning(cid, facts, event.ts)

    def _on_task_seen(self, event: TaskSeen) -> list[WorkspaceChange]:
        cid = event.task.container_id
        facts = self._task_facts(cid)
        if facts is None or not facts.learn_task(event.task):
            return []
        return self._after_learning(cid, facts, event.ts)

    def _on_resolved(self, event: Resolved) -> list[WorkspaceChange]:
        cid = event.container_id
        facts = self._task_facts(cid)
        if facts is None:
            return []
        self._unresolved.pop(cid, None)
        settles = not facts.settled
        facts.settled = facts.asked = True
        learned = facts.learn(
            upperdir=event.upperdir, rootfs=event.rootfs, started_at=event.started_at
        )
        if not (learned or settles):
            return []
        return self._after_learning(cid, facts, event.ts)

    def _on_relisted(self, event: Relisted) -> list[WorkspaceChange]:
        ts = event.ts
        since = event.since

        def newer(touched: int) -> bool:  # learned after the listing was requested
            return since is not None and touched > since

        old_visible = self._visible
        old_reported = self._reported
        old_facts = self._facts
        old_sandboxes = self._sandboxes
        old_unresolved = self._unresolved
        first = not self._listed
        self._listed = True
        self._facts = {}
        self._sandboxes = {}
        self._sandboxes_by_uid = {}
        self._children_by_sid = {}
        self._children_by_uid = {}
        self._ignored = set()
        self._visible = {}
        self._reported = {}
        self._instances = {}
        self._newest = {}
        self._unresolved = {}
        self._dirty()
        # tombstones stay: ids are never reused, and a container deleted while the listing
        # ran is in the listing but gone (a Get answered before it must not bring it back)

        tasks = {t.container_id: t for t in event.tasks}
        records = {  # a duplicate: the last one
            rec.id: rec for rec in event.containers if rec.id not in self._tombstones
        }
        for old_sandbox in old_sandboxes.values():
            # seen while the listing ran, or deleted but still joined by a live container
            listed = old_sandbox.record.id in records
            if not listed and (newer(old_sandbox.touched) or old_sandbox.deleted):
                made = self._make_sandbox(old_sandbox.record)
                if made is not None:
                    made.touched, made.deleted = old_sandbox.touched, old_sandbox.deleted
        for cid, rec in records.items():
            kind = rec.labels.get(KIND_LABEL)
            if kind == KIND_SANDBOX:
                sandbox = self._make_sandbox(rec)
                if sandbox is None:
                    self._ignored.add(cid)
                elif (previous := old_sandboxes.get(SandboxId(cid))) is not None:
                    sandbox.touched = previous.touched
                continue
            if kind != KIND_CONTAINER or _container_name(rec) not in self._names:
                self._ignored.add(cid)
                continue
            facts = old_facts.get(cid)
            if facts is None:
                facts = _Facts()
            elif facts.record is not None:
                rec = _merge(facts.record, rec)
            self._facts[cid] = facts
            self._attach(cid, facts, rec)
            if cid in old_unresolved:
                self._unresolved[cid] = None  # its answer is on its way
            elif facts.upperdir is None and not facts.told:
                facts.asked = False  # ask the node again for what is still unknown
            task = tasks.get(cid)
            if task is not None:
                facts.learn_task(task)
            elif newer(facts.touched):
                pass  # a task event came after the listing was requested: it is newer
            elif facts.phase == _ALIVE or (facts.phase == _NONE and self._gone(rec, ts)):
                facts.phase = _EXITED  # the task is gone
            elif facts.phase == _NONE and first and rec.cri_container is not None:
                log_path = rec.cri_container.log_path
                if log_path:
                    self._needs.append(NeedLogCheck(container_id=cid, log_path=log_path))
        for cid, facts in old_facts.items():
            # created (or told about) while the listing ran: not in it, not gone
            if cid not in records and cid not in self._facts and newer(facts.touched):
                self._facts[cid] = facts
                if facts.record is not None:
                    self._attach(cid, facts, facts.record)
                if cid in old_unresolved:
                    self._unresolved[cid] = None
        for sandbox in list(self._sandboxes.values()):
            self._maybe_purge(sandbox)

        out: list[WorkspaceChange] = []
        new_visible: dict[ContainerId, Workspace] = {}
        for cid in self._facts:
            ws = self._compute(cid)
            if ws is not None:
                new_visible[cid] = ws
        gone = [ws for cid, ws in old_visible.items() if cid not in new_visible]
        for ws in sorted(gone, key=_newness):
            out.append(WorkspaceChange(kind=ChangeKind.REMOVED, ts=ts, workspace=ws))
        for ws in sorted(new_visible.values(), key=_newness):
            cid = ws.container_id
            flags = old_reported.get(cid)
            if flags is not None:
                self._reported[cid] = flags
            old = old_visible.get(cid)
            if old is not None and old == ws:
                ws = old  # unchanged: keep the published object
            self._publish(cid, old, ws, ts, out)
        return out

    # --- helpers ---------------------------------------------------------------------------

    def _gone(self, rec: ContainerRecord, ts: float) -> bool:
        """A listing shows this container, never seen with a task, without one: exited?"""
        if self._start_grace <= 0 or rec.created_at is None:
            return True
        return ts - rec.created_at >= self._start_grace

    def _task_facts(self, cid: ContainerId) -> _Facts | None:
        """The facts to join a task event into; None when the container does not matter."""
        facts = self._facts.get(cid)
        if facts is None:
            if cid in self._tombstones or cid in self._ignored or SandboxId(cid) in self._sandboxes:
                return None
            facts = self._facts[cid] = _Facts()  # pending until the container shows up
        facts.touched = self._applied
        return facts

    def _after_learning(self, cid: ContainerId, facts: _Facts, ts: float) -> list[WorkspaceChange]:
        if facts.record is None:
            return []
        out: list[WorkspaceChange] = []
        self._refresh(cid, ts, out, learned=True)
        return out

    def _make_sandbox(self, rec: ContainerRecord) -> _Sandbox | None:
        for scheme in self._schemes:
            identity = scheme.identify(rec.labels)
            if identity is not None:
                break
        else:
            return None
        sid = SandboxId(rec.id)
        cri = rec.cri_sandbox
        labels = rec.labels
        uid = labels.get(POD_UID_LABEL) or (cri.uid if cri is not None else None)
        sandbox = _Sandbox(
            id=sid,
            record=rec,
            scheme=scheme,
            identity=identity,
            uid=uid,
            pod_name=labels.get(POD_NAME_LABEL) or (cri.name if cri and cri.name else ""),
            pod_namespace=(
                labels.get(POD_NAMESPACE_LABEL) or (cri.namespace if cri and cri.namespace else "")
            ),
            pod_labels=MappingProxyType(pod_labels(labels)),
            pod_annotations=cri.annotations if cri is not None else _EMPTY,
            order=(
                cri.attempt if cri is not None and cri.attempt is not None else -1,
                float("-inf") if rec.created_at is None else rec.created_at,
                sid,
            ),
        )
        self._sandboxes[sid] = sandbox
        if uid:
            self._sandboxes_by_uid.setdefault(uid, set()).add(sid)
        return sandbox

    def _drop_sandbox(self, sandbox: _Sandbox) -> None:
        del self._sandboxes[sandbox.id]
        if sandbox.uid:
            sids = self._sandboxes_by_uid[sandbox.uid]
            sids.discard(sandbox.id)
            if not sids:
                del self._sandboxes_by_uid[sandbox.uid]

    def _children(self, sandbox: _Sandbox) -> set[ContainerId]:
        children = set(self._children_by_sid.get(sandbox.id, ()))
        if sandbox.uid:
            children.update(self._children_by_uid.get(sandbox.uid, ()))
        return children

    def _maybe_purge(self, sandbox: _Sandbox) -> None:
        """Forget a deleted sandbox once no live container can join it."""
        if not sandbox.deleted or self._children_by_sid.get(sandbox.id):
            return
        if sandbox.uid and self._children_by_uid.get(sandbox.uid):
            return
        self._drop_sandbox(sandbox)

    def _sandbox_seen(self, rec: ContainerRecord, ts: float) -> list[WorkspaceChange]:
        sid = SandboxId(rec.id)
        old = self._sandboxes.get(sid)
        if old is not None:
            if old.record == rec:
                return []
            rec = _merge(old.record, rec)
            self._drop_sandbox(old)
        self._facts.pop(rec.id, None)  # pending task facts of the pause container: not needed
        new = self._make_sandbox(rec)
        if new is None:
            self._ignored.add(rec.id)
        else:
            self._ignored.discard(rec.id)
            new.touched = self._applied
        affected: set[ContainerId] = set()
        for sandbox in (old, new):
            if sandbox is not None:
                affected |= self._children(sandbox)
        return self._refresh_all(affected, ts)

    def _container_seen(self, rec: ContainerRecord, ts: float) -> list[WorkspaceChange]:
        cid = rec.id
        self._ignored.discard(cid)
        facts = self._facts.get(cid)
        if facts is None:
            facts = self._facts[cid] = _Facts()
        facts.touched = self._applied
        if facts.record is not None:
            if facts.record == rec:
                return []
            rec = _merge(facts.record, rec)
            self._detach(cid, facts)
        self._attach(cid, facts, rec)
        out: list[WorkspaceChange] = []
        self._refresh(cid, ts, out)
        return out

    def _ignore(self, cid: ContainerId, ts: float) -> list[WorkspaceChange]:
        """A container that does not matter (now): forget what we had on it."""
        self._ignored.add(cid)
        sandbox = self._sandboxes.get(SandboxId(cid))
        if sandbox is not None:  # a sandbox whose labels no longer match
            affected = self._children(sandbox)
            self._drop_sandbox(sandbox)
            return self._refresh_all(affected, ts)
        facts = self._facts.pop(cid, None)
        if facts is None or facts.record is None:
            return []
        self._detach(cid, facts)
        out: list[WorkspaceChange] = []
        self._refresh(cid, ts, out)
        return out

    def _attach(self, cid: ContainerId, facts: _Facts, rec: ContainerRecord) -> None:
        facts.record = rec
        facts.name = _container_name(rec)
        cri = rec.cri_container
        facts.sandbox_ref = cri.sandbox_id if cri is not None and cri.sandbox_id else None
        facts.uid_ref = None
        if facts.sandbox_ref is not None:
            self._children_by_sid.setdefault(facts.sandbox_ref, set()).add(cid)
        else:
            uid = rec.labels.get(POD_UID_LABEL)
            if uid:
                facts.uid_ref = uid
                self._children_by_uid.setdefault(uid, set()).add(cid)

    def _detach(self, cid: ContainerId, facts: _Facts) -> None:
        if facts.sandbox_ref is not None:
            children = self._children_by_sid.get(facts.sandbox_ref)
            if children is not None:
                children.discard(cid)
                if not children:
                    del self._children_by_sid[facts.sandbox_ref]
        elif facts.uid_ref is not None:
            children = self._children_by_uid.get(facts.uid_ref)
            if children is not None:
                children.discard(cid)
                if not children:
                    del self._children_by_uid[facts.uid_ref]

    def _join(self, facts: _Facts) -> _Sandbox | None:
        if facts.sandbox_ref is not None:
            return self._sandboxes.get(facts.sandbox_ref)
        if facts.uid_ref is not None:
            sids = self._sandboxes_by_uid.get(facts.uid_ref)
            if sids:
                if len(sids) == 1:
                    return self._sandboxes[next(iter(sids))]
                return max((self._sandboxes[s] for s in sids), key=lambda s: s.order)
        return None

    def _compute(self, cid: ContainerId) -> Workspace | None:
        """The container's visible snapshot from its facts, or None if it is not visible."""
        facts = self._facts.get(cid)
        if facts is None:
            return None
        rec = facts.record
        if rec is None:
            return None
        sandbox = self._join(facts)
        if sandbox is None or facts.name != sandbox.scheme.container_name:
            return None
        identity = sandbox.identity
        labels = rec.labels
        cri = rec.cri_container
        return Workspace(
            instance_id=identity.instance_id,
            workspace_id=identity.workspace_id,
            owner_id=identity.owner_id,
            pod_name=labels.get(POD_NAME_LABEL) or sandbox.pod_name,
            pod_namespace=labels.get(POD_NAMESPACE_LABEL) or sandbox.pod_namespace,
            pod_uid=labels.get(POD_UID_LABEL) or sandbox.uid or "",
            sandbox_id=sandbox.id,
            container_id=cid,
            image=rec.image,
            pod_labels=sandbox.pod_labels,
            created_at=rec.created_at,
            state=_state(facts),
            pid=facts.pid,
            upperdir=facts.upperdir,
            cgroup_path=rec.cgroup_path,
            rootfs=facts.rootfs,
            exit_status=facts.exit_status,
            container_name=facts.name,
            attempt=cri.attempt if cri is not None else None,
            image_ref=cri.image_ref if cri is not None else None,
            log_path=cri.log_path if cri is not None else None,
            mounts=rec.mounts,
            pod_annotations=sandbox.pod_annotations,
            container_annotations=cri.annotations if cri is not None else _EMPTY,
            started_at=facts.started_at,
            exited_at=facts.exited_at,
        )

    def _refresh_all(self, cids: Iterable[ContainerId], ts: float) -> list[WorkspaceChange]:
        out: list[WorkspaceChange] = []
        ordered = sorted(cids, key=self._order_key)
        for cid in ordered:
            self._refresh(cid, ts, out)
        return out

    def _order_key(self, cid: ContainerId) -> tuple[int, float, str]:
        facts = self._facts.get(cid)
        if facts is None or facts.record is None:
            return (-1, float("-inf"), cid)
        return _record_newness(facts.record)

    def _refresh(
        self, cid: ContainerId, ts: float, out: list[WorkspaceChange], *, learned: bool = False
    ) -> None:
        """Recompute one container's snapshot and publish it if it differs.

        `learned`: a fact shown on the snapshot was just learned, so it differs if visible
        (saves the comparison on the hot path).
        """
        old = self._visible.get(cid)
        new = self._compute(cid)
        if new is None and old is None:
            return
        if not learned and new is not None and old is not None and new == old:
            return
        self._publish(cid, old, new, ts, out)

    def _publish(
        self,
        cid: ContainerId,
        old: Workspace | None,
        new: Workspace | None,
        ts: float,
        out: list[WorkspaceChange],
    ) -> None:
        """Make `new` the container's visible snapshot; report the lifecycle steps."""
        self._containers_snapshot = self._workspaces_snapshot = None
        if new is None:
            if old is None:
                return
            self._visible.pop(cid, None)
            self._reported.pop(cid, None)
            self._unresolved.pop(cid, None)
            self._instance_drop(old)
            out.append(WorkspaceChange(kind=ChangeKind.REMOVED, ts=ts, workspace=old))
            return
        self._visible[cid] = new
        if old is not None and old.instance_id != new.instance_id:
            self._instance_drop(old)
        self._instance_put(new)
        facts = self._facts[cid]
        if (
            facts.phase == _ALIVE
            and facts.pid is not None
            and facts.upperdir is None
            and not facts.told
            and not facts.asked
            and facts.record is not None
        ):
            facts.asked = True
            self._unresolved[cid] = None
            self._needs.append(
                NeedLocation(
                    container_id=cid,
                    pid=facts.pid,
                    snapshotter=facts.record.snapshotter,
                    snapshot_key=facts.record.snapshot_key or cid,
                    want_started_at=facts.started_at is None,
                )
            )
        elif facts.upperdir is not None and self._unresolved:
            self._unresolved.pop(cid, None)  # an event told it meanwhile; the answer is moot
        flags = self._reported.get(cid, 0)
        if not flags & _REPORTED_CREATED:
            flags |= _REPORTED_CREATED
            out.append(WorkspaceChange(kind=ChangeKind.CREATED, ts=ts, workspace=new))
        running = new.state is WorkspaceState.RUNNING
        if running and not flags & (_REPORTED_RUNNING | _REPORTED_EXITED):
            flags |= _REPORTED_RUNNING
            out.append(WorkspaceChange(kind=ChangeKind.RUNNING, ts=ts, workspace=new))
        if new.state is WorkspaceState.EXITED and not flags & _REPORTED_EXITED:
            flags |= _REPORTED_EXITED
            out.append(WorkspaceChange(kind=ChangeKind.EXITED, ts=ts, workspace=new))
        self._reported[cid] = flags

    def _instance_put(self, ws: Workspace) -> None:
        iid = ws.instance_id
        entries = self._instances.get(iid)
        if entries is None:
            self._instances[iid] = {ws.container_id: ws}
            self._newest[iid] = ws
            return
        entries[ws.container_id] = ws
        self._newest[iid] = max(entries.values(), key=_newness)

    def _instance_drop(self, ws: Workspace) -> None:
        iid = ws.instance_id
        entries = self._instances.get(iid)
        if entries is None or entries.pop(ws.container_id, None) is None:
            return
        if entries:
            self._newest[iid] = max(entries.values(), key=_newness)
        else:
            del self._instances[iid]
            del self._newest[iid]

    def _dirty(self) -> None:
        self._containers_snapshot = None
        self._workspaces_snapshot = None


_HANDLERS: Final[dict[type, Callable[[Index, Any], list[WorkspaceChange]]]] = {
    ContainerSeen: Index._on_container_seen,
    ContainerDeleted: Index._on_container_deleted,
    TaskCreated: Index._on_task_created,
    TaskStarted: Index._on_task_started,
    TaskExited: Index._on_task_ended,
    TaskDeleted: Index._on_task_ended,
    TaskSeen: Index._on_task_seen,
    Resolved: Index._on_resolved,
    Relisted: Index._on_relisted,
    ContainerChanged: Index._on_container_changed,
    LogChecked: Index._on_log_checked,
}
