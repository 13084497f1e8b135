"""The index: a pure state machine from containerd records and events to workspaces.

Synopsis::

    index = Index()                                   # GITPOD_SCHEMES
    for change in index.apply(event):                 # any watcher.inputs.Event
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
* **Two sources, one index.** NRI tells containers (`ContainerAnnounced`) before containerd
  creates them; such a container is provisional until containerd shows it (its record, its
  /containers/create, a listing), and containerd's record wins over NRI's. A listing without
  it keeps it for `start_grace` seconds after it was told (it may not exist yet), then drops
  it; NRI's RemoveContainer (`AnnouncementWithdrawn`) ends only a container containerd never
  showed; a listing that keeps one asks for another after its grace (`NeedRelist`), so one
  that never comes (containerd killed between NRI's call and its own creation) does not stay.
  Changes stay exactly-once across both sources: a workspace told by NRI and then by
  containerd is one `created`, one `running`; `starting` (`StartAnnounced`) is reported at
  most once, between `created` and `running`.
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

Rooms (each module opens with the rules it keeps; this one composes them):

* `watcher.facts` — what is known of one container: `Facts`, the task phases, `learn`,
  `merge`, tombstones;
* `watcher.podjoin` — the CRI pod join: workspace sandboxes, app containers joined to them,
  the visible `Workspace` a join yields;
* `watcher.publishing` — the visible snapshots, the lifecycle steps reported, instances →
  newest, the immutable snapshots;
* here — the one mutator `apply`, one handler per input, what is candidate, ignored or
  pending, when to ask the shell (needs), and what a listing corrects.

Rejected: rebuilding all workspaces after each event (O(n) per event); a "second pass" over a
listing to join containers to sandboxes listed after them (the join is recomputed whenever
either side changes, so one pass suffices); treating a sandbox deletion as the end of its
containers (the kubelet deletes the containers first; a reordered delivery must not matter).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from watcher.containerd_records import ContainerId, ContainerRecord, SandboxId
from watcher.cri import CONTAINER_NAME_LABEL, ContainerKind, kind_of
from watcher.errors import UsageError
from watcher.facts import (
    ALIVE,
    EXITED,
    NO_TASK,
    Facts,
    Tombstones,
    container_name,
    merge,
    record_newness,
)
from watcher.inputs import (
    AnnouncementWithdrawn,
    ContainerAnnounced,
    ContainerChanged,
    ContainerDeleted,
    ContainerSeen,
    Event,
    LogChecked,
    LookupFailed,
    Relisted,
    Resolved,
    StartAnnounced,
    TaskCreated,
    TaskDeleted,
    TaskExited,
    TaskSeen,
    TaskStarted,
)
from watcher.labels import GITPOD_SCHEMES, LabelScheme
from watcher.needs import Need, NeedLogCheck, NeedRecord, NeedRelist
from watcher.podjoin import PodJoin
from watcher.published import InstanceId, Workspace, WorkspaceChange
from watcher.publishing import Published
from watcher.settings import START_GRACE, TOMBSTONES

__all__ = ["Index"]


class Index:
    """Workspaces by container and by instance, from containerd records and events.

    Args:
        schemes: the label schemes that make a pod a workspace pod (first match wins).
        tombstone_limit: how many deleted container ids to remember.
        start_grace: see `settings.START_GRACE` (0: no task in a listing means exited).

    The index is not thread-safe and needs no lock in a single trio task: `apply` runs to
    completion, and every query answers from immutable published objects.
    """

    def __init__(
        self,
        schemes: Sequence[LabelScheme] = GITPOD_SCHEMES,
        *,
        tombstone_limit: int = TOMBSTONES,
        start_grace: float = START_GRACE,
    ) -> None:
        if not schemes:
            raise UsageError("the index needs at least one label scheme")
        if tombstone_limit < 1:
            raise UsageError("tombstone_limit must be at least 1")
        if start_grace < 0:
            raise UsageError("start_grace must not be negative")
        self._schemes: tuple[LabelScheme, ...] = tuple(schemes)
        self._names: frozenset[str] = frozenset(s.container_name for s in self._schemes)
        self._start_grace = start_grace
        # what is known of app containers (pending ones too), and which ids do not matter
        self._facts: dict[ContainerId, Facts] = {}
        self._ignored: set[str] = set()  # seen, not of interest (noise, sidecars, other pods)
        self._tombstones = Tombstones(tombstone_limit)
        self._pods = PodJoin(self._schemes)
        self._published = Published()
        # the shell's side: what it is asked for
        self._needs: list[Need] = []
        self._unresolved: dict[ContainerId, None] = {}  # an ordered set
        self._applied = 0  # inputs applied: the clock of `mark()`
        self._updates = 0  # snapshots published, lifecycle step or not (see `updates`)
        self._listed = False  # a first listing was applied
        self._expired: frozenset[ContainerId] = frozenset()

    # --- queries ---------------------------------------------------------------------------

    def workspaces(self) -> Mapping[InstanceId, Workspace]:
        """Every instance with a visible workspace container, mapped to its newest one.

        An immutable snapshot (copied once after each change, then shared): use `by_instance`
        in hot paths.
        """
        return self._published.workspaces()

    def containers(self) -> Mapping[ContainerId, Workspace]:
        """Every visible workspace container, old exited ones of a replaced instance too."""
        return self._published.containers()

    def by_instance(self, instance_id: InstanceId | str) -> Workspace | None:
        """The instance's newest workspace container; None once none is left."""
        return self._published.newest.get(InstanceId(instance_id))

    def by_container(self, container_id: ContainerId | str) -> Workspace | None:
        return self._published.visible.get(ContainerId(container_id))

    def is_candidate(self, labels: Mapping[str, str]) -> bool:
        """Could a container with these labels matter: a matching sandbox, or an app container
        named like a scheme's main container? (Others need no Get and no resolving.)"""
        kind = kind_of(labels)
        if kind is ContainerKind.SANDBOX:
            return any(s.identify(labels) is not None for s in self._schemes)
        if kind is ContainerKind.CONTAINER:
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

    @property
    def updates(self) -> int:
        """Grows whenever a published snapshot changes, also without a lifecycle change (a
        record's details filled in later): for waiters whose condition reads more than the
        lifecycle."""
        return self._updates

    @property
    def expired_announcements(self) -> frozenset[ContainerId]:
        """Containers NRI announced that the last listing dropped: containerd never made
        them within the start grace (a creation that failed, a containerd killed in between).
        Their `removed` is no correction of a missed event: there was none to miss."""
        return self._expired

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

    def _known_labels(self, cid: ContainerId) -> Mapping[str, str] | None:
        """The labels of the container's record, sandbox or app container; None if unknown."""
        sandbox = self._pods.sandboxes.get(SandboxId(cid))
        if sandbox is not None:
            return sandbox.record.labels
        record = self.container_record(cid)
        return None if record is None else record.labels

    # --- the one mutator -------------------------------------------------------------------

    def apply(self, event: Event) -> list[WorkspaceChange]:
        """Join the event's facts in; the resulting workspace changes, in causal order."""
        handler = _HANDLERS.get(type(event))
        if handler is None:  # a programming error, not a caller's input
            raise TypeError(f"not an index input: {type(event).__name__}")
        self._applied += 1
        return handler(self, event)

    # --- handlers --------------------------------------------------------------------------

    def _on_container_changed(self, event: ContainerChanged) -> list[WorkspaceChange]:
        cid = event.container_id
        if cid in self._tombstones:
            return []
        facts = self._facts.get(cid)
        if facts is not None:
            facts.announced = False  # containerd holds it now
        labels = event.labels
        if labels is not None:  # an update: its labels say what the container is
            if not self.is_candidate(labels):
                return self._ignore(cid, event.ts)
            known = self._known_labels(cid)
            if known is not None and known == labels:
                return []  # what CRI updates (status, network) is nothing the index shows
        self._needs.append(NeedRecord(container_id=cid))
        return []

    def _on_container_announced(self, event: ContainerAnnounced) -> list[WorkspaceChange]:
        rec = event.container
        cid = rec.id
        if cid in self._tombstones or cid in self._ignored:
            return []
        kind = kind_of(rec.labels)
        if kind is ContainerKind.SANDBOX:
            # NRI tells a pod once its sandbox runs: containerd holds it already
            if SandboxId(cid) in self._pods.sandboxes:
                return []  # containerd's record says more
            return self._sandbox_seen(rec, event.ts)
        if kind is not ContainerKind.CONTAINER or container_name(rec) not in self._names:
            return []  # containerd's record decides what it is
        facts = self._facts.get(cid)
        if facts is not None and facts.record is not None:
            return []  # known from containerd (or told already): containerd's record wins
        out = self._container_seen(rec, event.ts, event.mono)
        self._facts[cid].announced = True
        return out

    def _on_start_announced(self, event: StartAnnounced) -> list[WorkspaceChange]:
        out: list[WorkspaceChange] = []
        self._published.announce_start(event.container_id, event.ts, out)
        return out

    def _on_announcement_withdrawn(self, event: AnnouncementWithdrawn) -> list[WorkspaceChange]:
        facts = self._facts.get(event.container_id)
        if facts is None or not facts.announced:
            return []  # containerd holds it: its own delete event says when it is gone
        return self._on_container_deleted(
            ContainerDeleted(ts=event.ts, container_id=event.container_id)
        )

    def _on_log_checked(self, event: LogChecked) -> list[WorkspaceChange]:
        facts = self._facts.get(event.container_id)
        if facts is None or facts.record is None or not event.exists:
            return []
        if not facts.infer_exit():  # it ran (CRI opened its log), and its task is gone
            return []
        return self._after_learning(event.container_id, facts, event.ts)

    def _on_container_seen(self, event: ContainerSeen) -> list[WorkspaceChange]:
        rec = event.container
        cid = rec.id
        if cid in self._tombstones:
            return []
        kind = kind_of(rec.labels)
        if kind is ContainerKind.SANDBOX:
            return self._sandbox_seen(rec, event.ts)
        if kind is ContainerKind.CONTAINER and container_name(rec) in self._names:
            return self._container_seen(rec, event.ts, event.mono)
        return self._ignore(cid, event.ts)

    def _on_container_deleted(self, event: ContainerDeleted) -> list[WorkspaceChange]:
        cid = event.container_id
        if not self._tombstones.bury(cid):
            return []
        self._ignored.discard(cid)
        pods = self._pods
        sandbox = pods.sandboxes.get(SandboxId(cid))
        if sandbox is not None:
            sandbox.deleted = True  # kept while a live container joins it
            pods.purge(sandbox)
            return []
        facts = self._facts.pop(cid, None)
        if facts is None or facts.record is None:
            return []
        pods.detach(cid, facts)
        out: list[WorkspaceChange] = []
        self._refresh(cid, event.ts, out)
        pods.release(facts)
        return out

    def _on_task_created(self, event: TaskCreated) -> list[WorkspaceChange]:
        facts = self._task_facts(event.container_id)
        if facts is None:
            return []
        told = event.located and not facts.told
        if told:
            facts.told = facts.settled = True
        learned = facts.learn(
            phase=ALIVE, pid=event.pid, upperdir=event.upperdir, rootfs=event.rootfs
        )
        if not (learned or told):
            return []
        return self._after_learning(event.container_id, facts, event.ts)

    def _on_task_started(self, event: TaskStarted) -> list[WorkspaceChange]:
        facts = self._task_facts(event.container_id)
        if facts is None or not facts.learn(
            phase=ALIVE, pid=event.pid, started_at=event.started_at
        ):
            return []
        return self._after_learning(event.container_id, facts, event.ts)

    def _on_task_ended(self, event: TaskExited | TaskDeleted) -> list[WorkspaceChange]:
        cid = event.container_id
        if event.exec_id and event.exec_id != cid:
            return []  # an exec'd process ended, not the container's task
        facts = self._task_facts(cid)
        if facts is None or not facts.learn(
            phase=EXITED,
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

    def _on_lookup_failed(self, event: LookupFailed) -> list[WorkspaceChange]:
        cid = event.container_id
        facts = self._facts.get(cid)
        if cid in self._unresolved and facts is not None:
            del self._unresolved[cid]
            facts.asked = False  # asked again with the next news of it, or the next listing
        return []

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

        old_facts = self._facts
        old_sandboxes = self._pods.sandboxes
        old_published = self._published
        old_unresolved = self._unresolved
        first = not self._listed
        self._listed = True
        self._facts = {}
        self._pods = pods = PodJoin(self._schemes)
        self._published = Published()
        self._ignored = set()
        self._unresolved = {}
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
                made = pods.add(old_sandbox.record)
                if made is not None:
                    made.touched, made.deleted = old_sandbox.touched, old_sandbox.deleted
        for cid, rec in records.items():
            kind = kind_of(rec.labels)
            if kind is ContainerKind.SANDBOX:
                sandbox = pods.add(rec)
                if sandbox is None:
                    self._ignored.add(cid)
                elif (previous := old_sandboxes.get(SandboxId(cid))) is not None:
                    sandbox.touched = previous.touched
                continue
            if kind is not ContainerKind.CONTAINER or container_name(rec) not in self._names:
                self._ignored.add(cid)
                continue
            facts = old_facts.get(cid)
            if facts is None:
                facts = Facts()
            elif facts.record is not None:
                rec = merge(facts.record, rec)
            self._facts[cid] = facts
            facts.announced = False  # containerd holds it
            if facts.first_seen is None:
                facts.first_seen = event.mono
            pods.attach(cid, facts, rec)
            if cid in old_unresolved and since is not None:
                self._unresolved[cid] = None  # its answer is on its way
            elif facts.upperdir is None and not facts.told:
                facts.asked = False  # ask the node again for what is still unknown
            task = tasks.get(cid)
            if task is not None:
                facts.learn_task(task)
            elif newer(facts.touched):
                pass  # a task event came after the listing was requested: it is newer
            elif facts.phase == ALIVE:
                facts.phase = EXITED  # the task is gone
            elif facts.phase == NO_TASK:
                self._without_task(cid, facts, rec, event, first)
        recheck: float | None = None  # when the earliest NRI announcement kept expires
        expired: list[ContainerId] = []
        for cid, facts in old_facts.items():
            if cid in records or cid in self._facts:
                continue
            # created (or told about) while the listing ran: not in it, not gone; told by NRI
            # before containerd creates it: not in it yet, for a while
            if not (newer(facts.touched) or self._still_announced(facts, event)):
                if facts.announced:
                    expired.append(cid)
                continue
            self._facts[cid] = facts
            if facts.record is not None:
                pods.attach(cid, facts, facts.record)
            if cid in old_unresolved:
                self._unresolved[cid] = None  # `newer` implies a `since`: same shell
            if facts.announced and facts.first_seen is not None and event.mono is not None:
                expires = facts.first_seen + self._start_grace
                recheck = expires if recheck is None else min(recheck, expires)
        self._expired = frozenset(expired)
        if recheck is not None:
            self._needs.append(NeedRelist(at=recheck))  # only a later listing can tell
        pods.purge_all()

        out: list[WorkspaceChange] = []
        visible: dict[ContainerId, Workspace] = {}
        for cid, facts in self._facts.items():
            ws = pods.workspace(cid, facts)
            if ws is not None:
                visible[cid] = ws
        self._updates += 1
        for ws in self._published.republish(old_published, visible, ts, out):
            self._ask_where(ws.container_id)
        return out

    # --- helpers ---------------------------------------------------------------------------

    def _without_task(
        self, cid: ContainerId, facts: Facts, rec: ContainerRecord, event: Relisted, first: bool
    ) -> None:
        """A listing shows a container never seen with a task, without one: not started
        yet, or exited and its task deleted (CRI deletes an exited task at once)?

        Evidence first: CRI opens a container's log file when it starts it, so with a log
        file it ran. That is asked at the first listing, and later only of a container known
        for `start_grace` (monotonic): the log is opened a moment before the task is created.
        A container without a CRI log path known that long is taken as exited. Both are
        inferences: a later sign of a live task revises them (`Facts.infer_exit`).
        """
        log_path = rec.cri_container.log_path if rec.cri_container is not None else None
        if event.mono is None or facts.first_seen is None:  # not stamped: containerd's clock
            known_long = self._start_grace <= 0 or (
                rec.created_at is None or event.ts - rec.created_at >= self._start_grace
            )
            if known_long:
                facts.infer_exit()
                return
        else:
            known_long = event.mono - facts.first_seen >= self._start_grace
        if log_path and (first or known_long):
            self._needs.append(NeedLogCheck(container_id=cid, log_path=log_path))
        elif known_long:
            facts.infer_exit()

    def _still_announced(self, facts: Facts, event: Relisted) -> bool:
        """Told by NRI, not shown by containerd yet, and recently: NRI tells a container
        before containerd creates it, so a listing may miss it for a moment; one announced
        `start_grace` before the listing without containerd ever showing it never came."""
        if not facts.announced:
            return False
        if event.mono is None or facts.first_seen is None:
            return True  # not stamped: a test's listing; the withdrawal or delete ends it
        return event.mono - facts.first_seen < self._start_grace

    def _task_facts(self, cid: ContainerId) -> Facts | None:
        """The facts to join a task event into; None when the container does not matter."""
        facts = self._facts.get(cid)
        if facts is None:
            if (
                cid in self._tombstones
                or cid in self._ignored
                or SandboxId(cid) in self._pods.sandboxes
            ):
                return None
            facts = self._facts[cid] = Facts()  # pending until the container shows up
        facts.touched = self._applied
        return facts

    def _after_learning(self, cid: ContainerId, facts: Facts, ts: float) -> list[WorkspaceChange]:
        if facts.record is None:
            return []
        out: list[WorkspaceChange] = []
        self._refresh(cid, ts, out, learned=True)
        return out

    def _sandbox_seen(self, rec: ContainerRecord, ts: float) -> list[WorkspaceChange]:
        pods = self._pods
        sid = SandboxId(rec.id)
        old = pods.sandboxes.get(sid)
        if old is not None:
            if old.record == rec:
                return []
            rec = merge(old.record, rec)
            pods.drop(old)
        self._facts.pop(rec.id, None)  # pending task facts of the pause container: not needed
        new = pods.add(rec)
        if new is None:
            self._ignored.add(rec.id)
        else:
            self._ignored.discard(rec.id)
            new.touched = self._applied
        affected: set[ContainerId] = set()
        for sandbox in (old, new):
            if sandbox is not None:
                affected |= pods.children(sandbox)
        return self._refresh_all(affected, ts)

    def _container_seen(
        self, rec: ContainerRecord, ts: float, mono: float | None
    ) -> list[WorkspaceChange]:
        cid = rec.id
        self._ignored.discard(cid)
        facts = self._facts.get(cid)
        if facts is None:
            facts = self._facts[cid] = Facts()
        facts.touched = self._applied
        facts.announced = False  # (`_on_container_announced` sets it again for NRI's)
        if facts.first_seen is None:
            facts.first_seen = mono
        if facts.record is not None:
            if facts.record == rec:
                return []
            rec = merge(facts.record, rec)
            self._pods.detach(cid, facts)
        self._pods.attach(cid, facts, rec)
        out: list[WorkspaceChange] = []
        self._refresh(cid, ts, out)
        return out

    def _ignore(self, cid: ContainerId, ts: float) -> list[WorkspaceChange]:
        """A container that does not matter (now): forget what we had on it."""
        self._ignored.add(cid)
        pods = self._pods
        sandbox = pods.sandboxes.get(SandboxId(cid))
        if sandbox is not None:  # a sandbox whose labels no longer match
            affected = pods.children(sandbox)
            pods.drop(sandbox)
            return self._refresh_all(affected, ts)
        facts = self._facts.pop(cid, None)
        if facts is None or facts.record is None:
            return []
        pods.detach(cid, facts)
        out: list[WorkspaceChange] = []
        self._refresh(cid, ts, out)
        return out

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
        return record_newness(facts.record)

    def _refresh(
        self, cid: ContainerId, ts: float, out: list[WorkspaceChange], *, learned: bool = False
    ) -> None:
        """Recompute one container's snapshot and publish it if it differs.

        `learned`: a fact shown on the snapshot was just learned, so it differs if visible
        (saves the comparison on the hot path).
        """
        published = self._published
        old = published.visible.get(cid)
        facts = self._facts.get(cid)
        new = None if facts is None else self._pods.workspace(cid, facts)
        if new is None:
            if old is None:
                return
            self._unresolved.pop(cid, None)  # not visible: its answer is moot
        elif old is not None and not learned and new == old:
            return
        else:
            self._ask_where(cid)
        self._updates += 1
        published.publish(cid, old, new, ts, out)

    def _ask_where(self, cid: ContainerId) -> None:
        """A visible container's snapshot changes: ask where its files are, if it is time."""
        facts = self._facts[cid]
        need = facts.ask_where()
        if need is not None:
            self._unresolved[cid] = None
            self._needs.append(need)
        elif facts.upperdir is not None and self._unresolved:
            self._unresolved.pop(cid, None)  # an event told it meanwhile; the answer is moot


_HANDLERS: Final[dict[type, Callable[[Index, Any], list[WorkspaceChange]]]] = {
    ContainerAnnounced: Index._on_container_announced,
    StartAnnounced: Index._on_start_announced,
    AnnouncementWithdrawn: Index._on_announcement_withdrawn,
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
    LookupFailed: Index._on_lookup_failed,
}
