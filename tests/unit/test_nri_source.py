"""What each NRI record becomes for the index (`watcher.nri_source`), call by call."""

from __future__ import annotations

import pytest

from watcher.containerd_records import ContainerId, SandboxId
from watcher.cri import ContainerKind, kind_of
from watcher.inputs import AnnouncementWithdrawn, ContainerAnnounced, StartAnnounced
from watcher.nri.events import (
    Container,
    ContainerEvent,
    EventKind,
    Mount,
    PodSandbox,
    PodSandboxEvent,
    Synchronized,
)
from watcher.nri_source import container_record, inputs_of, sandbox_record

POD = PodSandbox(
    id=SandboxId("sb"),
    name="ws-pod",
    namespace="default",
    uid="uid-1",
    labels={"app": "gitpod", "component": "workspace"},
    annotations={"gitpod/id": "x"},
)
CONTAINER = Container(
    id=ContainerId("c"),
    sandbox_id=SandboxId("sb"),
    name="workspace",
    labels={"io.kubernetes.container.name": "workspace"},
    annotations={
        "io.kubernetes.cri.image-name": "docker.io/gitpod/workspace-full:latest",
        "io.kubernetes.container.restartCount": "2",
    },
    mounts=(Mount(destination="/workspace", type="bind", source="/var/ws", options=("rbind",)),),
    cgroups_path="kubepods-besteffort-poduid_1.slice:cri-containerd:c",
)


def container_event(kind: EventKind) -> ContainerEvent:
    return ContainerEvent(kind=kind, container=CONTAINER, pod=POD, ts=1.0, mono=2.0)


def test_a_pod_run_is_its_sandbox_announced() -> None:
    [event] = inputs_of(PodSandboxEvent(kind=EventKind.RUN_POD_SANDBOX, pod=POD, ts=1.0, mono=2.0))
    assert isinstance(event, ContainerAnnounced) and (event.ts, event.mono) == (1.0, 2.0)
    rec = event.container
    assert kind_of(rec.labels) is ContainerKind.SANDBOX
    assert rec.labels["io.kubernetes.pod.uid"] == "uid-1" and rec.labels["app"] == "gitpod"
    assert rec.cri_sandbox is not None and rec.cri_sandbox.annotations == {"gitpod/id": "x"}


@pytest.mark.parametrize("kind", [EventKind.STOP_POD_SANDBOX, EventKind.REMOVE_POD_SANDBOX])
def test_a_pods_end_is_the_streams_to_tell(kind: EventKind) -> None:
    assert inputs_of(PodSandboxEvent(kind=kind, pod=POD, ts=1.0, mono=2.0)) == []


@pytest.mark.parametrize("kind", [EventKind.CREATE_CONTAINER, EventKind.POST_CREATE_CONTAINER])
def test_a_container_created_is_announced_with_its_pod(kind: EventKind) -> None:
    sandbox, container = inputs_of(container_event(kind))
    assert isinstance(sandbox, ContainerAnnounced) and sandbox.container.id == "sb"
    assert isinstance(container, ContainerAnnounced)
    rec = container.container
    assert kind_of(rec.labels) is ContainerKind.CONTAINER
    assert rec.labels["io.kubernetes.pod.name"] == "ws-pod"
    assert rec.image == "docker.io/gitpod/workspace-full:latest"
    assert rec.cgroup_path == (
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poduid_1.slice/"
        "cri-containerd-c.scope"
    )
    assert [(m.destination, m.source, m.type) for m in rec.mounts] == [
        ("/workspace", "/var/ws", "bind")
    ]
    assert rec.cri_container is not None
    assert (rec.cri_container.name, rec.cri_container.sandbox_id) == ("workspace", "sb")
    assert rec.cri_container.attempt == 2
    assert rec.created_at is None and rec.snapshot_key == ""  # containerd's to tell


def test_start_and_remove() -> None:
    assert inputs_of(container_event(EventKind.START_CONTAINER)) == [
        StartAnnounced(ts=1.0, container_id=ContainerId("c"))
    ]
    assert inputs_of(container_event(EventKind.REMOVE_CONTAINER)) == [
        AnnouncementWithdrawn(ts=1.0, container_id=ContainerId("c"))
    ]


@pytest.mark.parametrize(
    "kind", [EventKind.POST_START_CONTAINER, EventKind.STOP_CONTAINER]
)  # fmt: skip
def test_the_rest_is_the_streams_to_tell(kind: EventKind) -> None:
    assert inputs_of(container_event(kind)) == []


def test_synchronize_announces_everything_it_lists() -> None:
    events = inputs_of(Synchronized(pods=(POD,), containers=(CONTAINER,), ts=1.0, mono=2.0))
    assert [type(e) for e in events] == [ContainerAnnounced, ContainerAnnounced]
    assert [e.container.id for e in events if isinstance(e, ContainerAnnounced)] == ["sb", "c"]


@pytest.mark.parametrize(
    ("cgroups_path", "restart_count"), [(None, None), ("", "x"), ("a:b", "99999999999")]
)
def test_what_cannot_be_read_is_unknown(
    cgroups_path: str | None, restart_count: str | None
) -> None:
    annotations = (
        {} if restart_count is None else {"io.kubernetes.container.restartCount": restart_count}
    )
    odd = Container(
        id=ContainerId("c"), sandbox_id=SandboxId("sb"), name="workspace",
        annotations=annotations, cgroups_path=cgroups_path,
    )  # fmt: skip
    rec = container_record(odd, None)
    assert rec.cgroup_path is None
    assert rec.cri_container is not None and rec.cri_container.attempt is None
    assert rec.image == ""
    assert "io.kubernetes.pod.name" not in rec.labels  # no pod: nothing made up


def test_a_sandbox_record_keeps_the_pods_own_labels_over_the_fields() -> None:
    labelled = PodSandbox(
        id=SandboxId("sb"), name="n", namespace="ns", uid="u",
        labels={"io.kubernetes.pod.name": "n"},
    )  # fmt: skip
    assert sandbox_record(labelled).labels["io.kubernetes.pod.name"] == "n"
