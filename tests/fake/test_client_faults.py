"""The client (watcher/client.py) against the fake containerd, one fault at a time.

What each fault must become at the client's boundary: `ConnectError` when containerd cannot be
reached or does not answer in time, `NotFound`, `ContainerdError` with the gRPC code name for
the rest; bad events become envelopes without an event and the stream goes on. Every wait is
bounded by `trio.fail_after`, so a hang fails the test instead of the suite.

No root or real containerd is needed here: the fake only (tests/fake runs alone).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
import trio

from containerd_protos.events import task_pb2 as task_events
from watcher.client import Client, open_client
from watcher.errors import Code, ConnectError, ContainerdError, NotFound
from watcher.inputs import Envelope, TaskCreated, TaskStarted
from watcher.testing.fake import FakeContainerd, FakePod, Rpc, mk2_labels

#: bound on every wait: only reached when something is broken
PATIENCE = 10.0
#: the client deadline used where a fault is a delay: the delay is ten times longer
SHORT_TIMEOUT = 0.2


@pytest.fixture
def pod(fake: FakeContainerd) -> FakePod:
    return fake.add_pod("ws-1", labels=mk2_labels("inst-1", "ws-1", "owner-1"))


@pytest.fixture
async def client(fake: FakeContainerd) -> AsyncIterator[Client]:
    async with open_client(fake.address, call_timeout=SHORT_TIMEOUT * 10) as c:
        yield c


async def subscribed(fake: FakeContainerd, n: int = 1) -> None:
    """Wait until the fake holds `n` live streams: events published after this arrive."""
    with trio.fail_after(PATIENCE):
        await fake.wait_until(lambda f: f.subscriber_count == n)


async def next_envelope(events: AsyncIterator[Envelope]) -> Envelope:
    with trio.fail_after(PATIENCE):
        return await events.__anext__()


# --- unary calls ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "call"),
    [
        (Rpc.VERSION, lambda c: c.version()),
        (Rpc.CONTAINERS_LIST_STREAM, lambda c: c.list_containers()),
        (Rpc.TASKS_LIST, lambda c: c.list_tasks()),
        (Rpc.CONTAINERS_GET, lambda c: c.get_container("x")),
        (Rpc.SNAPSHOTS_MOUNTS, lambda c: c.snapshot_mounts("overlayfs", "x")),
    ],
)
async def test_unavailable_is_connect_error(
    fake: FakeContainerd,
    client: Client,
    method: Rpc,
    call: Callable[[Client], Awaitable[object]],
) -> None:
    fake.fail(method, grpc.StatusCode.UNAVAILABLE)
    with trio.fail_after(PATIENCE), pytest.raises(ConnectError, match="not answering"):
        await call(client)


async def test_unavailable_n_times_then_served(
    fake: FakeContainerd, client: Client, pod: FakePod
) -> None:
    fake.fail(Rpc.CONTAINERS_LIST_STREAM, grpc.StatusCode.UNAVAILABLE, times=2)
    for _ in range(2):
        with pytest.raises(ConnectError):
            await client.list_containers()
    assert len(await client.list_containers()) == 2


async def test_slow_answer_is_connect_error_naming_time(fake: FakeContainerd, pod: FakePod) -> None:
    fake.delay(Rpc.TASKS_LIST, SHORT_TIMEOUT * 10)
    async with open_client(fake.address, call_timeout=SHORT_TIMEOUT) as client:
        with trio.fail_after(PATIENCE), pytest.raises(ConnectError, match="in time"):
            await client.list_tasks()
        # the deadline is per call: the next one is served
        assert len(await client.list_tasks()) == 2


async def test_deadline_exceeded_from_server_is_connect_error(
    fake: FakeContainerd, client: Client
) -> None:
    fake.fail(Rpc.CONTAINERS_LIST_STREAM, grpc.StatusCode.DEADLINE_EXCEEDED)
    with pytest.raises(ConnectError, match="in time"):
        await client.list_containers()


async def test_not_found_on_get(fake: FakeContainerd, client: Client, pod: FakePod) -> None:
    with pytest.raises(NotFound, match="nope"):
        await client.get_container("nope")
    # a Get racing a delete: containerd answered /containers/create, then NotFound
    cid = pod.containers["workspace"]
    fake.fail(Rpc.CONTAINERS_GET, grpc.StatusCode.NOT_FOUND)
    with pytest.raises(NotFound):
        await client.get_container(cid)
    fake.fail(Rpc.TASKS_GET, grpc.StatusCode.NOT_FOUND)
    with pytest.raises(NotFound):
        await client.get_task(cid)
    assert (await client.get_container(cid)).id == cid


async def test_internal_is_containerd_error_with_code(fake: FakeContainerd, client: Client) -> None:
    fake.fail(Rpc.CONTAINERS_LIST_STREAM, grpc.StatusCode.INTERNAL, details="boltdb on fire")
    with pytest.raises(ContainerdError, match="boltdb on fire") as info:
        await client.list_containers()
    assert info.value.code is Code.INTERNAL
    assert not isinstance(info.value, ConnectError | NotFound)


async def test_unimplemented_means_not_containerd(fake: FakeContainerd, client: Client) -> None:
    fake.fail(Rpc.VERSION, grpc.StatusCode.UNIMPLEMENTED)
    with pytest.raises(ConnectError, match="not containerd"):
        await client.version()


async def test_cancelling_a_slow_call_returns_at_once(fake: FakeContainerd, client: Client) -> None:
    fake.delay(Rpc.CONTAINERS_LIST_STREAM, float("inf"))
    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:

            async def listing() -> None:
                await client.list_containers()
                raise AssertionError("the delayed call was served")

            nursery.start_soon(listing)
            await fake.wait_until(
                lambda f: any(c.method == Rpc.CONTAINERS_LIST_STREAM for c in f.calls())
            )
            nursery.cancel_scope.cancel()
    fake.clear_faults()
    assert await client.list_containers() == []


# --- the event stream -------------------------------------------------------------------


async def test_dropped_stream_raises_connect_error_after_what_was_sent(
    fake: FakeContainerd, client: Client
) -> None:
    async with client.subscribe() as events:
        await subscribed(fake)
        fake.publish("/tasks/start", task_events.TaskStart(container_id="c1", pid=7))
        fake.drop_streams()
        first = await next_envelope(events)
        assert isinstance(first.event, TaskStarted) and first.event.container_id == "c1"
        with trio.fail_after(PATIENCE), pytest.raises(ConnectError):
            async for _ in events:
                raise AssertionError("an event after the drop")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.UNAVAILABLE, ConnectError),
        (grpc.StatusCode.INTERNAL, ContainerdError),
    ],
)
async def test_refused_subscribe_raises_from_the_iteration(
    fake: FakeContainerd, client: Client, code: grpc.StatusCode, error: type[Exception]
) -> None:
    fake.fail(Rpc.EVENTS_SUBSCRIBE, code)
    async with client.subscribe() as events:
        with trio.fail_after(PATIENCE), pytest.raises(error):
            await events.__anext__()


async def test_unknown_type_and_garbage_yield_envelopes_without_event(
    fake: FakeContainerd, client: Client
) -> None:
    async with client.subscribe() as events:
        await subscribed(fake)
        fake.publish_unknown(topic="/images/thing", type_url="containerd.events.NotSubscribed")
        fake.publish_unknown(topic="/tasks/thing", type_url="containerd.events.FromTheFuture")
        fake.publish_garbage()  # TaskCreate type URL, truncated bytes
        fake.publish("/tasks/create", task_events.TaskCreate(container_id="c2", pid=8))
        unknown = await next_envelope(events)
        assert (unknown.topic, unknown.type_name, unknown.event) == (  # /images/ filtered out
            "/tasks/thing",
            "containerd.events.FromTheFuture",
            None,
        )
        garbage = await next_envelope(events)
        assert (garbage.type_name, garbage.event) == ("containerd.events.TaskCreate", None)
        good = await next_envelope(events)
        assert isinstance(good.event, TaskCreated) and good.event.pid == 8


async def test_duplicate_arrives_twice_and_withheld_never(
    fake: FakeContainerd, client: Client
) -> None:
    async with client.subscribe() as events:
        await subscribed(fake)
        fake.duplicate_next()
        fake.publish("/tasks/start", task_events.TaskStart(container_id="twice"))
        fake.withhold_next()
        fake.publish("/tasks/start", task_events.TaskStart(container_id="missed"))
        fake.publish("/tasks/start", task_events.TaskStart(container_id="last"))
        got = [await next_envelope(events) for _ in range(3)]
    assert [getattr(e.event, "container_id", None) for e in got] == ["twice", "twice", "last"]


async def test_other_namespaces_are_dropped_even_unfiltered(
    fake: FakeContainerd, client: Client
) -> None:
    async with client.subscribe(filters=[]) as events:
        await subscribed(fake)
        fake.publish("/tasks/start", task_events.TaskStart(container_id="moby"), "moby")
        fake.publish("/tasks/start", task_events.TaskStart(container_id="ours"))
        only = await next_envelope(events)
    assert (only.namespace, getattr(only.event, "container_id", None)) == ("k8s.io", "ours")


async def test_stalled_stream_resumes(fake: FakeContainerd, client: Client) -> None:
    async with client.subscribe() as events:
        await subscribed(fake)
        fake.stall_streams()
        fake.publish("/tasks/start", task_events.TaskStart(container_id="late"))
        assert fake.pending_count == 1 and fake.sent_count == 0
        fake.resume_streams()
        late = await next_envelope(events)
    assert getattr(late.event, "container_id", None) == "late"


async def test_leaving_a_subscription_on_a_stalled_stream_does_not_hang(
    fake: FakeContainerd, client: Client
) -> None:
    fake.stall_streams()
    with trio.fail_after(PATIENCE):
        async with client.subscribe():
            await subscribed(fake)
        await fake.wait_until(lambda f: f.subscriber_count == 0)


# --- containerd going away --------------------------------------------------------------


async def test_containerd_killed_mid_stream(fake: FakeContainerd, pod: FakePod) -> None:
    async with open_client(fake.address) as client:
        async with client.subscribe() as events:
            await subscribed(fake)
            fake.kill()
            with trio.fail_after(PATIENCE), pytest.raises(ConnectError):
                await events.__anext__()
        with trio.fail_after(PATIENCE), pytest.raises(ConnectError):
            await client.version()
    # the dead socket file passes the address check; connecting is refused
    async with open_client(fake.address) as client:
        with trio.fail_after(PATIENCE), pytest.raises(ConnectError):
            await client.list_containers()
    fake.start()
    async with open_client(fake.address) as client:
        assert len(await client.list_containers()) == 2


async def test_stopped_containerd_leaves_no_socket(fake: FakeContainerd) -> None:
    fake.stop()
    with pytest.raises(ConnectError, match="no containerd socket"):
        async with open_client(fake.address):
            pass


# --- something else on the socket -------------------------------------------------------


async def serve_unix(path: str, handler: object, *, task_status: trio.TaskStatus[None]) -> None:
    """A plain (non-gRPC) unix socket server running `handler(stream)` per connection."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen()
    await trio.serve_listeners(
        handler,  # type: ignore[arg-type]
        [trio.SocketListener(sock)],
        task_status=task_status,  # type: ignore[arg-type]
    )


async def http_400(stream: trio.SocketStream) -> None:
    with trio.move_on_after(PATIENCE):
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
    await stream.aclose()


async def silent(stream: trio.SocketStream) -> None:
    async with stream:
        await trio.sleep_forever()


async def test_http1_listener_is_connect_error_without_hanging(sockdir: str) -> None:
    path = os.path.join(sockdir, "http.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_unix, path, http_400)
        async with open_client(path, call_timeout=SHORT_TIMEOUT * 10) as client:
            with trio.fail_after(PATIENCE), pytest.raises(ConnectError):
                await client.version()
            with trio.fail_after(PATIENCE), pytest.raises(ConnectError):
                async with client.subscribe() as events:
                    await events.__anext__()
        nursery.cancel_scope.cancel()


async def test_silent_listener_unary_call_hits_the_deadline(sockdir: str) -> None:
    path = os.path.join(sockdir, "silent.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_unix, path, silent)
        async with open_client(path, call_timeout=SHORT_TIMEOUT) as client:
            # grpc's connect attempt (~100 ms with our back-off) or the call deadline ends it
            with (
                trio.fail_after(PATIENCE),
                pytest.raises(ConnectError, match=r"in time|not answering"),
            ):
                await client.version()
        nursery.cancel_scope.cancel()


async def test_regular_file_at_the_socket_path(sockdir: str) -> None:
    path = os.path.join(sockdir, "file.sock")
    with open(path, "w") as f:
        f.write("not a socket")
    with pytest.raises(ConnectError, match="not a socket"):
        async with open_client(path):
            pass


# --- client defects found with the fake ------------------------------------------------
# Once strict xfails (client bugs the fake found); fixed since.


async def test_listing_ten_thousand_workspaces(fake: FakeContainerd) -> None:
    fake.add_synthetic_workspaces(10_000)
    async with open_client(fake.address) as client:
        with trio.fail_after(PATIENCE * 6):
            assert len(await client.list_containers()) == 20_000


CALL_TIMEOUT_OF_PACED = 1.0


async def test_a_listing_that_keeps_delivering_is_not_late(fake: FakeContainerd) -> None:
    """The container listing's deadline follows progress: a listing that streams for far
    longer than the call timeout, never pausing as long, succeeds."""
    fake.add_synthetic_workspaces(15)  # 30 containers
    fake.pace_listing(CALL_TIMEOUT_OF_PACED / 10)
    async with open_client(fake.address, call_timeout=CALL_TIMEOUT_OF_PACED) as client:
        started = trio.current_time()
        with trio.fail_after(PATIENCE * 6):
            assert len(await client.list_containers()) == 30
        assert trio.current_time() - started > CALL_TIMEOUT_OF_PACED * 2  # outlasted it


async def test_a_listing_that_stops_delivering_is_late(fake: FakeContainerd) -> None:
    fake.delay(Rpc.CONTAINERS_LIST_STREAM, math.inf)
    async with open_client(fake.address, call_timeout=SHORT_TIMEOUT) as client:
        with trio.fail_after(PATIENCE), pytest.raises(ConnectError, match="nothing more"):
            await client.list_containers()
    fake.clear_faults()


async def test_silent_listener_subscribe_fails_within_the_call_timeout(sockdir: str) -> None:
    path = os.path.join(sockdir, "silent.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_unix, path, silent)
        try:
            async with open_client(path, call_timeout=SHORT_TIMEOUT) as client:
                with trio.fail_after(SHORT_TIMEOUT * 10), pytest.raises(ConnectError):
                    async with client.subscribe() as events:
                        await events.__anext__()
        finally:
            nursery.cancel_scope.cancel()
