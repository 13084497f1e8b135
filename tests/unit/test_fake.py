"""The fake containerd behaves like containerd where the watcher looks, and its scripts work.

Sync tests drive it with plain grpc stubs (to see the wire: type URLs, status codes); trio
tests use the project's client, as the watcher will.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
import trio
from google.protobuf import empty_pb2

from containerd_protos.events import task_pb2 as task_events
from containerd_protos.services.containers.v1 import containers_pb2, containers_pb2_grpc
from containerd_protos.services.events.v1 import events_pb2, events_pb2_grpc
from containerd_protos.services.version.v1 import version_pb2_grpc
from containerd_protos.types import event_pb2
from watcher import decode, resolve
from watcher.client import open_client
from watcher.containerd_records import ContainerId, ContainerRecord, TaskRecord, TaskStatus
from watcher.cri import ContainerKind, kind_of
from watcher.errors import ConnectError, NotFound
from watcher.inputs import (
    ContainerChanged,
    ContainerDeleted,
    TaskCreated,
    TaskDeleted,
    TaskExited,
    TaskStarted,
)
from watcher.testing.fake import (
    NAMESPACE,
    READ_ONLY_RPCS,
    FakeContainerd,
    RecordedCall,
    Rpc,
    mk2_labels,
)
from watcher.testing.fake_filters import UNSUPPORTED, FilterError, Unsupported, parse, parse_all

#: bound on every blocking wait in these tests: generous, only hit when something is broken
PATIENCE = 10.0


@pytest.fixture
def channel(fake: FakeContainerd) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"unix://{fake.address}") as ch:
        yield ch


NS_MD = (("containerd-namespace", NAMESPACE),)


def fake_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fake-containerd")]


def subscribe(channel: grpc.Channel, *filters: str) -> grpc.Call:
    """A raw Subscribe (with a deadline so a broken test cannot hang)."""
    stub = events_pb2_grpc.EventsStub(channel)
    request = events_pb2.SubscribeRequest(filters=list(filters))
    return stub.Subscribe(request, timeout=PATIENCE)


# --- state ------------------------------------------------------------------------------


async def test_pod_is_listed_with_tasks_mounts_and_cri_metadata(fake: FakeContainerd) -> None:
    pod = fake.add_pod(
        "ws-1", labels=mk2_labels("inst-1", "ws-1", "owner-1"), containers=("workspace", "sidecar")
    )
    cid = pod.containers["workspace"]
    async with open_client(fake.address) as client:
        assert (await client.version()).version == fake.version
        containers: dict[str, ContainerRecord] = {c.id: c for c in await client.list_containers()}
        assert set(containers) == {pod.sandbox_id, cid, pod.containers["sidecar"]}

        sandbox = containers[pod.sandbox_id]
        assert kind_of(sandbox.labels) is ContainerKind.SANDBOX
        assert sandbox.labels["gitpod.io/instanceID"] == "inst-1"
        assert sandbox.labels["io.kubernetes.pod.uid"] == pod.uid
        assert sandbox.cri_sandbox is not None and sandbox.cri_sandbox.name == "ws-1"

        workspace = containers[cid]
        assert dict(workspace.labels) == {
            "io.cri-containerd.kind": "container",
            "io.kubernetes.container.name": "workspace",
            "io.kubernetes.pod.name": "ws-1",
            "io.kubernetes.pod.namespace": "default",
            "io.kubernetes.pod.uid": pod.uid,
        }
        assert workspace.cgroup_path == f"/kubepods/besteffort/pod{pod.uid}/{cid}"
        assert workspace.snapshotter == "overlayfs" and workspace.snapshot_key == cid
        assert workspace.cri_container is not None
        assert workspace.cri_container.sandbox_id == pod.sandbox_id
        assert workspace.cri_container.name == "workspace"
        assert (await client.get_container(cid)) == workspace

        tasks: dict[str, TaskRecord] = {t.container_id: t for t in await client.list_tasks()}
        assert tasks[cid].pid == pod.pids[cid] and tasks[cid].status is TaskStatus.RUNNING
        got = await client.get_task(cid)
        assert (got.container_id, got.pid) == (cid, pod.pids[cid])

        mounts = await client.snapshot_mounts("overlayfs", cid)
        assert [m.type for m in mounts] == ["overlay"]
        assert resolve.upperdir_of(mounts) is not None

        with pytest.raises(NotFound):
            await client.get_container("nope")
        with pytest.raises(NotFound):
            await client.get_task("nope")
        with pytest.raises(NotFound):
            await client.snapshot_mounts("overlayfs", "nope")


async def test_lifecycle_changes_state(fake: FakeContainerd) -> None:
    pod = fake.add_pod("ws-2", cgroup_parent=False)
    cid = pod.containers["workspace"]
    async with open_client(fake.address) as client:
        assert (await client.get_container(cid)).cgroup_path == f"/k8s.io/{cid}"
        fake.exit_task(cid, exit_status=3)
        task = await client.get_task(cid)
        assert (task.status, task.exit_status) == (TaskStatus.STOPPED, 3)
        assert task.exited_at is not None

        replaced = fake.replace_container(pod)
        new = replaced.containers["workspace"]
        assert new != cid and replaced.attempts["workspace"] == 1 and replaced.exited == (cid,)
        record = await client.get_container(new)
        assert record.cri_container is not None and record.cri_container.attempt == 1

        fake.remove_pod(replaced)
        assert await client.list_containers() == []
        assert await client.list_tasks() == []


async def test_raw_garbage_spec_is_served_as_is(fake: FakeContainerd) -> None:
    fake.create_container("c1", spec=b"{not json", extensions={"x": b"\xff"})
    async with open_client(fake.address) as client:
        record = await client.get_container("c1")
    assert record.cgroup_path is None
    assert fake.container("c1").spec.value == b"{not json"


def test_containers_list_filters(fake: FakeContainerd, channel: grpc.Channel) -> None:
    pod = fake.add_pod("ws-3", labels={"app": "gitpod"})
    stub = containers_pb2_grpc.ContainersStub(channel)

    def ids(*filters: str) -> set[str]:
        req = containers_pb2.ListContainersRequest(filters=list(filters))
        return {c.id for c in stub.List(req, metadata=NS_MD, timeout=PATIENCE).containers}

    sandbox, workspace = pod.sandbox_id, pod.containers["workspace"]
    assert ids('labels."io.cri-containerd.kind"==sandbox') == {sandbox}
    assert ids("labels.app") == {sandbox}
    assert ids("labels.app", f"id=={workspace}") == {sandbox, workspace}
    assert ids('labels."io.cri-containerd.kind"!=sandbox') == {workspace}
    streamed = stub.ListStream(
        containers_pb2.ListContainersRequest(), metadata=NS_MD, timeout=PATIENCE
    )
    assert {m.container.id for m in streamed} == {sandbox, workspace}


def test_namespaced_call_without_namespace_fails_like_containerd(channel: grpc.Channel) -> None:
    stub = containers_pb2_grpc.ContainersStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.List(containers_pb2.ListContainersRequest(), timeout=PATIENCE)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_other_namespace_is_separate(fake: FakeContainerd, channel: grpc.Channel) -> None:
    fake.create_container("mine")
    fake.create_container("theirs", namespace="moby")
    stub = containers_pb2_grpc.ContainersStub(channel)
    listed = stub.List(
        containers_pb2.ListContainersRequest(),
        metadata=(("containerd-namespace", "moby"),),
        timeout=PATIENCE,
    )
    assert [c.id for c in listed.containers] == ["theirs"]


# --- events -----------------------------------------------------------------------------


async def test_subscribe_delivers_pod_events_decoded(fake: FakeContainerd) -> None:
    async with open_client(fake.address) as client, client.subscribe() as events:
        with trio.fail_after(PATIENCE):
            await fake.wait_until(lambda f: f.subscriber_count == 1)
        pod = fake.add_pod("ws-4")
        cid = pod.containers["workspace"]
        fake.remove_pod(pod)
        # the watcher subscribes to what it models: no /snapshot/ events
        published = [e for e in fake.published() if e.topic.startswith(("/containers/", "/tasks/"))]
        assert len(published) < len(fake.published())
        got = []
        with trio.fail_after(PATIENCE):
            async for envelope in events:
                got.append(envelope)
                if len(got) == len(published):
                    break
    assert [e.topic for e in got] == [e.topic for e in published]
    assert all(e.namespace == NAMESPACE and e.timestamp is not None for e in got)
    mine = [e.event for e in got if getattr(e.event, "container_id", None) == cid]
    assert [type(e) for e in mine] == [
        ContainerChanged,
        TaskCreated,
        TaskStarted,
        TaskExited,
        TaskDeleted,
        ContainerDeleted,
    ]
    created = mine[1]
    assert isinstance(created, TaskCreated)
    assert created.pid == pod.pids[cid] and resolve.locate(created).upperdir is not None


def test_events_carry_a_bare_type_url(fake: FakeContainerd, channel: grpc.Channel) -> None:
    call = subscribe(channel)
    assert fake.wait_for(lambda f: f.subscriber_count == 1, PATIENCE)
    fake.publish("/tasks/start", task_events.TaskStart(container_id="c", pid=7))
    envelope: event_pb2.Envelope = next(call)
    call.cancel()
    assert envelope.event.type_url == "containerd.events.TaskStart"
    assert (envelope.topic, envelope.namespace) == ("/tasks/start", NAMESPACE)
    decoded = decode.envelope(envelope, ts=1.0)
    assert decoded.event == TaskStarted(
        ts=1.0, container_id=ContainerId("c"), pid=7, started_at=decoded.timestamp
    )


def test_subscribe_honours_namespace_and_topic_filters(
    fake: FakeContainerd, channel: grpc.Channel
) -> None:
    everything = subscribe(channel)
    ours = subscribe(channel, 'namespace=="k8s.io"')
    tasks = subscribe(channel, 'topic~="^/tasks/",namespace==k8s.io')
    assert fake.wait_for(lambda f: f.subscriber_count == 3, PATIENCE)
    fake.publish("/tasks/start", task_events.TaskStart(container_id="a"), namespace="moby")
    fake.publish("/containers/delete", task_events.TaskStart(container_id="b"))
    fake.publish("/tasks/start", task_events.TaskStart(container_id="c"))
    assert [next(everything).namespace for _ in range(3)] == ["moby", NAMESPACE, NAMESPACE]
    assert [next(ours).topic for _ in range(2)] == ["/containers/delete", "/tasks/start"]
    only = next(tasks)
    assert (only.topic, only.namespace) == ("/tasks/start", NAMESPACE)
    for call in (everything, ours, tasks):
        call.cancel()
    assert fake.wait_for(lambda f: f.subscriber_count == 0, PATIENCE)


def test_bad_filter_is_invalid_argument(channel: grpc.Channel) -> None:
    call = subscribe(channel, 'namespace=="unterminated')
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_withhold_duplicate_release(fake: FakeContainerd, channel: grpc.Channel) -> None:
    call = subscribe(channel)
    assert fake.wait_for(lambda f: f.subscriber_count == 1, PATIENCE)
    fake.withhold_next()
    fake.publish("/tasks/start", task_events.TaskStart(container_id="missed"))
    fake.duplicate_next()
    fake.publish("/tasks/start", task_events.TaskStart(container_id="twice"))
    fake.publish("/tasks/start", task_events.TaskStart(container_id="last"))
    assert [e.topic for e in fake.withheld()] == ["/tasks/start"]
    fake.release_withheld()

    def cid(envelope: event_pb2.Envelope) -> str:
        msg = task_events.TaskStart.FromString(envelope.event.value)
        return msg.container_id

    assert [cid(next(call)) for _ in range(4)] == ["twice", "twice", "last", "missed"]
    call.cancel()


def test_stall_queues_until_resumed(fake: FakeContainerd, channel: grpc.Channel) -> None:
    call = subscribe(channel)
    assert fake.wait_for(lambda f: f.subscriber_count == 1, PATIENCE)
    with fake.stalled():
        fake.publish("/tasks/start", task_events.TaskStart(container_id="x"))
        assert fake.pending_count == 1 and fake.sent_count == 0
    assert next(call).topic == "/tasks/start"
    assert fake.sent_count == 1
    call.cancel()


def test_drop_streams_ends_with_unavailable_after_queued_events(
    fake: FakeContainerd, channel: grpc.Channel
) -> None:
    call = subscribe(channel)
    assert fake.wait_for(lambda f: f.subscriber_count == 1, PATIENCE)
    fake.publish("/tasks/start", task_events.TaskStart(container_id="x"))
    assert fake.drop_streams() == 1
    assert next(call).topic == "/tasks/start"
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert fake.wait_for(lambda f: f.subscriber_count == 0, PATIENCE)


# --- faults, recording, lifecycle -------------------------------------------------------


def test_fail_n_times_then_serve(fake: FakeContainerd, channel: grpc.Channel) -> None:
    stub = version_pb2_grpc.VersionStub(channel)
    fake.fail(Rpc.VERSION, grpc.StatusCode.INTERNAL, times=2)
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as info:
            stub.Version(empty_pb2.Empty(), timeout=PATIENCE)
        assert info.value.code() is grpc.StatusCode.INTERNAL
    assert stub.Version(empty_pb2.Empty(), timeout=PATIENCE).version == fake.version


def test_fail_until_cleared(fake: FakeContainerd, channel: grpc.Channel) -> None:
    stub = version_pb2_grpc.VersionStub(channel)
    fake.fail(Rpc.VERSION, grpc.StatusCode.UNAVAILABLE, times=None)
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            stub.Version(empty_pb2.Empty(), timeout=PATIENCE)
    fake.clear_faults(Rpc.VERSION)
    assert stub.Version(empty_pb2.Empty(), timeout=PATIENCE).version == fake.version


def test_fault_needs_a_full_method_name(fake: FakeContainerd) -> None:
    with pytest.raises(ValueError, match="full gRPC method name"):
        fake.fail("Containers.List", grpc.StatusCode.INTERNAL)


def test_delay_is_released_by_clear_faults(fake: FakeContainerd, channel: grpc.Channel) -> None:
    stub = version_pb2_grpc.VersionStub(channel)
    fake.delay(Rpc.VERSION, float("inf"))
    future = stub.Version.future(empty_pb2.Empty(), timeout=PATIENCE)
    assert fake.wait_for(lambda f: any(c.method == Rpc.VERSION for c in f.calls()), PATIENCE)
    assert not future.done()
    fake.clear_faults()
    assert future.result().version == fake.version


async def test_rpcs_are_recorded_with_namespace(fake: FakeContainerd) -> None:
    pod = fake.add_pod("ws-5")
    cid = pod.containers["workspace"]
    async with open_client(fake.address) as client:
        await client.version()
        await client.list_containers()
        await client.get_container(cid)
        await client.list_tasks()
        await client.get_task(cid)
        await client.snapshot_mounts("overlayfs", cid)
        async with client.subscribe():
            with trio.fail_after(PATIENCE):
                await fake.wait_until(lambda f: f.subscriber_count == 1)
    calls = fake.calls()
    assert [c.method for c in calls] == [
        Rpc.VERSION,
        Rpc.CONTAINERS_LIST_STREAM,
        Rpc.CONTAINERS_GET,
        Rpc.TASKS_LIST,
        Rpc.TASKS_GET,
        Rpc.SNAPSHOTS_MOUNTS,
        Rpc.VERSION,  # subscribe proves containerd is there first
        Rpc.EVENTS_SUBSCRIBE,
    ]
    assert {c.namespace for c in calls} == {NAMESPACE}
    assert {c.method for c in calls} <= READ_ONLY_RPCS


def test_writes_are_unimplemented_and_recorded(fake: FakeContainerd, channel: grpc.Channel) -> None:
    stub = containers_pb2_grpc.ContainersStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Delete(containers_pb2.DeleteContainerRequest(id="x"), metadata=NS_MD, timeout=5)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert fake.calls() == [
        RecordedCall("/containerd.services.containers.v1.Containers/Delete", NAMESPACE)
    ]
    assert fake.calls()[0].method not in READ_ONLY_RPCS


async def test_restart_on_the_same_socket_keeps_state_and_drops_streams(
    fake: FakeContainerd,
) -> None:
    pod = fake.add_pod("ws-6")
    async with open_client(fake.address) as client:
        async with client.subscribe() as events:
            with trio.fail_after(PATIENCE):
                await fake.wait_until(lambda f: f.subscriber_count == 1)
            fake.stop()
            assert not fake.running
            with trio.fail_after(PATIENCE), pytest.raises(ConnectError):
                await events.__anext__()
        with pytest.raises(ConnectError):
            await client.version()
    fake.start()
    # a fresh client, as the watcher makes on each reconnect (an old channel would wait out
    # grpc's own reconnect backoff first)
    async with open_client(fake.address) as client:
        with trio.fail_after(PATIENCE):
            ids = {c.id for c in await client.list_containers()}
    assert ids == {pod.sandbox_id, pod.containers["workspace"]}


def test_stop_leaves_no_threads(sockdir: str) -> None:
    before = set(threading.enumerate())
    with FakeContainerd(sockdir) as fake, grpc.insecure_channel(f"unix://{fake.address}") as ch:
        call = subscribe(ch)
        assert fake.wait_for(lambda f: f.subscriber_count == 1, PATIENCE)
        fake.delay(Rpc.VERSION, float("inf"))
        pending = version_pb2_grpc.VersionStub(ch).Version.future(empty_pb2.Empty())
        assert fake.wait_for(lambda f: len(f.calls()) == 2, PATIENCE)
        assert fake_threads()
        fake.stop()
        with pytest.raises(grpc.RpcError):
            next(call)
        with pytest.raises(grpc.RpcError):
            pending.result()
    assert fake_threads() == []
    assert set(threading.enumerate()) <= before


async def test_synthetic_workspaces(fake: FakeContainerd) -> None:
    started = time.monotonic()
    pods = fake.add_synthetic_workspaces(10_000)
    assert time.monotonic() - started < 10  # about one second on a CI machine
    assert len(pods) == 10_000 and len({p.labels["gitpod.io/instanceID"] for p in pods}) == 10_000
    assert len(fake.container_ids()) == 20_000
    pod = pods[1234]
    cid = pod.containers["workspace"]
    async with open_client(fake.address) as client:
        sandbox = await client.get_container(pod.sandbox_id)
        workspace = await client.get_container(cid)
        task = await client.get_task(cid)
        mounts = await client.snapshot_mounts(workspace.snapshotter, workspace.snapshot_key)
    assert kind_of(sandbox.labels) is ContainerKind.SANDBOX
    assert sandbox.labels["gitpod.io/managed-by"] == "ws-manager-mk2"
    assert sandbox.labels["metaID"] == pod.labels["metaID"]
    assert sandbox.labels["workspaceID"] == sandbox.labels["gitpod.io/instanceID"]
    assert sandbox.labels["io.kubernetes.pod.uid"] == pod.uid
    assert workspace.labels["io.kubernetes.container.name"] == "workspace"
    assert workspace.cgroup_path == f"{pod.cgroup_parent}/{cid}"
    assert workspace.cri_container is not None
    assert workspace.cri_container.sandbox_id == pod.sandbox_id
    assert (task.pid, task.status) == (pod.pids[cid], TaskStatus.RUNNING)
    assert resolve.upperdir_of(mounts) is not None


# --- the filter language ----------------------------------------------------------------


def test_filter_parse() -> None:
    (sel,) = parse('labels."io.cri-containerd.kind"==sandbox')
    assert (sel.path, sel.op, sel.value) == (("labels", "io.cri-containerd.kind"), "==", "sandbox")
    a, b = parse('topic~=/^\\/tasks\\//, namespace!="k8s.io"')
    assert a.pattern is not None and a.pattern.search("/tasks/exit")
    assert (b.op, b.value) == ("!=", "k8s.io")
    (present,) = parse("labels.app")
    assert present.op is None
    for bad in ("", "==x", 'a=="open', "a~=(", "a==x y"):
        with pytest.raises(FilterError):
            parse(bad)


def test_filter_semantics() -> None:
    def fields(path: tuple[str, ...]) -> str | Unsupported | None:
        known: dict[tuple[str, ...], str] = {("namespace",): "k8s.io", ("topic",): "/tasks/exit"}
        return known.get(path, UNSUPPORTED)

    assert parse_all([]).matches(fields)
    assert parse_all(['namespace=="k8s.io"']).matches(fields)
    assert not parse_all(['namespace=="moby"']).matches(fields)
    either = parse_all(['namespace=="moby"', 'topic~="exit$"'])
    assert either.matches(fields)
    both = parse_all(['namespace=="k8s.io",topic~="^/containers/"'])
    assert not both.matches(fields)
    assert parse_all(["event.id==x"]).matches(fields)
