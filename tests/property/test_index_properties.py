"""Properties of the index over generated pods: order, duplicates, drops, snapshot = fold.

Each generated pod is a small *model* (its kind, its containers and how far each got in its
lifecycle). From the model we derive, independently of the index:

* the full list of events containerd (and the shell) would produce for it, in causal order;
* what containerd holds at the end (for a `Relisted`);
* the workspaces that the full information implies (`expected_containers`).

The index is then fed the events shuffled, duplicated, degraded, dropped, or relisted, and must
land on the implied state.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import record_builders
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from record_builders import IMAGE

from watcher.containerd_records import (
    ContainerId,
    ContainerRecord,
    SandboxId,
    TaskRecord,
    TaskStatus,
)
from watcher.index import Index
from watcher.inputs import (
    ContainerChanged,
    ContainerDeleted,
    ContainerSeen,
    Event,
    LookupFailed,
    Relisted,
    Resolved,
    TaskCreated,
    TaskDeleted,
    TaskExited,
    TaskSeen,
    TaskStarted,
)
from watcher.needs import NeedLocation, NeedRecord
from watcher.published import ChangeKind, InstanceId, Workspace, WorkspaceChange, WorkspaceState

PROPS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NS = "default"
WORKSPACE_KINDS = ("mk1", "mk2", "mk2early")
KINDS = (*WORKSPACE_KINDS, "noise", "lookalike")
#: far after every generated creation time, but within the start grace of fresh containers
T_END = 1_000_000.0
ORDER = (ChangeKind.CREATED, ChangeKind.RUNNING, ChangeKind.EXITED, ChangeKind.REMOVED)

# container stages: how far the container got
NOT_STARTED, TASK_CREATED, STARTED, EXITED, TASK_DELETED, DELETED = range(6)


@dataclass
class CModel:
    cid: str
    name: str
    attempt: int
    created_at: float
    stage: int
    pid: int
    exit_status: int
    upper_in_event: bool
    exec_exit: bool

    @property
    def upper(self) -> str:
        return f"/var/lib/containerd/snapshots/{self.cid}/fs"

    @property
    def rootfs(self) -> str:
        return f"/run/containerd/io.containerd.runtime.v2.task/k8s.io/{self.cid}/rootfs"

    @property
    def started_at(self) -> float:
        return self.created_at + 2

    @property
    def exited_at(self) -> float:
        return self.created_at + 3


@dataclass
class PodModel:
    n: int
    kind: str
    cri: bool
    created_at: float
    containers: list[CModel]
    sandbox_deleted: bool

    @property
    def sid(self) -> str:
        return f"sb{self.n}"

    @property
    def uid(self) -> str:
        return f"uid-{self.n}"

    @property
    def name(self) -> str:
        return f"pod-{self.n}"

    @property
    def iid(self) -> str:
        return f"inst-{self.n}"

    @property
    def wsid(self) -> str:
        return f"ws-{self.n}"

    @property
    def owner(self) -> str:
        return f"owner-{self.n}"

    @property
    def own_labels(self) -> dict[str, str]:
        common = {"app": "gitpod", "component": "workspace", "owner": self.owner}
        if self.kind == "mk1":
            return {**common, "gpwsman": "true", "workspaceID": self.iid, "metaID": self.wsid}
        if self.kind == "mk2":
            return {
                **common,
                "gitpod.io/managed-by": "ws-manager-mk2",
                "gitpod.io/instanceID": self.iid,
                "workspaceID": self.iid,
                "metaID": self.wsid,
            }
        if self.kind == "mk2early":
            return {**common, "gitpod.io/instanceID": self.iid, "workspaceID": self.wsid}
        if self.kind == "lookalike":  # workspace-ish labels, but neither generation's
            return {"app": "gitpod", "workspaceID": self.iid}
        return {"app": "nginx"}

    @property
    def is_workspace_pod(self) -> bool:
        return self.kind in WORKSPACE_KINDS


@st.composite
def pod_models(draw: st.DrawFn, n: int) -> PodModel:
    kind = draw(st.sampled_from(KINDS))
    cri = draw(st.sampled_from((True, True, True, False)))
    replacements = draw(st.integers(0, 2))
    sidecars = draw(st.integers(0, 1))
    base = 1000.0 * n
    containers = []
    for attempt in range(replacements + 1):
        newest = attempt == replacements
        stage = draw(st.integers(0, DELETED)) if newest else draw(st.integers(EXITED, DELETED))
        containers.append(
            CModel(
                cid=f"c{n}-{attempt}",
                name="workspace",
                attempt=attempt,
                # a container never started is fresh (see the index's start grace)
                created_at=T_END - 1 if stage == NOT_STARTED else base + 100 * attempt + 10,
                stage=stage,
                pid=10_000 * (n + 1) + attempt,
                exit_status=draw(st.sampled_from((0, 1, 137))),
                upper_in_event=draw(st.booleans()),
                exec_exit=draw(st.booleans()),
            )
        )
    for k in range(sidecars):
        stage = draw(st.integers(0, DELETED))
        containers.append(
            CModel(
                cid=f"s{n}-{k}",
                name="proxy",
                attempt=0,
                created_at=T_END - 1 if stage == NOT_STARTED else base + 5,
                stage=stage,
                pid=10_000 * (n + 1) + 500 + k,
                exit_status=0,
                upper_in_event=True,
                exec_exit=False,
            )
        )
    all_deleted = all(c.stage == DELETED for c in containers)
    sandbox_deleted = all_deleted and draw(st.booleans())
    return PodModel(
        n=n,
        kind=kind,
        cri=cri,
        created_at=base,
        containers=containers,
        sandbox_deleted=sandbox_deleted,
    )


@st.composite
def pod_sets(draw: st.DrawFn, max_pods: int = 8) -> list[PodModel]:
    count = draw(st.integers(1, max_pods))
    return [draw(pod_models(n)) for n in range(count)]


# --- what containerd holds, and the events it emits -------------------------------------------


def sandbox_record(pod: PodModel) -> ContainerRecord:
    return record_builders.sandbox_record(
        pod.sid,
        uid=pod.uid,
        pod=pod.name,
        labels=pod.own_labels,
        created_at=pod.created_at,
        namespace=NS,
        cri=pod.cri,
    )


def container_record(pod: PodModel, c: CModel) -> ContainerRecord:
    return record_builders.container_record(
        c.cid,
        sid=pod.sid,
        uid=pod.uid,
        pod=pod.name,
        created_at=c.created_at,
        name=c.name,
        namespace=NS,
        attempt=c.attempt,
        cri=pod.cri,
    )


def container_events(pod: PodModel, c: CModel) -> list[Event]:
    cid = ContainerId(c.cid)
    t = c.created_at
    events: list[Event] = [ContainerSeen(ts=t, container=container_record(pod, c))]
    if c.stage >= TASK_CREATED:
        if c.upper_in_event:
            events.append(
                TaskCreated(
                    ts=t + 1, container_id=cid, pid=c.pid, upperdir=c.upper, rootfs=c.rootfs
                )
            )
        else:  # the shell had to look it up
            events.append(TaskCreated(ts=t + 1, container_id=cid, pid=c.pid))
            events.append(Resolved(ts=t + 1, container_id=cid, upperdir=c.upper, rootfs=c.rootfs))
    if c.stage >= STARTED:
        events.append(TaskStarted(ts=t + 2, container_id=cid, pid=c.pid, started_at=c.started_at))
        if c.exec_exit:  # an exec'd process ends: not the container
            events.append(
                TaskExited(
                    ts=t + 2, container_id=cid, exec_id="exec-1", pid=c.pid + 1, exit_status=3
                )
            )
            events.append(
                TaskDeleted(
                    ts=t + 2, container_id=cid, exec_id="exec-1", pid=c.pid + 1, exit_status=3
                )
            )
        # the shell may also have read the task (a Get, a listing of tasks)
        seen_task = TaskRecord(container_id=cid, pid=c.pid, status=TaskStatus.RUNNING)
        events.append(TaskSeen(ts=t + 2, task=seen_task))
    if c.stage >= EXITED:
        stopped = TaskRecord(
            container_id=cid,
            pid=c.pid,
            status=TaskStatus.STOPPED,
            exit_status=c.exit_status,
            exited_at=c.exited_at,
        )
        events.append(TaskSeen(ts=t + 3, task=stopped))
        events.append(
            TaskExited(
                ts=t + 3,
                container_id=cid,
                exec_id=c.cid,
                pid=c.pid,
                exit_status=c.exit_status,
                exited_at=c.exited_at,
            )
        )
    if c.stage >= TASK_DELETED:
        events.append(
            TaskDeleted(
                ts=t + 4,
                container_id=cid,
                exec_id="",
                pid=c.pid,
                exit_status=c.exit_status,
                exited_at=c.exited_at,
            )
        )
    if c.stage >= DELETED:
        events.append(ContainerDeleted(ts=t + 5, container_id=cid))
    return events


def pod_events(pod: PodModel) -> list[Event]:
    """The pod's events in causal order."""
    sid = ContainerId(pod.sid)
    t = pod.created_at
    pause = 90_000 + pod.n
    events: list[Event] = [
        ContainerSeen(ts=t, container=sandbox_record(pod)),
        TaskCreated(ts=t, container_id=sid, pid=pause, upperdir="/pause/fs"),
        TaskStarted(ts=t, container_id=sid, pid=pause),
    ]
    for c in pod.containers:
        events += container_events(pod, c)
    if pod.sandbox_deleted:
        end = T_END - 0.5
        events += [
            TaskExited(ts=end, container_id=sid, exec_id=pod.sid, pid=pause, exit_status=0),
            TaskDeleted(ts=end, container_id=sid, exec_id="", pid=pause, exit_status=0),
            ContainerDeleted(ts=end, container_id=sid),
        ]
    return events


def final_listing(pods: Iterable[PodModel], ts: float = T_END) -> Relisted:
    """What containerd holds once every pod reached its final stage."""
    containers: list[ContainerRecord] = []
    tasks: list[TaskRecord] = []
    for pod in pods:
        if pod.sandbox_deleted:
            continue
        containers.append(sandbox_record(pod))
        tasks.append(
            TaskRecord(
                container_id=ContainerId(pod.sid), pid=90_000 + pod.n, status=TaskStatus.RUNNING
            )
        )
        for c in pod.containers:
            if c.stage >= DELETED:
                continue
            containers.append(container_record(pod, c))
            cid = ContainerId(c.cid)
            if c.stage == TASK_CREATED:
                tasks.append(TaskRecord(container_id=cid, pid=c.pid, status=TaskStatus.CREATED))
            elif c.stage == STARTED:
                tasks.append(TaskRecord(container_id=cid, pid=c.pid, status=TaskStatus.RUNNING))
            elif c.stage == EXITED:
                tasks.append(
                    TaskRecord(
                        container_id=cid,
                        pid=c.pid,
                        status=TaskStatus.STOPPED,
                        exit_status=c.exit_status,
                        exited_at=c.exited_at,
                    )
                )
    return Relisted(ts=ts, containers=tuple(containers), tasks=tuple(tasks))


# --- what the full information implies ---------------------------------------------------------


def expected_containers(pods: Iterable[PodModel]) -> dict[ContainerId, Workspace]:
    out: dict[ContainerId, Workspace] = {}
    for pod in pods:
        if not pod.is_workspace_pod:
            continue
        own = pod.own_labels
        for c in pod.containers:
            if c.name != "workspace" or c.stage >= DELETED:
                continue
            if c.stage == NOT_STARTED:
                state = WorkspaceState.CREATED
            elif c.stage <= STARTED:
                state = WorkspaceState.RUNNING
            else:
                state = WorkspaceState.EXITED
            had_task = c.stage >= TASK_CREATED
            ended = c.stage >= EXITED
            out[ContainerId(c.cid)] = Workspace(
                instance_id=InstanceId(pod.iid),
                workspace_id=pod.wsid,
                owner_id=pod.owner,
                pod_name=pod.name,
                pod_namespace=NS,
                pod_uid=pod.uid,
                sandbox_id=SandboxId(pod.sid),
                container_id=ContainerId(c.cid),
                image=IMAGE,
                pod_labels=own,
                created_at=c.created_at,
                state=state,
                pid=c.pid if had_task else None,
                upperdir=c.upper if had_task else None,
                cgroup_path=f"/kubepods/besteffort/pod{pod.uid}/{c.cid}",
                rootfs=c.rootfs if had_task else None,
                exit_status=c.exit_status if ended else None,
                container_name="workspace",
                attempt=c.attempt if pod.cri else None,
                image_ref="sha256:feed" if pod.cri else None,
                log_path=f"/var/log/pods/{pod.name}/workspace/{c.attempt}.log" if pod.cri else None,
                started_at=c.started_at if c.stage >= STARTED else None,
                exited_at=c.exited_at if ended else None,
                # the scheme that made it a workspace (early mk2 pods are mk2's too)
                scheme="gitpod-mk1" if pod.kind == "mk1" else "gitpod-mk2",
            )
    return out


def expected_newest(containers: dict[ContainerId, Workspace]) -> dict[InstanceId, Workspace]:
    """Per instance its container created last.

    The index orders an instance's containers by attempt first (then creation time, then id);
    in these models each attempt is created after the one before, so the latest creation is
    also the highest attempt, and the oracle need not borrow the index's rule.
    """
    newest: dict[InstanceId, Workspace] = {}
    for ws in containers.values():
        have = newest.get(ws.instance_id)
        if have is None or (ws.created_at or 0) > (have.created_at or 0):
            newest[ws.instance_id] = ws
    return newest


def projection(ws: Workspace) -> Workspace:
    """The fields a listing tells as well as the events: task history is not in a listing."""
    ws = replace(ws, started_at=None)
    if ws.state is WorkspaceState.EXITED:
        ws = replace(ws, pid=None, exit_status=None, exited_at=None, upperdir=None, rootfs=None)
    return ws


def projected(mapping: dict[str, Workspace] | object) -> dict[str, Workspace]:
    assert isinstance(mapping, dict)
    return {k: projection(v) for k, v in mapping.items()}


# --- helpers --------------------------------------------------------------------------------


def resolve(index: Index, uppers: dict[str, CModel], ts: float) -> list[WorkspaceChange]:
    """What the shell does after each event: look up what the index asks for."""
    out: list[WorkspaceChange] = []
    for cid in index.unresolved():
        c = uppers[cid]
        out += index.apply(Resolved(ts=ts, container_id=cid, upperdir=c.upper, rootfs=c.rootfs))
    return out


def models_by_cid(pods: Iterable[PodModel]) -> dict[str, CModel]:
    return {c.cid: c for pod in pods for c in pod.containers}


def check_change_streams(changes: Iterable[WorkspaceChange]) -> dict[str, list[ChangeKind]]:
    """Per container: an ordered subsequence of created, running, exited, removed; no repeats."""
    streams: dict[str, list[ChangeKind]] = defaultdict(list)
    for change in changes:
        streams[change.workspace.container_id].append(change.kind)
    for cid, kinds in streams.items():
        positions = [ORDER.index(k) for k in kinds]
        assert positions == sorted(set(positions)), (cid, kinds)
        assert kinds[0] is ChangeKind.CREATED, (cid, kinds)
    return streams


def check_consistency(index: Index) -> None:
    containers = index.containers()
    by_instance: dict[InstanceId, list[Workspace]] = defaultdict(list)
    for cid, ws in containers.items():
        assert ws.container_id == cid
        assert index.by_container(cid) is ws
        by_instance[ws.instance_id].append(ws)
    workspaces = index.workspaces()
    assert set(workspaces) == set(by_instance)
    for iid, wss in by_instance.items():
        assert index.by_instance(iid) is workspaces[iid]
        assert workspaces[iid] in wss
    for cid in index.unresolved():  # asked where its files are, no answer yet
        ws = containers[cid]
        assert ws.pid is not None and ws.upperdir is None
        if ws.state is WorkspaceState.CREATED:
            assert not ws.running  # `running` waits for the answer (or for the event's word)


def with_duplicates(events: list[Event], rnd: random.Random) -> list[Event]:
    """Insert copies (and degraded copies: a TaskCreate knowing less) at random places."""
    out = list(events)
    for event in rnd.sample(events, k=min(len(events), rnd.randint(0, 10))):
        if isinstance(event, TaskCreated) and rnd.random() < 0.5:
            event = replace(event, pid=0, upperdir=None, rootfs=None)
        out.insert(rnd.randint(0, len(out)), event)
    return out


def interleave(lists: Sequence[list[Event]], rnd: random.Random) -> list[Event]:
    """A random merge that keeps each list's own order."""
    cursors = [0] * len(lists)
    live = [i for i, events in enumerate(lists) if events]
    out: list[Event] = []
    while live:
        i = rnd.choice(live)
        out.append(lists[i][cursors[i]])
        cursors[i] += 1
        if cursors[i] == len(lists[i]):
            live.remove(i)
    return out


# --- (1) any interleaving, any duplicates: the state the full information implies -----------------


@PROPS
@given(pods=pod_sets(), rnd=st.randoms(use_true_random=False), shuffle_all=st.booleans())
def test_any_order_and_duplicates_reach_the_implied_state(
    pods: list[PodModel], rnd: random.Random, shuffle_all: bool
) -> None:
    lists = [pod_events(pod) for pod in pods]
    if shuffle_all:  # any permutation, across and within pods
        events = [e for events in lists for e in events]
        rnd.shuffle(events)
    else:  # each pod in causal order, pods interleaved
        events = interleave(lists, rnd)
    events = with_duplicates(events, rnd)
    index = Index()
    changes: list[WorkspaceChange] = []
    for event in events:
        changes += index.apply(event)
        check_consistency(index)

    expected = expected_containers(pods)
    assert dict(index.containers()) == expected
    assert dict(index.workspaces()) == expected_newest(expected)
    assert index.unresolved() == []
    # (4) the change streams, and they agree with the final state
    streams = check_change_streams(changes)
    for cid, kinds in streams.items():
        assert (ChangeKind.REMOVED not in kinds) == (cid in expected), (cid, kinds)
    for cid, ws in expected.items():
        kinds = streams[cid]
        assert (ChangeKind.EXITED in kinds) == (ws.state is WorkspaceState.EXITED)
    # nothing pending is left once everything is known
    assert all(facts.record is not None for facts in index._facts.values())


# --- (2) drops, then a relist of what containerd holds -------------------------------------------


@PROPS
@given(pods=pod_sets(), rnd=st.randoms(use_true_random=False), drop=st.floats(0.0, 1.0))
def test_drops_then_a_relist_reach_what_containerd_holds(
    pods: list[PodModel], rnd: random.Random, drop: float
) -> None:
    events = [e for pod in pods for e in pod_events(pod)]
    rnd.shuffle(events)
    events = [e for e in with_duplicates(events, rnd) if rnd.random() >= drop]
    index = Index()
    changes: list[WorkspaceChange] = []
    for event in events:
        changes += index.apply(event)
    changes += index.apply(final_listing(pods))
    changes += resolve(index, models_by_cid(pods), T_END)
    check_consistency(index)

    expected = expected_containers(pods)
    assert projected(dict(index.containers())) == projected(expected)
    assert projected(dict(index.workspaces())) == projected(expected_newest(expected))
    streams = check_change_streams(changes)
    for cid in expected:
        assert ChangeKind.CREATED in streams[cid]
        assert ChangeKind.REMOVED not in streams[cid]
    for cid, ws in expected.items():
        if ws.state is WorkspaceState.RUNNING:
            assert ChangeKind.RUNNING in streams[cid]


# --- (3) snapshot = fold -----------------------------------------------------------------------


@PROPS
@given(pods=pod_sets(), rnd=st.randoms(use_true_random=False))
def test_snapshot_equals_fold(pods: list[PodModel], rnd: random.Random) -> None:
    uppers = models_by_cid(pods)
    folded = Index()
    for event in interleave([pod_events(pod) for pod in pods], rnd):
        folded.apply(event)
        resolve(folded, uppers, event.ts)
    listed = Index()
    listed.apply(final_listing(pods))
    resolve(listed, uppers, T_END)
    assert projected(dict(folded.containers())) == projected(dict(listed.containers()))
    assert projected(dict(folded.workspaces())) == projected(dict(listed.workspaces()))
    # and a relist of the same state changes nothing visible in the folded index
    before = projected(dict(folded.containers()))
    changes = folded.apply(final_listing(pods))
    changes += resolve(folded, uppers, T_END)
    assert projected(dict(folded.containers())) == before
    assert [c for c in changes if c.kind in (ChangeKind.CREATED, ChangeKind.REMOVED)] == []


# --- a state machine: reality moves on; events are delivered late, twice, or never ---------------


class IndexMachine(RuleBasedStateMachine):
    """Pods progress in "reality" one event at a time; the index sees what the stream gives.

    Every event of reality is delivered at once, delayed (delivered later, out of order), or
    lost; past events are redelivered; a relist (the shell's resync) feeds what containerd
    holds *now* and forgets the delayed events (they were lost with the connection).
    """

    def __init__(self) -> None:
        super().__init__()
        self.index = Index()
        self.pods: list[PodModel] = []
        self.scripts: list[list[Event]] = []
        self.cursor: list[int] = []
        self.now = 0.0
        self.delayed: list[Event] = []
        self.delivered: list[Event] = []
        self.changes: list[WorkspaceChange] = []
        self.uppers: dict[str, CModel] = {}
        self.lossy = False  # an event was lost (or delivered stale across a relist)

    @initialize(pods=pod_sets(max_pods=5))
    def setup(self, pods: list[PodModel]) -> None:
        self.pods = pods
        self.scripts = [pod_events(pod) for pod in pods]
        self.cursor = [0] * len(pods)
        self.uppers = models_by_cid(pods)

    def _apply(self, event: Event) -> None:
        self.changes += self.index.apply(event)
        self.changes += resolve(self.index, self.uppers, event.ts)

    def _reality(self) -> list[PodModel]:
        """The pods as far as reality got: each container at the stage its events reached."""
        out = []
        for pod, script, cursor in zip(self.pods, self.scripts, self.cursor, strict=True):
            happened = script[:cursor]
            if not happened:
                continue
            stages: dict[str, int] = {}
            sandbox_deleted = False
            for event in happened:
                if isinstance(event, ContainerDeleted) and event.container_id == pod.sid:
                    sandbox_deleted = True
            for c in pod.containers:
                mine = [e for e in happened if _cid(e) == c.cid]
                if mine:
                    stages[c.cid] = _stage_of(mine)
            containers = [
                replace(c, stage=stages[c.cid]) for c in pod.containers if c.cid in stages
            ]
            out.append(replace(pod, containers=containers, sandbox_deleted=sandbox_deleted))
        return out

    @rule(data=st.data())
    @precondition(
        lambda self: any(c < len(s) for c, s in zip(self.cursor, self.scripts, strict=True))
    )
    def step(self, data: st.DataObject) -> None:
        live = [i for i, s in enumerate(self.scripts) if self.cursor[i] < len(s)]
        i = data.draw(st.sampled_from(live))
        script = self.scripts[i]
        taken = [script[self.cursor[i]]]
        self.cursor[i] += 1
        # the kubelet starts a container right after creating it: in reality no time passes
        # between the two (a listing *between* them is what the index's start grace is for,
        # and final listings are at T_END, long after every creation)
        if (
            isinstance(taken[0], ContainerSeen)
            and self.cursor[i] < len(script)
            and isinstance(script[self.cursor[i]], TaskCreated)
            and _cid(script[self.cursor[i]]) == taken[0].container.id
        ):
            taken.append(script[self.cursor[i]])
            self.cursor[i] += 1
        for event in taken:
            mode = data.draw(st.sampled_from(("deliver", "deliver", "deliver", "delay", "lose")))
            if mode == "deliver":
                self.delivered.append(event)
                self._apply(event)
            elif mode == "delay":
                self.delayed.append(event)
            else:
                self.lossy = True

    @rule(data=st.data())
    @precondition(lambda self: bool(self.delayed))
    def deliver_late(self, data: st.DataObject) -> None:
        event = self.delayed.pop(data.draw(st.integers(0, len(self.delayed) - 1)))
        self.delivered.append(event)
        self._apply(event)

    @rule(data=st.data())
    @precondition(lambda self: bool(self.delivered))
    def redeliver(self, data: st.DataObject) -> None:
        self._apply(data.draw(st.sampled_from(self.delivered)))

    @rule()
    def relist(self) -> None:
        if self.delayed:
            self.lossy = True
        self.delayed.clear()
        self.delivered.clear()  # what came before the resync is not redelivered after it
        reality = self._reality()
        self._apply(final_listing(reality, ts=T_END))
        expected = expected_containers(reality)
        assert projected(dict(self.index.containers())) == projected(expected)
        assert projected(dict(self.index.workspaces())) == projected(expected_newest(expected))

    @invariant()
    def consistent(self) -> None:
        check_consistency(self.index)
        check_change_streams(self.changes)
        visible_ok = {
            c.cid
            for pod in self.pods
            if pod.is_workspace_pod
            for c in pod.containers
            if c.name == "workspace"
        }
        assert set(self.index.containers()) <= visible_ok  # no sidecar, no other pod

    def teardown(self) -> None:
        if not self.pods:
            return
        # everything delayed arrives, then the rest of reality
        for event in self.delayed:
            self._apply(event)
        for i, script in enumerate(self.scripts):
            for event in script[self.cursor[i] :]:
                self._apply(event)
        self.cursor = [len(script) for script in self.scripts]
        expected = expected_containers(self.pods)
        if not self.lossy:  # the full information: exactly the implied state
            assert dict(self.index.containers()) == expected
        # a resync after all that: what containerd holds
        self.relist()
        check_change_streams(self.changes)


def _cid(event: Event) -> str | None:
    if isinstance(event, ContainerSeen):
        return event.container.id
    if isinstance(event, Relisted):
        return None
    if isinstance(event, TaskSeen):
        return event.task.container_id
    return event.container_id


def _ends_task(event: Event) -> bool:
    if isinstance(event, TaskExited):
        return event.exec_id == event.container_id
    return isinstance(event, TaskSeen) and event.task.status is TaskStatus.STOPPED


def _stage_of(events: list[Event]) -> int:
    stage = NOT_STARTED
    for event in events:
        if isinstance(event, TaskCreated):
            stage = max(stage, TASK_CREATED)
        elif isinstance(event, TaskStarted):
            stage = max(stage, STARTED)
        elif _ends_task(event):
            stage = max(stage, EXITED)
        elif isinstance(event, TaskDeleted) and not event.exec_id:
            stage = max(stage, TASK_DELETED)
        elif isinstance(event, ContainerDeleted):
            stage = DELETED
    return stage


IndexMachine.TestCase.settings = settings(
    max_examples=75,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestIndexMachine = IndexMachine.TestCase


# --- (5) the shell's scheduling: needs answered late, out of order, or never -----------------


class Reality:
    """What containerd holds, as the stream's events (in causal order per pod) make it."""

    def __init__(self, records: dict[str, ContainerRecord]) -> None:
        self.records = records
        self.containers: dict[str, ContainerRecord] = {}
        self.tasks: dict[str, TaskRecord] = {}

    def step(self, event: Event) -> None:
        cid = getattr(event, "container_id", None)
        if isinstance(event, ContainerChanged):
            self.containers[event.container_id] = self.records[event.container_id]
        elif isinstance(event, ContainerDeleted):
            self.containers.pop(event.container_id, None)
            self.tasks.pop(event.container_id, None)
        elif isinstance(event, TaskCreated | TaskStarted) and cid is not None:
            status = TaskStatus.CREATED if isinstance(event, TaskCreated) else TaskStatus.RUNNING
            self.tasks[cid] = TaskRecord(container_id=event.container_id, pid=event.pid,
                                         status=status)  # fmt: skip
        elif isinstance(event, TaskExited | TaskDeleted) and event.exec_id in ("", cid):
            if isinstance(event, TaskDeleted):
                self.tasks.pop(event.container_id, None)
            else:
                self.tasks[event.container_id] = TaskRecord(
                    container_id=event.container_id, pid=event.pid, status=TaskStatus.STOPPED,
                    exit_status=event.exit_status, exited_at=event.exited_at,
                )  # fmt: skip

    def listing(self, ts: float, since: int | None) -> Relisted:
        return Relisted(
            ts=ts,
            containers=tuple(self.containers.values()),
            tasks=tuple(self.tasks.values()),
            since=since,
        )


def stream_of(pod: PodModel) -> tuple[list[Event], dict[str, ContainerRecord]]:
    """The pod's events as the stream tells them: a create without labels (the record is
    the answer to the index's need), no `Resolved` (the shell answers those), no listings."""
    events: list[Event] = []
    records: dict[str, ContainerRecord] = {}
    for event in pod_events(pod):
        if isinstance(event, ContainerSeen):
            records[event.container.id] = event.container
            events.append(ContainerChanged(ts=event.ts, container_id=event.container.id))
        elif not isinstance(event, Resolved | TaskSeen):
            events.append(event)
    return events, records


@PROPS
@given(
    pods=pod_sets(),
    rnd=st.randoms(use_true_random=False),
    lose=st.floats(0.0, 0.5),
    relists=st.integers(0, 4),
)
def test_needs_answered_late_out_of_order_or_never_with_relists_beside(
    pods: list[PodModel], rnd: random.Random, lose: float, relists: int
) -> None:
    """The shell applies events as they arrive; the index's needs are answered at random
    later moments, in any order, or never (lost: a relist finds it); relists beside the
    stream are taken at one moment and applied at a later one. Per container the changes
    stay in order, each at most once; `removed` comes only for what containerd deleted; in
    the end the index is what the full information implies."""
    streams = []
    records: dict[str, ContainerRecord] = {}
    for pod in pods:
        events, recs = stream_of(pod)
        streams.append(events)
        records.update(recs)
    stream = interleave(streams, rnd)
    reality = Reality(records)
    uppers = models_by_cid(pods)
    index = Index()
    pending: list[Event] = []  # answers on their way
    listings: list[Relisted] = []  # taken, not yet applied
    changes: list[WorkspaceChange] = []
    relist_at = set(rnd.sample(range(len(stream) + 1), k=min(relists, len(stream) + 1)))

    def take_needs(ts: float) -> None:
        for need in index.take_needs():
            cid = need.container_id
            failed = rnd.random() < lose
            if isinstance(need, NeedRecord) and not failed:
                pending.append(ContainerSeen(ts=ts, container=records[cid]))
            elif isinstance(need, NeedLocation) and failed:  # the shell says so
                pending.append(LookupFailed(ts=ts, container_id=cid))
            elif isinstance(need, NeedLocation):
                c = uppers[cid]
                pending.append(Resolved(ts=ts, container_id=cid, upperdir=c.upper, rootfs=c.rootfs))
            # a Get that failed for good: nothing comes, a relist finds the container

    def apply(event: Event) -> None:
        out = index.apply(event)
        for change in out:
            if change.kind is ChangeKind.REMOVED:  # never before containerd deleted it
                assert change.workspace.container_id not in reality.containers, change
        changes.extend(out)
        take_needs(event.ts)

    for i, event in enumerate(stream):
        if i in relist_at:
            listings.append(reality.listing(event.ts, since=index.mark()))
        reality.step(event)
        apply(event)
        while pending and rnd.random() < 0.5:  # some answers arrive, in any order
            apply(pending.pop(rnd.randrange(len(pending))))
        if listings and rnd.random() < 0.3:
            apply(listings.pop(0))
    # quiescence: what is on its way arrives, no lookup fails any more, and the relist a
    # failed lookup asks for comes
    lose = 0.0
    for listing in listings:
        apply(listing)
    while pending:
        apply(pending.pop(rnd.randrange(len(pending))))
    apply(reality.listing(T_END, since=index.mark()))
    while pending:
        apply(pending.pop())

    expected = expected_containers(pods)
    assert projected(dict(index.containers())) == projected(expected)
    assert projected(dict(index.workspaces())) == projected(expected_newest(expected))
    check_change_streams(changes)
