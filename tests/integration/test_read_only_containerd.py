"""Read-only, proved against a real containerd: every library call sends only allowed RPCs.

The watcher talks to the rig's containerd through a wiretap (`tests/rpc_wiretap.py`): a proxy
on its own socket that forwards every call to containerd and records its method. The record is
taken at the socket, not in the client, so it holds whatever the watcher sent, allowed or not.
Each step records what it needs (the watcher's relists and health checks run meanwhile, so a
step's record may hold more); together they must be within `ALLOWED_RPCS` and use all of it
but the `Containers.List` fallback for a containerd without ListStream (unit-tested on the
fake). The CLI's commands get the same proof in tests/cli/test_read_only_cli.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import trio
from rpc_wiretap import (
    CONNECT,
    CONTAINERS_DELETE,
    CONTAINERS_GET,
    CONTAINERS_LIST,
    CONTAINERS_LIST_STREAM,
    CONTENT_READ,
    EVENTS_SUBSCRIBE,
    IMAGES_GET,
    SNAPSHOTS_MOUNTS,
    TASKS_GET,
    TASKS_LIST,
    VERSION,
    TappedCall,
    Wiretap,
)

from containerd_protos.services.containers.v1 import containers_pb2, containers_pb2_grpc
from watcher import Settings, open_watcher
from watcher.client import ALLOWED_RPCS, NAMESPACE_METADATA, Client
from watcher.errors import NotFound, ReadOnlyViolation
from watcher.testing import NAMESPACE, Pods, PrivateContainerd, mk2_labels

pytestmark = pytest.mark.containerd

PATIENCE = 30.0


@pytest.fixture
def tap(containerd: PrivateContainerd, sockdir: str) -> Iterator[Wiretap]:
    with Wiretap(containerd.address, sockdir) as made:
        yield made


def test_the_tap_records_what_the_client_would_refuse(tap: Wiretap) -> None:
    """The tap is not blind: a write sent round the client reaches containerd and is
    recorded (a Delete of a container that does not exist: containerd answers NOT_FOUND and
    changes nothing); through the client, the same write never leaves the process."""
    delete = containers_pb2.DeleteContainerRequest(id="no-such-container")
    metadata = ((NAMESPACE_METADATA, NAMESPACE),)
    with grpc.insecure_channel(f"unix://{tap.address}") as raw:
        with pytest.raises(grpc.RpcError) as info:
            containers_pb2_grpc.ContainersStub(raw).Delete(delete, metadata=metadata, timeout=10)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND  # containerd's own answer
    assert [c.method for c in tap.calls()] == [CONTAINERS_DELETE]
    tap.clear()
    client = Client(tap.address)
    try:
        with pytest.raises(ReadOnlyViolation):
            client._containers.Delete.future(delete, metadata=metadata, timeout=10).result()
        get = containers_pb2.GetContainerRequest(id="no-such-container")
        answer = client._containers.Get.future(get, metadata=metadata, timeout=10).exception()
        assert answer.code() is grpc.StatusCode.NOT_FOUND  # an allowed call goes through
    finally:
        client.close()
    assert [c.method for c in tap.calls()] == [CONTAINERS_GET]


async def run_pod(pods: Pods, iid: str) -> str:
    pod = await trio.to_thread.run_sync(
        lambda: pods.run_pod(f"ws-{iid}", labels=mk2_labels(iid, f"ws-{iid}", f"owner-{iid}"))
    )
    return pod.containers["workspace"]


async def test_every_library_call_sends_only_allowed_rpcs(
    containerd: PrivateContainerd,
    pods: Pods,
    tap: Wiretap,
    native_containerd: PrivateContainerd,
    native_pods: Pods,
    sockdir: str,
) -> None:
    calls: list[TappedCall] = []

    def step(*needs: str) -> None:
        """What the step sent covers what it needs; start the next step's record."""
        methods = tap.methods()
        assert set(needs) <= methods, set(needs) - methods
        calls.extend(tap.calls())
        tap.clear()

    before = await run_pod(pods, "inst-ro-before")  # found by the initial listing
    settings = Settings(address=tap.address, relist_interval=0.5)
    with trio.fail_after(PATIENCE):
        async with open_watcher(settings=settings) as w:
            # the initial sync (the upperdir is found in the node's mount table)
            assert w.instance("inst-ro-before").running
            step(*CONNECT)

            cid = await run_pod(pods, "inst-ro")  # seen by the event stream
            ws = await w.wait_for_container("inst-ro")
            assert ws.container_id == cid
            step(CONTAINERS_GET)

            assert await w.container_exists(cid)
            assert not await w.container_exists("no-such-container")
            step(CONTAINERS_GET)

            task = await w.task_info(cid)
            assert task.pid == ws.pid
            with pytest.raises(NotFound):
                await w.task_info("no-such-container")
            step(TASKS_GET)

            image = await w.image_info(cid)
            assert image.digest and image.size
            step(IMAGES_GET, CONTENT_READ)

            assert await w.container_rootfs(before)
            step()  # the index, or the node's mount table: no call at all is needed

            # the safety relist, twice
            relists = 0
            while relists < 2:
                await trio.sleep(0.1)
                relists = tap.count(TASKS_LIST)
            step(CONTAINERS_LIST_STREAM, TASKS_LIST)

            # containerd restarted: a lost stream, reconnection, resync
            await trio.to_thread.run_sync(containerd.kill9)
            await w.wait_ready(False)
            await trio.to_thread.run_sync(containerd.start)
            await w.wait_ready(True)
            step(VERSION, EVENTS_SUBSCRIBE, CONTAINERS_LIST_STREAM, TASKS_LIST)

            await trio.to_thread.run_sync(pods.remove_all)
            await w.wait_for_container_stop("inst-ro")
            await w.wait_for_container_stop("inst-ro-before")
            step()
    step()

    # a node whose mount table has no upper layer (the native snapshotter): the watcher asks
    # containerd's snapshotter for the container's mounts
    tap = Wiretap(native_containerd.address, sockdir, "native-tap.sock").start()
    try:
        await run_pod(native_pods, "inst-ro-native")
        with trio.fail_after(PATIENCE):
            async with open_watcher(tap.address) as w:
                assert (await w.wait_for_container("inst-ro-native")).upperdir is None
        step(*CONNECT, SNAPSHOTS_MOUNTS)
    finally:
        tap.stop()

    seen = {c.method for c in calls}
    assert seen <= ALLOWED_RPCS, seen - ALLOWED_RPCS
    # nothing on the list is unused but the fallback for a containerd without ListStream
    assert seen == ALLOWED_RPCS - {CONTAINERS_LIST}
    assert all(c.namespace == NAMESPACE for c in calls if c.method != VERSION), calls
