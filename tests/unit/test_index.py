"""The index: a pure state machine from containerd records and events to workspaces."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, MutableMapping

import pytest
from record_builders import container_record, sandbox_record

from watcher.containerd_records import (
    ContainerId,
    ContainerRecord,
    SpecMount,
    TaskRecord,
    TaskStatus,
)
from watcher.errors import UsageError
from watcher.index import Index
from watcher.inputs import (
    ContainerChanged,
    ContainerDeleted,
    ContainerSeen,
    Event,
    LogChecked,
    LookupFailed,
    Relisted,
    Resolved,
    TaskCreated,
    TaskDeleted,
    TaskExited,
    TaskSeen,
    TaskStarted,
)
from watcher.labels import LabelScheme
from watcher.needs import NeedLocation, NeedLogCheck, NeedRecord
from watcher.published import ChangeKind, InstanceId, Synced, WorkspaceChange, WorkspaceState
from watcher.testing.labels import mk1_labels, mk2_labels

MK1 = mk1_labels("inst-1", "ws-1", "owner-1")
MK2 = mk2_labels("inst-2", "ws-2", "owner-2")
UPPER = "/var/lib/containerd/snapshots/7/fs"


def sandbox(
    sid: str,
    *,
    uid: str = "uid-1",
    labels: Mapping[str, str] = MK1,
    pod: str = "ws-pod",
    created_at: float = 100.0,
    attempt: int = 0,
    annotations: Mapping[str, str] | None = None,
) -> ContainerRecord:
    return sandbox_record(
        sid,
        uid=uid,
        pod=pod,
        labels=labels,
        created_at=created_at,
        image="pause:3",
        attempt=attempt,
        annotations=annotations,
    )


def container(
    cid: str,
    *,
    sid: str | None = "sb-1",
    uid: str = "uid-1",
    name: str = "workspace",
    pod: str = "ws-pod",
    attempt: int = 0,
    created_at: float = 101.0,
    cgroup_path: str | None = None,
    cri: bool = True,
    annotations: Mapping[str, str] | None = None,
) -> ContainerRecord:
    return container_record(
        cid,
        sid=sid,
        uid=uid,
        pod=pod,
        created_at=created_at,
        name=name,
        attempt=attempt,
        image_ref="sha256:abc",
        cgroup_path=cgroup_path if cgroup_path is not None else f"/kubepods/pod{uid}/{cid}",
        mounts=(SpecMount(destination="/workspace", source="/var/gitpod/ws", type="bind"),),
        cri=cri,
        annotations=annotations,
    )


def seen(rec: ContainerRecord, ts: float = 1.0) -> ContainerSeen:
    return ContainerSeen(ts=ts, container=rec)


def created(cid: str, pid: int = 42, upperdir: str | None = UPPER, ts: float = 2.0) -> TaskCreated:
    return TaskCreated(ts=ts, container_id=ContainerId(cid), pid=pid, upperdir=upperdir)


def started(cid: str, pid: int = 42, ts: float = 3.0) -> TaskStarted:
    return TaskStarted(ts=ts, container_id=ContainerId(cid), pid=pid, started_at=ts)


def exited(
    cid: str, status: int = 0, exec_id: str | None = None, ts: float = 4.0, pid: int = 42
) -> TaskExited:
    return TaskExited(
        ts=ts,
        container_id=ContainerId(cid),
        exec_id=cid if exec_id is None else exec_id,
        pid=pid,
        exit_status=status,
        exited_at=ts,
    )


def tdeleted(cid: str, status: int = 0, exec_id: str = "", ts: float = 5.0) -> TaskDeleted:
    return TaskDeleted(
        ts=ts,
        container_id=ContainerId(cid),
        exec_id=exec_id,
        pid=42,
        exit_status=status,
        exited_at=ts,
    )


def deleted(cid: str, ts: float = 6.0) -> ContainerDeleted:
    return ContainerDeleted(ts=ts, container_id=ContainerId(cid))


def feed(index: Index, events: Iterable[Event]) -> list[WorkspaceChange]:
    out: list[WorkspaceChange] = []
    for event in events:
        out.extend(index.apply(event))
    return out


def kinds(changes: Iterable[WorkspaceChange]) -> list[tuple[str, str]]:
    return [(c.kind.value, c.workspace.container_id) for c in changes]


def lifecycle(cid: str = "c-1", sid: str = "sb-1") -> list[Event]:
    return [
        seen(sandbox(sid)),
        seen(container(cid, sid=sid)),
        created(cid),
        started(cid),
        exited(cid, status=137),
        tdeleted(cid, status=137),
        deleted(cid),
        deleted(sid),
    ]


# --- the basic lifecycle -------------------------------------------------------------------


def test_full_lifecycle_reports_each_step_once() -> None:
    index = Index()
    changes = feed(index, lifecycle())
    assert kinds(changes) == [
        ("created", "c-1"),
        ("running", "c-1"),
        ("exited", "c-1"),
        ("removed", "c-1"),
    ]
    assert [c.ts for c in changes] == [1.0, 2.0, 4.0, 6.0]  # each change carries its event's ts
    assert changes[0].workspace.state is WorkspaceState.CREATED
    assert changes[1].workspace.running
    assert changes[2].workspace.state is WorkspaceState.EXITED
    assert changes[2].workspace.exit_status == 137
    assert index.containers() == {}
    assert index.workspaces() == {}


def test_workspace_fields_mk1() -> None:
    index = Index()
    feed(
        index,
        [
            seen(
                sandbox("sb-1", annotations={"gitpod/id": "x"}),
            ),
            seen(container("c-1", annotations={"io.kubernetes.container.restartCount": "0"})),
            created("c-1", pid=4242),
            started("c-1", pid=4242, ts=3.5),
        ],
    )
    ws = index.by_instance(InstanceId("inst-1"))
    assert ws is not None
    assert ws == index.by_container(ContainerId("c-1"))
    assert (ws.instance_id, ws.workspace_id, ws.owner_id) == ("inst-1", "ws-1", "owner-1")
    assert (ws.pod_name, ws.pod_namespace, ws.pod_uid) == ("ws-pod", "default", "uid-1")
    assert (ws.sandbox_id, ws.container_id) == ("sb-1", "c-1")
    assert ws.image == "docker.io/gitpod/workspace-full:latest"
    assert dict(ws.pod_labels) == MK1  # the pod's own labels, no bookkeeping
    assert ws.created_at == 101.0
    assert ws.cgroup_path == "/kubepods/poduid-1/c-1"
    assert ws.mounts == (SpecMount(destination="/workspace", source="/var/gitpod/ws", type="bind"),)
    assert (ws.container_name, ws.attempt, ws.image_ref) == ("workspace", 0, "sha256:abc")
    assert ws.log_path == "/var/log/pods/ws-pod/workspace/0.log"
    assert dict(ws.container_annotations) == {"io.kubernetes.container.restartCount": "0"}
    assert dict(ws.pod_annotations) == {"gitpod/id": "x"}
    assert (ws.pid, ws.upperdir, ws.state) == (4242, UPPER, WorkspaceState.RUNNING)
    assert ws.started_at == 3.5
    assert ws.exit_status is None and ws.exited_at is None


def test_published_workspaces_are_read_only_all_the_way_down() -> None:
    """A caller cannot change the index's state through a published workspace, whatever
    mappings the records it was made from held."""
    pod_annotations = {"gitpod/id": "x"}
    container_annotations = {"io.kubernetes.container.restartCount": "0"}
    index = Index()
    feed(
        index,
        [
            seen(sandbox("sb-1", annotations=pod_annotations)),
            seen(container("c-1", annotations=container_annotations)),
            created("c-1", pid=4242),
        ],
    )
    ws = index.by_container(ContainerId("c-1"))
    assert ws is not None
    for mapping in (ws.pod_labels, ws.pod_annotations, ws.container_annotations):
        assert not isinstance(mapping, MutableMapping)
        with pytest.raises(TypeError):
            mapping["injected"] = "1"  # type: ignore[index]
    pod_annotations["gitpod/id"] = "changed by the caller"
    container_annotations.clear()
    again = index.by_container(ContainerId("c-1"))
    assert again is not None
    assert dict(again.pod_annotations) == {"gitpod/id": "x"}
    assert dict(again.container_annotations) == {"io.kubernetes.container.restartCount": "0"}


def test_workspace_fields_mk2_take_workspace_id_from_meta_id() -> None:
    index = Index()
    feed(index, [seen(sandbox("sb-2", labels=MK2)), seen(container("c-2", sid="sb-2"))])
    ws = index.by_instance(InstanceId("inst-2"))
    assert ws is not None
    assert (ws.workspace_id, ws.owner_id) == ("ws-2", "owner-2")


def test_pod_fields_fall_back_to_the_sandbox() -> None:
    index = Index()
    rec = container("c-1")
    bare = ContainerRecord(
        id=rec.id,
        labels={"io.cri-containerd.kind": "container", "io.kubernetes.container.name": "workspace"},
        cri_container=rec.cri_container,
    )
    feed(index, [seen(sandbox("sb-1", pod="from-sandbox")), seen(bare)])
    ws = index.by_container("c-1")
    assert ws is not None
    assert (ws.pod_name, ws.pod_namespace, ws.pod_uid) == ("from-sandbox", "default", "uid-1")


def test_exited_without_running_skips_running() -> None:
    index = Index()
    changes = feed(
        index,
        [
            seen(sandbox("sb-1")),
            seen(container("c-1")),
            created("c-1", upperdir=None),  # never resolved: never `running` for us
            exited("c-1", status=1),
        ],
    )
    assert kinds(changes) == [("created", "c-1"), ("exited", "c-1")]


def test_running_waits_for_the_location_answer_and_is_reported_once() -> None:
    index = Index()
    changes = feed(index, [seen(sandbox("sb-1")), seen(container("c-1"))])
    index.take_needs()
    changes += index.apply(created("c-1", upperdir=None))
    assert kinds(changes) == [("created", "c-1")]
    ws = index.by_container("c-1")
    assert ws is not None and ws.state is WorkspaceState.CREATED and not ws.running
    assert index.unresolved() == ["c-1"]
    assert index.take_needs() == [
        NeedLocation(
            container_id=ContainerId("c-1"),
            pid=42,
            snapshotter="overlayfs",
            snapshot_key="c-1",
            want_started_at=True,
        )
    ]
    assert index.take_needs() == []  # handed out once
    changes = index.apply(Resolved(ts=9.0, container_id=ContainerId("c-1"), upperdir=UPPER))
    assert kinds(changes) == [("running", "c-1")]
    assert index.unresolved() == []
    # more facts: a new snapshot, but no second `running`
    changes = index.apply(Resolved(ts=10.0, container_id=ContainerId("c-1"), rootfs="/run/rootfs"))
    assert changes == []  # a fact that is no lifecycle step is published without a change
    ws = index.by_container("c-1")
    assert ws is not None and ws.rootfs == "/run/rootfs"
    assert feed(index, [started("c-1"), created("c-1")]) == []


def test_created_before_any_task() -> None:
    index = Index()
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1"))])
    ws = index.by_container("c-1")
    assert ws is not None
    assert ws.state is WorkspaceState.CREATED and ws.pid is None
    assert index.unresolved() == []  # no live task: nothing to resolve yet


# --- what is never a workspace ---------------------------------------------------------------


def test_sidecar_and_noise_pods_never_appear() -> None:
    index = Index()
    noise_labels = {"app": "nginx"}
    changes = feed(
        index,
        [
            seen(sandbox("sb-1")),
            seen(container("side-1", name="sidecar")),
            created("side-1"),
            started("side-1"),
            seen(sandbox("sb-n", uid="uid-n", labels=noise_labels)),
            seen(container("noise-1", sid="sb-n", uid="uid-n")),  # named workspace, wrong pod
            created("noise-1"),
            seen(
                ContainerRecord(id=ContainerId("plain"), labels={"workspaceID": "x"})
            ),  # not a CRI container
            created("plain"),
        ],
    )
    assert changes == []
    assert index.containers() == {}
    assert index.workspaces() == {}
    assert index.unresolved() == []


def test_container_with_unknown_sandbox_is_not_visible() -> None:
    index = Index()
    assert feed(index, [seen(container("c-1")), created("c-1"), started("c-1")]) == []
    assert index.by_container("c-1") is None


def test_is_candidate() -> None:
    index = Index()
    assert index.is_candidate(sandbox("sb").labels)
    assert not index.is_candidate(sandbox("sb", labels={"app": "nginx"}).labels)
    assert index.is_candidate(container("c").labels)
    assert not index.is_candidate(container("c", name="sidecar").labels)
    assert not index.is_candidate({"io.kubernetes.container.name": "workspace"})  # no kind
    custom = Index(
        [LabelScheme.generic(name="g", require={}, instance_label="id", container_name="main")]
    )
    assert custom.is_candidate(container("c", name="main").labels)
    assert not custom.is_candidate(container("c").labels)


def test_generic_scheme_with_another_container_name() -> None:
    scheme = LabelScheme.generic(
        name="dev", require={"app": "dev"}, instance_label="dev/id", container_name="main"
    )
    index = Index([scheme])
    changes = feed(
        index,
        [
            seen(sandbox("sb-1", labels={"app": "dev", "dev/id": "d-1"})),
            seen(container("c-main", name="main")),
            seen(container("c-ws", name="workspace")),  # a sidecar under this scheme
        ],
    )
    assert kinds(changes) == [("created", "c-main")]
    ws = index.by_instance("d-1")
    assert ws is not None and ws.container_id == "c-main" and ws.workspace_id is None


# --- order independence, duplicates, never less ----------------------------------------------


def test_container_before_sandbox() -> None:
    index = Index()
    changes = feed(
        index, [seen(container("c-1")), created("c-1"), started("c-1"), seen(sandbox("sb-1"))]
    )
    assert kinds(changes) == [("created", "c-1"), ("running", "c-1")]
    assert [c.ts for c in changes] == [1.0, 1.0]  # both at the sandbox's event


def test_task_events_before_the_container_are_pending_facts() -> None:
    index = Index()
    assert feed(index, [created("c-1", pid=7), started("c-1", pid=7)]) == []
    changes = feed(index, [seen(sandbox("sb-1")), seen(container("c-1"))])
    assert kinds(changes) == [("created", "c-1"), ("running", "c-1")]
    ws = index.by_container("c-1")
    assert ws is not None and (ws.pid, ws.upperdir) == (7, UPPER)


def test_join_by_pod_uid_without_cri_metadata() -> None:
    index = Index()
    changes = feed(index, [seen(container("c-1", cri=False)), seen(sandbox("sb-1"))])
    assert kinds(changes) == [("created", "c-1")]
    ws = index.by_container("c-1")
    assert ws is not None and ws.sandbox_id == "sb-1" and ws.attempt is None


def test_join_by_pod_uid_picks_the_newest_sandbox() -> None:
    index = Index()
    feed(
        index,
        [
            seen(container("c-1", cri=False)),
            seen(sandbox("sb-old", attempt=0, created_at=10.0)),
            seen(sandbox("sb-new", attempt=1, created_at=20.0)),
        ],
    )
    ws = index.by_container("c-1")
    assert ws is not None and ws.sandbox_id == "sb-new"


def test_any_order_of_a_pods_events_gives_the_same_state() -> None:
    events: list[Event] = [
        seen(sandbox("sb-1")),
        seen(container("c-1")),
        created("c-1", pid=9),
        started("c-1", pid=9),
        exited("c-1", status=3, pid=9),
    ]
    states = []
    for order in itertools.permutations(events):
        index = Index()
        changes = feed(index, order)
        ws = index.by_container("c-1")
        assert ws is not None
        states.append(ws)
        assert changes[0].kind is ChangeKind.CREATED
        assert len({c.kind for c in changes}) == len(changes)
    assert all(state == states[0] for state in states)
    ws = states[0]
    assert (ws.state, ws.pid, ws.exit_status, ws.upperdir) == (
        WorkspaceState.EXITED,
        9,
        3,
        UPPER,
    )


def test_second_task_create_with_less_keeps_what_is_known() -> None:
    index = Index()
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1")), created("c-1", pid=42)])
    before = index.by_container("c-1")
    assert index.apply(created("c-1", pid=0, upperdir=None)) == []
    after = index.by_container("c-1")
    assert after is before  # nothing new: the same published object
    assert after is not None and (after.pid, after.upperdir) == (42, UPPER)


def test_duplicate_task_exit_and_delete_are_ignored() -> None:
    index = Index()
    feed(index, lifecycle()[:6])
    ws = index.by_container("c-1")
    # containerd restarted: it delivers the exit and delete again (with another status even)
    assert feed(index, [exited("c-1", status=255), tdeleted("c-1", status=255)]) == []
    assert index.by_container("c-1") is ws
    assert ws is not None and ws.exit_status == 137


def test_exec_exit_is_not_the_container_exiting() -> None:
    index = Index()
    feed(index, lifecycle()[:4])
    assert index.apply(exited("c-1", exec_id="exec-123")) == []
    assert index.apply(tdeleted("c-1", exec_id="exec-123")) == []
    ws = index.by_container("c-1")
    assert ws is not None and ws.state is WorkspaceState.RUNNING
    # the task itself: exec id empty (TaskDelete) or equal to the container id (TaskExit)
    assert kinds(index.apply(exited("c-1"))) == [("exited", "c-1")]


def test_lifecycle_only_moves_forward() -> None:
    index = Index()
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1")), exited("c-1")])
    assert feed(index, [created("c-1"), started("c-1")]) == []
    ws = index.by_container("c-1")
    assert ws is not None and ws.state is WorkspaceState.EXITED
    assert ws.upperdir == UPPER  # facts are still joined in, the state does not go back


def test_a_newer_record_without_a_cgroup_path_keeps_the_known_one() -> None:
    index = Index()
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1", cgroup_path="/k8s.io/c-1"))])
    rec = container("c-1")
    poorer = ContainerRecord(id=rec.id, labels=rec.labels, cri_container=rec.cri_container)
    index.apply(seen(poorer))
    ws = index.by_container("c-1")
    assert ws is not None and ws.cgroup_path == "/k8s.io/c-1" and ws.image == rec.image


# --- deletion, tombstones ------------------------------------------------------------------------


def test_defect_a_container_delete_removes_the_instance() -> None:
    # Gitpod's watcher never woke stop-waiters on a container delete
    index = Index()
    feed(index, lifecycle()[:4])
    assert index.by_instance("inst-1") is not None
    changes = index.apply(deleted("c-1"))
    assert kinds(changes) == [("removed", "c-1")]
    assert index.by_instance("inst-1") is None
    assert index.by_container("c-1") is None


def test_defect_b_an_instance_already_gone_is_none_at_once() -> None:
    index = Index()
    assert index.by_instance("never-seen") is None
    feed(index, lifecycle())
    assert index.by_instance("inst-1") is None


def test_removed_is_reported_only_for_visible_containers() -> None:
    index = Index()
    assert feed(index, [seen(container("c-1")), deleted("c-1")]) == []  # never visible
    assert feed(index, [seen(container("s-1", name="sidecar")), deleted("s-1")]) == []


def test_events_after_a_delete_are_ignored() -> None:
    index = Index()
    feed(index, lifecycle())
    assert feed(index, [seen(sandbox("sb-1")), seen(container("c-1")), created("c-1")]) == []
    assert index.containers() == {}
    assert feed(index, [deleted("c-1")]) == []


def test_deleting_the_sandbox_first_keeps_its_live_container() -> None:
    index = Index()
    feed(index, lifecycle()[:4])
    assert index.apply(deleted("sb-1")) == []
    assert index.by_container("c-1") is not None
    assert kinds(feed(index, [exited("c-1"), deleted("c-1")])) == [
        ("exited", "c-1"),
        ("removed", "c-1"),
    ]
    assert index._pods.sandboxes == {}  # purged once nothing refers to it


def test_memory_is_bounded_over_many_create_delete_cycles() -> None:
    index = Index(tombstone_limit=100)
    for i in range(3000):
        sid, cid = f"sb-{i}", f"c-{i}"
        feed(index, lifecycle(cid, sid))
        # an unrelated container's task events, its Get never fed (not a candidate)
        feed(index, [created(f"noise-{i}"), exited(f"noise-{i}"), deleted(f"noise-{i}")])
    assert len(index._tombstones) == 100
    assert index._facts == {}
    assert index._pods.sandboxes == {} and index._pods.by_uid == {}
    assert index._pods.children_by_sid == {} and index._pods.children_by_uid == {}
    assert index._ignored == set()
    published = index._published
    assert published.visible == {} and published.reported == {} and published.instances == {}


def test_tombstones_are_bounded_oldest_first() -> None:
    index = Index(tombstone_limit=2)
    feed(index, [deleted("a"), deleted("b"), deleted("c")])
    assert list(index._tombstones) == ["b", "c"]


# --- replacement inside a pod ----------------------------------------------------------------


def replacement() -> list[Event]:
    return [
        seen(sandbox("sb-1")),
        seen(container("c-0", attempt=0, created_at=101.0)),
        created("c-0", pid=100),
        started("c-0", pid=100),
        exited("c-0", status=1),
        tdeleted("c-0", status=1),
        seen(container("c-1", attempt=1, created_at=201.0), ts=10.0),
        created("c-1", pid=200, ts=11.0),
        started("c-1", pid=200, ts=12.0),
    ]


def test_defect_d_a_replaced_container_gets_its_new_pid() -> None:
    index = Index()
    changes = feed(index, replacement())
    assert kinds(changes) == [
        ("created", "c-0"),
        ("running", "c-0"),
        ("exited", "c-0"),
        ("created", "c-1"),
        ("running", "c-1"),
    ]
    ws = index.by_instance("inst-1")
    assert ws is not None and (ws.container_id, ws.pid, ws.attempt) == ("c-1", 200, 1)
    assert set(index.containers()) == {"c-0", "c-1"}
    assert index.workspaces() == {"inst-1": ws}


def test_defect_e_deleting_the_old_container_keeps_the_instance() -> None:
    index = Index()
    feed(index, replacement())
    changes = index.apply(deleted("c-0"))
    assert kinds(changes) == [("removed", "c-0")]
    ws = index.by_instance("inst-1")
    assert ws is not None and ws.container_id == "c-1" and ws.pid == 200
    assert set(index.containers()) == {"c-1"}


def test_the_newest_container_wins_whatever_the_order() -> None:
    events = replacement()
    index = Index()
    feed(index, reversed(events))
    ws = index.by_instance("inst-1")
    assert ws is not None and ws.container_id == "c-1" and ws.pid == 200


def test_instance_is_gone_once_its_last_container_is() -> None:
    index = Index()
    feed(index, [*replacement(), deleted("c-1"), exited("c-0")])
    assert index.by_instance("inst-1") is not None  # c-0 is left
    index.apply(deleted("c-0"))
    assert index.by_instance("inst-1") is None


# --- resolution ---------------------------------------------------------------------------------


def test_defect_c_the_upperdir_from_task_create_is_recorded() -> None:
    # the shell reads `upperdir=` from the TaskCreate rootfs (type "overlay", snapshotter
    # "overlayfs") and hands it over: the index must record it, no second lookup needed
    index = Index()
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1")), created("c-1", upperdir=UPPER)])
    ws = index.by_container("c-1")
    assert ws is not None and ws.upperdir == UPPER and ws.running
    assert index.unresolved() == []


def test_resolved_before_the_container_is_kept() -> None:
    index = Index()
    index.apply(Resolved(ts=1.0, container_id=ContainerId("c-1"), upperdir="/u", rootfs="/r"))
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1")), created("c-1", upperdir=None)])
    ws = index.by_container("c-1")
    assert ws is not None and (ws.upperdir, ws.rootfs) == ("/u", "/r")


# --- listings ------------------------------------------------------------------------------------


def task(cid: str, status: TaskStatus = TaskStatus.RUNNING, pid: int = 42) -> TaskRecord:
    if status is TaskStatus.STOPPED:
        return TaskRecord(
            container_id=ContainerId(cid), pid=pid, status=status, exit_status=2, exited_at=50.0
        )
    return TaskRecord(container_id=ContainerId(cid), pid=pid, status=status)


def relisted(
    containers: Iterable[ContainerRecord],
    tasks: Iterable[TaskRecord] = (),
    ts: float = 1000.0,
    since: int | None = None,
) -> Relisted:
    return Relisted(ts=ts, containers=tuple(containers), tasks=tuple(tasks), since=since)


def test_initial_listing_in_any_order() -> None:
    for recs in itertools.permutations(
        [sandbox("sb-1"), container("c-1"), container("s", name="x")]
    ):
        index = Index()
        changes = index.apply(relisted(recs, [task("c-1", pid=77)]))
        assert kinds(changes) == [("created", "c-1")]  # no upperdir yet: not `running`
        assert index.unresolved() == ["c-1"]
        changes = index.apply(Resolved(ts=1.0, container_id=ContainerId("c-1"), upperdir="/u"))
        assert kinds(changes) == [("running", "c-1")]
        ws = index.by_container("c-1")
        assert ws is not None and ws.pid == 77


@pytest.mark.parametrize("status", [TaskStatus.STOPPED, None])
def test_first_seen_with_its_task_gone_is_reported_exited(status: TaskStatus | None) -> None:
    index = Index()
    tasks = [task("c-1", status)] if status is not None else []
    changes = index.apply(relisted([sandbox("sb-1"), container("c-1", created_at=10.0)], tasks))
    assert kinds(changes) == [("created", "c-1"), ("exited", "c-1")]
    ws = index.by_container("c-1")
    assert ws is not None and ws.state is WorkspaceState.EXITED


def test_a_fresh_container_without_a_task_is_not_started_yet() -> None:
    # CRI creates the task in StartContainer, right after CreateContainer: a listing in between
    index = Index()
    changes = index.apply(
        relisted([sandbox("sb-1"), container("c-1", created_at=999.0)], ts=1000.0)
    )
    assert kinds(changes) == [("created", "c-1")]
    assert kinds(feed(index, [created("c-1"), started("c-1")])) == [("running", "c-1")]
    # the plain rule, when asked for
    index = Index(start_grace=0)
    changes = index.apply(
        relisted([sandbox("sb-1"), container("c-1", created_at=999.0)], ts=1000.0)
    )
    assert kinds(changes) == [("created", "c-1"), ("exited", "c-1")]


def test_relist_removes_what_is_gone_and_reads_task_states_again() -> None:
    index = Index()
    feed(index, lifecycle("c-1", "sb-1")[:4])
    feed(
        index,
        [
            seen(sandbox("sb-2", uid="uid-2", labels=MK2)),
            seen(container("c-2", sid="sb-2", uid="uid-2")),
            created("c-2"),
            started("c-2"),
        ],
    )
    feed(
        index,
        [
            seen(sandbox("sb-3", uid="uid-3", labels={**MK2, "gitpod.io/instanceID": "inst-3"})),
            seen(container("c-3", sid="sb-3", uid="uid-3")),
            created("c-3"),
        ],
    )
    # while away: pod 1 deleted, c-2's task gone, c-3 stopped, pod 4 created and running
    mk2_4 = {**MK2, "gitpod.io/instanceID": "inst-4"}
    changes = index.apply(
        relisted(
            [
                sandbox("sb-2", uid="uid-2", labels=MK2),
                container("c-2", sid="sb-2", uid="uid-2"),
                sandbox("sb-3", uid="uid-3", labels={**MK2, "gitpod.io/instanceID": "inst-3"}),
                container("c-3", sid="sb-3", uid="uid-3"),
                sandbox("sb-4", uid="uid-4", labels=mk2_4),
                container("c-4", sid="sb-4", uid="uid-4"),
            ],
            [task("c-3", TaskStatus.STOPPED), task("c-4", pid=44)],
        )
    )
    assert sorted(kinds(changes)) == sorted(
        [("removed", "c-1"), ("exited", "c-2"), ("exited", "c-3"), ("created", "c-4")]
    )
    assert changes[0].kind is ChangeKind.REMOVED
    assert index.by_instance("inst-1") is None
    c2 = index.by_container("c-2")
    assert c2 is not None and c2.state is WorkspaceState.EXITED and c2.upperdir == UPPER  # kept
    c3 = index.by_container("c-3")
    assert c3 is not None and c3.exit_status == 2
    c4 = index.by_instance("inst-4")
    assert c4 is not None and c4.pid == 44 and c4.state is WorkspaceState.CREATED
    assert index.unresolved() == ["c-4"]  # where are its files? Then it runs:
    changes = index.apply(Resolved(ts=9.0, container_id=ContainerId("c-4"), upperdir="/u4"))
    assert kinds(changes) == [("running", "c-4")]


def test_relist_keeps_tombstones_and_drops_stale_pending_facts() -> None:
    index = Index()
    feed(index, [deleted("c-1"), created("c-9")])
    # a listing that still shows c-1 was taken before its deletion: ids are never reused
    index.apply(relisted([sandbox("sb-1"), container("c-1")], [task("c-1")]))
    assert index.by_container("c-1") is None
    assert "c-9" not in index._facts  # pending facts older than the listing: gone


def test_relist_without_changes_reports_nothing() -> None:
    index = Index()
    listing = relisted([sandbox("sb-1"), container("c-1")], [task("c-1")])
    index.apply(listing)
    before = index.by_container("c-1")
    assert index.apply(listing) == []
    assert index.by_container("c-1") is before


def test_task_seen_outside_a_listing() -> None:
    index = Index()
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1"))])
    index.apply(TaskSeen(ts=5.0, task=task("c-1", TaskStatus.PAUSED, pid=5)))
    index.apply(Resolved(ts=5.0, container_id=ContainerId("c-1")))
    ws = index.by_container("c-1")
    assert ws is not None and ws.state is WorkspaceState.RUNNING and ws.pid == 5
    index.apply(TaskSeen(ts=6.0, task=task("c-1", TaskStatus.STOPPED, pid=5)))
    ws = index.by_container("c-1")
    assert ws is not None and ws.state is WorkspaceState.EXITED and ws.exit_status == 2


# --- publishing --------------------------------------------------------------------------------


def test_published_snapshots_are_never_mutated() -> None:
    index = Index()
    feed(index, lifecycle()[:2])
    containers = index.containers()
    workspaces = index.workspaces()
    first = index.by_container("c-1")
    feed(index, lifecycle()[2:4])
    assert containers[ContainerId("c-1")] is first
    assert workspaces[InstanceId("inst-1")] is first
    assert first is not None and first.state is WorkspaceState.CREATED
    assert index.containers()[ContainerId("c-1")] is not first
    with pytest.raises(TypeError):
        index.containers()["x"] = first  # type: ignore[index]
    with pytest.raises(TypeError):
        first.pod_labels["x"] = "y"  # type: ignore[index]


def test_sandbox_relabelled_out_of_scheme_removes_its_workspaces() -> None:
    index = Index()
    feed(index, lifecycle()[:3])
    changes = index.apply(seen(sandbox("sb-1", labels={"app": "nginx"})))
    assert kinds(changes) == [("removed", "c-1")]
    assert index.workspaces() == {}


def test_not_an_event_is_refused() -> None:
    with pytest.raises(TypeError):  # a programming error, not a caller's input
        Index().apply(Synced(ts=1.0, workspaces=0, initial=True))  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"schemes": ()}, {"tombstone_limit": 0}, {"start_grace": -1.0}])
def test_bad_configuration_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Index(**kwargs)  # type: ignore[arg-type]


def test_a_failed_resolution_is_not_asked_for_again_until_a_relist() -> None:
    index = Index()
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1")), created("c-1", upperdir=None)])
    assert index.unresolved() == ["c-1"]
    # found nothing (no upper layer on this node): it runs all the same, upperdir None
    changes = index.apply(Resolved(ts=3.0, container_id=ContainerId("c-1")))
    assert kinds(changes) == [("running", "c-1")]
    assert changes[0].workspace.upperdir is None and changes[0].workspace.running
    assert index.unresolved() == []
    assert index.apply(started("c-1")) == []
    assert index.unresolved() == []
    index.apply(relisted([sandbox("sb-1"), container("c-1")], [task("c-1")]))
    assert index.unresolved() == ["c-1"]


def test_container_record_for_the_shells_lookups() -> None:
    index = Index()
    rec = container("c-1")
    index.apply(seen(rec))  # its sandbox is not known yet: the record is, for resolving
    assert index.container_record("c-1") == rec
    assert index.container_record("nope") is None
    index.apply(created("c-2"))  # pending facts only: no record
    assert index.container_record("c-2") is None


def test_a_noise_container_seen_drops_its_pending_facts() -> None:
    index = Index()
    feed(index, [created("side-1"), started("side-1")])
    assert "side-1" in index._facts  # pending: it could still turn out to be a workspace
    index.apply(seen(container("side-1", name="sidecar")))
    assert "side-1" not in index._facts
    assert feed(index, [exited("side-1"), tdeleted("side-1")]) == []
    assert "side-1" not in index._facts


def test_the_sandbox_task_is_not_a_workspace_task() -> None:
    index = Index()
    changes = feed(
        index,
        [created("sb-1", pid=1), seen(sandbox("sb-1")), started("sb-1"), exited("sb-1")],
    )
    assert changes == []
    assert index._facts == {}


def test_task_in_unknown_state_counts_as_alive() -> None:
    index = Index()
    index.apply(
        relisted([sandbox("sb-1"), container("c-1")], [task("c-1", TaskStatus.UNKNOWN, pid=8)])
    )
    index.apply(Resolved(ts=1.0, container_id=ContainerId("c-1")))
    ws = index.by_container("c-1")
    assert ws is not None and ws.state is WorkspaceState.RUNNING and ws.pid == 8


def test_removed_carries_the_last_snapshot() -> None:
    index = Index()
    changes = feed(index, lifecycle())
    removed = changes[-1]
    assert removed.kind is ChangeKind.REMOVED
    assert removed.workspace is changes[-2].workspace  # the exited one, as last published


# --- needs and answers (the index asks, the shell answers) ------------------------------------


def test_a_create_event_asks_for_the_record_unless_deleted() -> None:
    index = Index()
    assert index.apply(ContainerChanged(ts=1.0, container_id=ContainerId("c-1"))) == []
    assert index.take_needs() == [NeedRecord(container_id=ContainerId("c-1"))]
    index.apply(deleted("c-2"))
    index.apply(ContainerChanged(ts=2.0, container_id=ContainerId("c-2")))
    assert index.take_needs() == []


def test_a_task_told_by_its_event_runs_at_once_even_without_an_upper_layer() -> None:
    """A native (devmapper, zfs, ...) snapshotter: the event's rootfs is a bind mount, there
    is no upperdir to find, and the workspace runs all the same."""
    index = Index()
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1"))])
    index.take_needs()
    event = TaskCreated(
        ts=2.0, container_id=ContainerId("c-1"), pid=9, rootfs="/run/c-1/rootfs", located=True
    )
    changes = index.apply(event)
    assert kinds(changes) == [("running", "c-1")]
    ws = changes[0].workspace
    assert (ws.pid, ws.upperdir, ws.rootfs) == (9, None, "/run/c-1/rootfs") and ws.running
    assert index.take_needs() == [] and index.unresolved() == []


def test_answers_in_any_order_give_one_created_and_one_running() -> None:
    """The record of a container arrives after its task events (its Get was slow)."""
    index = Index()
    out = feed(index, [seen(sandbox("sb-1")), created("c-1"), started("c-1")])
    assert out == []  # pending: the record is not known yet
    out = index.apply(seen(container("c-1")))
    assert kinds(out) == [("created", "c-1"), ("running", "c-1")]


def test_a_get_answered_before_a_deletion_does_not_bring_the_container_back() -> None:
    """The race of a relist, a Get and a delete: the Get's answer is applied after the
    container's deletion and after a listing that still showed it."""
    index = Index()
    out = feed(index, [seen(sandbox("sb-1")), seen(container("c-1")), created("c-1")])
    since = index.mark()
    out += index.apply(deleted("c-1"))  # while the listing runs
    out += index.apply(relisted([sandbox("sb-1"), container("c-1")], [task("c-1")], since=since))
    out += index.apply(seen(container("c-1")))  # the late Get's answer
    out += index.apply(created("c-1"))
    assert kinds(out) == [("created", "c-1"), ("running", "c-1"), ("removed", "c-1")]
    assert index.by_container("c-1") is None


def test_what_arrives_while_a_listing_runs_is_newer_than_the_listing() -> None:
    index = Index()
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1"))])
    since = index.mark()
    # while the listing runs: c-1's task starts, pod 2 is created and starts
    out = feed(
        index,
        [
            created("c-1"),
            seen(sandbox("sb-2", uid="uid-2", labels=MK2)),
            seen(container("c-2", sid="sb-2", uid="uid-2")),
            created("c-2"),
        ],
    )
    assert sorted(kinds(out)) == [("created", "c-2"), ("running", "c-1"), ("running", "c-2")]
    # the listing was taken before all of that: no task for c-1, no pod 2
    out = index.apply(relisted([sandbox("sb-1"), container("c-1")], [], since=since))
    assert out == []  # nothing regressed, nothing removed
    for cid in ("c-1", "c-2"):
        ws = index.by_container(cid)
        assert ws is not None and ws.running
    # a later listing without them is authoritative
    out = index.apply(relisted([], [], since=index.mark()))
    assert sorted(kinds(out)) == [("removed", "c-1"), ("removed", "c-2")]


def test_the_first_listing_asks_whether_a_taskless_container_ran() -> None:
    index = Index()
    index.apply(relisted([sandbox("sb-1"), container("c-1", created_at=100.0)], [], ts=101.0))
    assert index.take_needs() == [
        NeedLogCheck(
            container_id=ContainerId("c-1"), log_path="/var/log/pods/ws-pod/workspace/0.log"
        )
    ]
    ws = index.by_container("c-1")
    assert ws is not None and ws.state is WorkspaceState.CREATED
    out = index.apply(LogChecked(ts=102.0, container_id=ContainerId("c-1"), exists=True))
    assert kinds(out) == [("exited", "c-1")]
    # a later listing does not ask (the stream tells exits from then on)
    index.apply(relisted([sandbox("sb-1"), container("c-2", created_at=100.0)], [], ts=101.0))
    assert index.take_needs() == []


def test_no_log_file_leaves_it_created() -> None:
    index = Index()
    index.apply(relisted([sandbox("sb-1"), container("c-1", created_at=100.0)], [], ts=101.0))
    index.take_needs()
    assert index.apply(LogChecked(ts=102.0, container_id=ContainerId("c-1"), exists=False)) == []
    ws = index.by_container("c-1")
    assert ws is not None and ws.state is WorkspaceState.CREATED


def test_a_failed_lookup_is_asked_again_and_a_new_connection_asks_anew() -> None:
    index = Index()
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1")), created("c-1", upperdir=None)])
    assert [type(n) for n in index.take_needs()] == [NeedLocation]
    index.apply(LookupFailed(ts=3.0, container_id=ContainerId("c-1")))
    assert index.unresolved() == []
    index.apply(started("c-1"))  # the next news of it
    assert [n.container_id for n in index.take_needs()] == ["c-1"]
    # a listing after a reconnection (since=None): the old connection's answers will not
    # come, so what was asked is asked again
    index.apply(relisted([sandbox("sb-1"), container("c-1")], [task("c-1")]))
    assert [n.container_id for n in index.take_needs()] == ["c-1"]
    # a safety relist beside the stream (since given) waits for the answer on its way
    index.apply(relisted([sandbox("sb-1"), container("c-1")], [task("c-1")], since=index.mark()))
    assert index.take_needs() == [] and index.unresolved() == ["c-1"]


def test_an_update_with_the_known_labels_or_no_candidates_asks_for_nothing() -> None:
    index = Index()
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1"))])
    index.take_needs()
    for rec in (sandbox("sb-1"), container("c-1")):  # CRI updates status, network: no Get
        index.apply(ContainerChanged(ts=2.0, container_id=rec.id, labels=rec.labels))
    assert index.take_needs() == []
    # another pod's container: its labels say it does not matter
    other = container("c-9", name="nginx")
    assert index.apply(ContainerChanged(ts=2.0, container_id=other.id, labels=other.labels)) == []
    assert index.take_needs() == []
    assert feed(index, [created("c-9"), started("c-9")]) == [] and "c-9" not in index._facts
    # labels that differ from the known ones: the record is asked for again
    changed = {**container("c-1").labels, "io.kubernetes.pod.name": "renamed"}
    index.apply(ContainerChanged(ts=3.0, container_id=ContainerId("c-1"), labels=changed))
    assert index.take_needs() == [NeedRecord(container_id=ContainerId("c-1"))]


def test_how_long_a_container_has_no_task_is_measured_on_the_monotonic_clock() -> None:
    """A clock step (NTP) of an hour between a container's creation and a listing: by the
    wall clocks it has been without a task for an hour; the shell's monotonic clock says
    one second, and a slow StartContainer is not taken for an exit."""
    index = Index()
    rec = container("c-1", created_at=1000.0, cri=False)
    index.apply(ContainerSeen(ts=1001.0, container=sandbox("sb-1"), mono=50.0))
    index.apply(ContainerSeen(ts=1001.0, container=rec, mono=50.0))
    stepped = Relisted(ts=4601.0, containers=(sandbox("sb-1"), rec), tasks=(), mono=51.0)
    assert index.apply(stepped) == []
    ws = index.by_container("c-1")
    assert ws is not None and ws.state is WorkspaceState.CREATED
    # known that long without a task (and no CRI log to ask about): taken as exited
    later = Relisted(ts=4700.0, containers=(sandbox("sb-1"), rec), tasks=(), mono=90.0)
    assert kinds(index.apply(later)) == [("exited", "c-1")]


def test_a_cri_container_known_long_without_a_task_is_asked_about_its_log() -> None:
    index = Index()
    index.apply(relisted([sandbox("sb-1")], ts=1.0))  # the first listing is over
    rec = container("c-1")
    index.apply(ContainerSeen(ts=2.0, container=rec, mono=10.0))
    index.take_needs()
    index.apply(Relisted(ts=3.0, containers=(sandbox("sb-1"), rec), tasks=(), mono=12.0))
    assert index.take_needs() == []  # a moment old: starting, not exited
    index.apply(Relisted(ts=60.0, containers=(sandbox("sb-1"), rec), tasks=(), mono=45.0))
    assert [type(n) for n in index.take_needs()] == [NeedLogCheck]


def test_an_inferred_exit_is_revised_by_a_live_task() -> None:
    """Taken as exited (a log file, no task); then its task shows up after all: the index
    says running again and waits return, while `watch` keeps its one `exited` line."""
    index = Index()
    index.apply(relisted([sandbox("sb-1"), container("c-1")], ts=101.5))
    index.take_needs()
    out = index.apply(LogChecked(ts=102.0, container_id=ContainerId("c-1"), exists=True))
    assert kinds(out) == [("exited", "c-1")]
    out = index.apply(created("c-1"))
    assert out == []  # no second lifecycle: each step is reported at most once
    ws = index.by_container("c-1")
    assert ws is not None and ws.running and ws.pid == 42
    # containerd's own word of an exit is final
    index.apply(exited("c-1", status=3))
    ws = index.by_container("c-1")
    assert ws is not None and ws.state is WorkspaceState.EXITED and ws.exit_status == 3
    index.apply(started("c-1"))
    ws = index.by_container("c-1")
    assert ws is not None and ws.state is WorkspaceState.EXITED


def test_updates_grow_when_a_snapshot_changes_without_a_lifecycle_step() -> None:
    """Waiters reading more than the lifecycle (`wait_until`) are woken by `updates`."""
    index = Index()
    feed(index, [seen(sandbox("sb-1")), seen(container("c-1"))])
    before = index.updates
    changes = index.apply(seen(container("c-1", annotations={"io.kubernetes.x": "y"})))
    assert changes == [] and index.updates > before
    again = index.updates
    assert index.apply(seen(container("c-1", annotations={"io.kubernetes.x": "y"}))) == []
    assert index.updates == again  # nothing new: nobody woken
