"""Read-only by construction: the client's channel refuses every RPC outside its allow-list
before anything is sent (issue 13, point 9), whatever the call kind and whichever way in.

Against the fake, which records every call that reaches it, answered or not: a refused call
must leave no trace there. The real-containerd proof of what the watcher does send is in
tests/integration/test_read_only_containerd.py and tests/cli/test_read_only_cli.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
import trio
from google.protobuf import descriptor_pool, empty_pb2

from containerd_protos.cri.runtime.v1 import api_pb2 as cri_pb2
from containerd_protos.services.containers.v1 import containers_pb2
from containerd_protos.services.content.v1 import content_pb2
from containerd_protos.services.events.v1 import events_pb2
from containerd_protos.services.images.v1 import images_pb2
from containerd_protos.services.namespaces.v1 import namespace_pb2
from containerd_protos.services.snapshots.v1 import snapshots_pb2
from containerd_protos.services.tasks.v1 import tasks_pb2
from containerd_protos.services.version.v1 import version_pb2
from watcher import client as client_module
from watcher.client import ALLOWED_RPCS, Client, open_client
from watcher.errors import ReadOnlyViolation, UsageError, WatcherError
from watcher.testing.fake import READ_ONLY_RPCS, FakeContainerd, Rpc

PATIENCE = 10.0

CONTAINERS = "/containerd.services.containers.v1.Containers/"
CONTENT = "/containerd.services.content.v1.Content/"
IMAGES = "/containerd.services.images.v1.Images/"
#: what the watcher reads, and nothing else (a change here is a change of the promise)
EXPECTED = {
    "/containerd.services.version.v1.Version/Version",
    "/containerd.services.namespaces.v1.Namespaces/List",
    CONTAINERS + "Get",
    CONTAINERS + "List",
    CONTAINERS + "ListStream",
    "/containerd.services.tasks.v1.Tasks/Get",
    "/containerd.services.tasks.v1.Tasks/List",
    "/containerd.services.snapshots.v1.Snapshots/Mounts",
    "/containerd.services.events.v1.Events/Subscribe",
    IMAGES + "Get",
    CONTENT + "Read",
}
#: every service the client makes a stub for, plus CRI, which answers on the same socket
SERVICES = [
    module.DESCRIPTOR.services_by_name[name]
    for module, name in [
        (version_pb2, "Version"),
        (namespace_pb2, "Namespaces"),
        (containers_pb2, "Containers"),
        (tasks_pb2, "Tasks"),
        (snapshots_pb2, "Snapshots"),
        (events_pb2, "Events"),
        (images_pb2, "Images"),
        (content_pb2, "Content"),
        (cri_pb2, "RuntimeService"),
    ]
]
#: services of containerd the client has no stub for (nor this repository a proto)
UNSTUBBED = [
    "/containerd.services.leases.v1.Leases/Create",
    "/containerd.services.diff.v1.Diff/Apply",
    "/containerd.services.introspection.v1.Introspection/Plugins",
    "/runtime.v1.ImageService/RemoveImage",
]


def full_name(method: Any) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def test_the_allow_list_is_exactly_the_reads_and_each_exists() -> None:
    assert set(ALLOWED_RPCS) == EXPECTED
    pool = descriptor_pool.Default()
    for name in ALLOWED_RPCS:
        service, _, method = name.removeprefix("/").partition("/")
        found = pool.FindServiceByName(service).methods_by_name[method]
        assert not found.client_streaming, name  # a read sends one request
    # the fake serves a subset: what the watcher needs besides `inspect`'s image reads
    assert READ_ONLY_RPCS <= ALLOWED_RPCS
    assert issubclass(ReadOnlyViolation, UsageError)
    assert issubclass(ReadOnlyViolation, WatcherError)


def refused_methods() -> Iterator[Any]:
    for service in SERVICES:
        for method in service.methods:
            if full_name(method) not in ALLOWED_RPCS:
                yield method


KINDS = [(False, False), (False, True), (True, False), (True, True)]


def call_kinds(
    channel: grpc.Channel, name: str, kind: tuple[bool, bool]
) -> list[Callable[[], object]]:
    """Every way grpc calls a method of this kind (client streaming, server streaming), as
    thunks (raw bytes: the gate refuses before anything is serialised)."""
    match kind:
        case False, False:
            uu = channel.unary_unary(name)
            return [
                lambda: uu(b"", timeout=PATIENCE),
                lambda: uu.with_call(b"", timeout=PATIENCE),
                lambda: uu.future(b"", timeout=PATIENCE).result(),  # the client's unary path
            ]
        case False, True:
            us = channel.unary_stream(name)
            return [lambda: next(iter(us(b"", timeout=PATIENCE)))]
        case True, False:
            su = channel.stream_unary(name)
            return [
                lambda: su(iter([b""]), timeout=PATIENCE),
                lambda: su.future(iter([b""]), timeout=PATIENCE).result(),
            ]
        case _:
            ss = channel.stream_stream(name)
            return [lambda: next(iter(ss(iter([b""]), timeout=PATIENCE)))]


def test_every_other_method_is_refused_unsent_in_every_call_kind(fake: FakeContainerd) -> None:
    """Each method of the client's services (and CRI's) off the list, called on the client's
    channel in each way grpc offers for its kind: refused, and the fake saw nothing."""
    client = Client(fake.address)
    channel = client._channel
    refused = list(refused_methods())
    assert len(refused) > 50  # Create, Update, Delete, Kill, Write, Publish, RemovePodSandbox...
    tried = 0
    try:
        for method in refused:
            name = full_name(method)
            kind = (method.client_streaming, method.server_streaming)
            for attempt in call_kinds(channel, name, kind):
                with pytest.raises(ReadOnlyViolation, match=name):
                    attempt()
                tried += 1
        # the services no stub is made for, and every kind (no write of the client's services
        # is client-streaming only: the gate does not care what a name claims to be)
        for name in [*UNSTUBBED, CONTAINERS + "Delete", CONTENT + "Write"]:
            for kind in KINDS:
                for attempt in call_kinds(channel, name, kind):
                    with pytest.raises(ReadOnlyViolation, match=name):
                        attempt()
        # the channel works: an allowed method goes through it, and reaches the fake
        version = channel.unary_unary(
            Rpc.VERSION,
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=version_pb2.VersionResponse.FromString,
        )
        assert version(empty_pb2.Empty(), timeout=PATIENCE).version == fake.version
    finally:
        client.close()
    assert tried > len(refused)
    assert [c.method for c in fake.calls()] == [Rpc.VERSION]


def test_the_clients_own_stubs_cannot_write(fake: FakeContainerd) -> None:
    """The stubs the client holds have write methods too (generated with the service); each
    is refused as a blocking call, a future (the client's unary path) and a stream."""
    pod = fake.add_pod("ws-ro")
    cid = pod.containers["workspace"]
    client = Client(fake.address)
    md = ((client_module.NAMESPACE_METADATA, client.namespace),)
    try:
        writes: list[tuple[str, Callable[[], object]]] = [
            (
                CONTAINERS + "Delete",
                lambda: client._containers.Delete(
                    containers_pb2.DeleteContainerRequest(id=cid), metadata=md, timeout=PATIENCE
                ),
            ),
            (
                CONTAINERS + "Delete",
                lambda: client._containers.Delete.future(
                    containers_pb2.DeleteContainerRequest(id=cid), metadata=md, timeout=PATIENCE
                ).result(),
            ),
            (
                "/containerd.services.tasks.v1.Tasks/Kill",
                lambda: client._tasks.Kill.future(
                    tasks_pb2.KillRequest(container_id=cid, signal=9), metadata=md
                ).result(),
            ),
            (
                "/containerd.services.tasks.v1.Tasks/Delete",
                lambda: client._tasks.Delete(
                    tasks_pb2.DeleteTaskRequest(container_id=cid), metadata=md
                ),
            ),
            (
                "/containerd.services.snapshots.v1.Snapshots/Remove",
                lambda: client._snapshots.Remove(
                    snapshots_pb2.RemoveSnapshotRequest(snapshotter="overlayfs", key=cid),
                    metadata=md,
                ),
            ),
            (
                "/containerd.services.events.v1.Events/Publish",
                lambda: client._events.Publish(events_pb2.PublishRequest(topic="/x"), metadata=md),
            ),
            (
                IMAGES + "Delete",
                lambda: client._images.Delete(images_pb2.DeleteImageRequest(name="x"), metadata=md),
            ),
            (
                CONTENT + "Write",  # a bidirectional stream
                lambda: next(
                    iter(client._content.Write(iter([content_pb2.WriteContentRequest()])))
                ),
            ),
            (
                CONTENT + "Delete",
                lambda: client._content.Delete(content_pb2.DeleteContentRequest(digest="x")),
            ),
            (
                "/containerd.services.namespaces.v1.Namespaces/Delete",
                lambda: client._namespaces.Delete(
                    namespace_pb2.DeleteNamespaceRequest(name="k8s.io")
                ),
            ),
        ]
        for name, write in writes:
            with pytest.raises(ReadOnlyViolation, match=name):
                write()
    finally:
        client.close()
    assert fake.calls() == []
    assert fake.container_ids() >= {cid} and fake.task(cid) is not None


ClientCall = Callable[[Client, str], Awaitable[object]]


async def _subscribe(client: Client, _: str) -> None:
    with trio.fail_after(PATIENCE):
        async with client.subscribe():
            await trio.sleep_forever()


#: each way the client calls containerd: (the RPC it sends, the call)
CLIENT_PATHS: list[tuple[str, ClientCall]] = [
    (Rpc.VERSION, lambda c, _: c.version()),  # unary: a future completed into trio
    (Rpc.NAMESPACES_LIST, lambda c, _: c.namespaces()),
    (Rpc.CONTAINERS_LIST_STREAM, lambda c, _: c.list_containers()),  # stream, idle deadline
    (Rpc.CONTAINERS_GET, lambda c, cid: c.get_container(cid)),
    (Rpc.TASKS_LIST, lambda c, _: c.list_tasks()),
    (Rpc.TASKS_GET, lambda c, cid: c.get_task(cid)),
    (Rpc.SNAPSHOTS_MOUNTS, lambda c, cid: c.snapshot_mounts("overlayfs", cid)),
    (IMAGES + "Get", lambda c, _: c.image("docker.io/library/busybox:latest")),
    (CONTENT + "Read", lambda c, _: c._read_blob("sha256:" + "0" * 64)),  # stream, deadline
    (Rpc.EVENTS_SUBSCRIBE, _subscribe),  # stream pumped by a worker thread
]


@pytest.mark.parametrize(
    ("rpc", "call"),
    CLIENT_PATHS,
    ids=[f"{rpc.rsplit('.', 1)[-1]}-{i}" for i, (rpc, _) in enumerate(CLIENT_PATHS)],
)
async def test_a_method_off_the_list_is_refused_on_every_client_path(
    fake: FakeContainerd, monkeypatch: pytest.MonkeyPatch, rpc: str, call: ClientCall
) -> None:
    """The gate holds on each of the client's call paths (futures, drained streams, the
    subscription's pump thread): with the method taken off the list, the client's call
    raises `ReadOnlyViolation` (not a connection error to retry) and the fake never sees it."""
    cid = fake.add_pod("ws-path").containers["workspace"]
    monkeypatch.setattr(client_module, "ALLOWED_RPCS", ALLOWED_RPCS - {rpc})
    async with open_client(fake.address) as client:
        with trio.fail_after(PATIENCE), pytest.raises(ReadOnlyViolation, match=rpc):
            await call(client, cid)
    assert rpc not in {c.method for c in fake.calls()}


async def test_the_list_fallback_passes_the_gate_and_is_refused_without_it(
    fake: FakeContainerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where ListStream is unimplemented (an old containerd) the client lists with List,
    which is on the list; taken off, the fallback is refused like any other call."""
    cid = fake.add_pod("ws-old").containers["workspace"]
    fake.fail(Rpc.CONTAINERS_LIST_STREAM, grpc.StatusCode.UNIMPLEMENTED)
    async with open_client(fake.address) as client:
        assert cid in {c.id for c in await client.list_containers()}
    assert [c.method for c in fake.calls()] == [Rpc.CONTAINERS_LIST_STREAM, Rpc.CONTAINERS_LIST]
    fake.clear_calls()
    fake.fail(Rpc.CONTAINERS_LIST_STREAM, grpc.StatusCode.UNIMPLEMENTED)
    monkeypatch.setattr(client_module, "ALLOWED_RPCS", ALLOWED_RPCS - {Rpc.CONTAINERS_LIST})
    async with open_client(fake.address) as client:
        with pytest.raises(ReadOnlyViolation, match=Rpc.CONTAINERS_LIST):
            await client.list_containers()
    assert [c.method for c in fake.calls()] == [Rpc.CONTAINERS_LIST_STREAM]
