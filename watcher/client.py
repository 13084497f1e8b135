"""A trio client for containerd's native gRPC API: the only module that imports grpc.

grpcio's own async API is asyncio-only, so we bridge by hand, without stray threads:

* Unary calls use grpcio *futures*: the call runs on grpc's internal completion queue, its
  done-callback wakes the trio task through the trio token, and cancelling the trio task
  cancels the call. No worker thread is involved at all.
* The event stream is an iterator that blocks, so one worker thread per subscription pumps it
  into a trio memory channel. The thread draws on the client's own `CapacityLimiter`, so a
  long-lived stream never occupies trio's default thread pool; leaving the subscription cancels
  the call, which ends the thread, and the subscription waits for that before it returns.

Every unary call has a deadline. grpc errors never leave this module: they become
`ConnectError` (cannot reach containerd at all) or `ContainerdError` / `NotFound`.

Read-only by construction: the stubs sit on a channel whose interceptor lets through only the
methods of `ALLOWED_RPCS`, all of which only read. Any other call, of any kind (blocking,
`.future()`, streaming), raises `ReadOnlyViolation` before anything is sent.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Final, Protocol, TypeVar

import grpc
import trio
from google.protobuf import empty_pb2

from containerd_protos.services.containers.v1 import containers_pb2, containers_pb2_grpc
from containerd_protos.services.content.v1 import content_pb2, content_pb2_grpc
from containerd_protos.services.events.v1 import events_pb2, events_pb2_grpc
from containerd_protos.services.images.v1 import images_pb2, images_pb2_grpc
from containerd_protos.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from containerd_protos.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from containerd_protos.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from containerd_protos.services.version.v1 import version_pb2_grpc

from . import decode
from ._nursery import single_errors
from .containerd_records import ContainerRecord, ImageInfo, LayerMount, TaskRecord, Version
from .errors import (
    Code,
    ConnectError,
    ContainerdError,
    Gone,
    ReadOnlyViolation,
    RemoteError,
    UsageError,
)
from .inputs import Envelope
from .settings import (
    ADDRESS,
    CALL_TIMEOUT,
    MAX_MESSAGE_BYTES,
    NAMESPACE,
    STREAM_BUFFER,
    check_namespace,
    check_seconds,
)

NAMESPACE_METADATA = "containerd-namespace"
#: how often a pump thread waiting for room in a full buffer checks whether to give up
_ROOM_POLL = 0.1

T = TypeVar("T")

#: the full gRPC method names this client may send, every one a read (containerd changes
#: nothing for them); the channel refuses any other (see `_ReadOnly`)
ALLOWED_RPCS: Final = frozenset(
    {
        "/containerd.services.version.v1.Version/Version",
        "/containerd.services.namespaces.v1.Namespaces/List",
        "/containerd.services.containers.v1.Containers/Get",
        "/containerd.services.containers.v1.Containers/List",
        "/containerd.services.containers.v1.Containers/ListStream",
        "/containerd.services.tasks.v1.Tasks/Get",
        "/containerd.services.tasks.v1.Tasks/List",
        "/containerd.services.snapshots.v1.Snapshots/Mounts",
        "/containerd.services.events.v1.Events/Subscribe",
        "/containerd.services.images.v1.Images/Get",
        "/containerd.services.content.v1.Content/Read",
    }
)


class _Future(Protocol):
    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...
    def cancel(self) -> bool: ...
    def result(self) -> Any: ...


def check_address(address: str) -> str:
    """The socket path of `address` (a path, or `unix://path`), checked before dialling.

    A missing socket, a directory or file in its place, and a permission problem are the
    mistakes users make; each gets a message that says what to do instead of a grpc error.
    """
    path = address.removeprefix("unix://")
    if not path:
        raise UsageError("empty containerd address")
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise ConnectError(
            f"no containerd socket at {path} (is containerd running? set --address)"
        ) from exc
    except PermissionError as exc:
        raise ConnectError(
            f"permission denied on {path}: its directory is not accessible (run as root?)"
        ) from exc
    if not stat.S_ISSOCK(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a socket"
        raise ConnectError(f"{path} is {what}, not containerd's socket (set --address)")
    if not os.access(path, os.R_OK | os.W_OK):
        raise ConnectError(f"permission denied on {path} (run as root, or as containerd's group)")
    return path


#: what grpc says when the peer is not an HTTP/2 server at all (e.g. an HTTP/1 server)
_NOT_GRPC = ("http1.x server", "Failed parsing HTTP/2")


def _translate(exc: grpc.RpcError, path: str, what: str) -> RemoteError:
    """The error a failed call means, on containerd's side; raise it `from exc`."""
    status = exc.code() if isinstance(exc, grpc.Call) else None
    code = Code[status.name] if status is not None else Code.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    if code is Code.NOT_FOUND:
        return Gone(f"{what}: {details}", code=code)
    if any(sign in details for sign in _NOT_GRPC):
        return ConnectError(
            f"whatever listens at {path} is not containerd (it does not speak gRPC)", code=code
        )
    if code is Code.UNAVAILABLE:
        return ConnectError(f"containerd not answering at {path}: {details}", code=code)
    if code is Code.UNIMPLEMENTED:
        return ConnectError(f"whatever listens at {path} is not containerd: {details}", code=code)
    if code is Code.DEADLINE_EXCEEDED:
        return ConnectError(f"containerd at {path} did not answer {what} in time", code=code)
    return ContainerdError(f"{what} failed: {code.name}: {details}", code=code)


class _ReadOnly(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """The channel's gate: a method outside `allowed` raises `ReadOnlyViolation` before the
    call is made, so nothing reaches the socket.

    All four call kinds, so no stub of any service (Content.Write is a bidirectional stream)
    gets past. grpc hands an interceptor's exception to the caller as the call's outcome:
    `result()` of a `.future()` and the first `next()` of a stream raise it.
    """

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed

    def _check(self, details: Any) -> None:
        method = details.method
        if method not in self.allowed:
            raise ReadOnlyViolation(
                f"refused to call {method!r}: the containerd client calls only read-only RPCs "
                "(watcher.client.ALLOWED_RPCS); nothing was sent"
            )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._check(details)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._check(details)
        return continuation(details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        self._check(details)
        return continuation(details, requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        self._check(details)
        return continuation(details, requests)


class Client:
    """containerd's read-only API as trio coroutines.

    Synopsis::

        async with open_client("/run/containerd/containerd.sock") as client:
            print(await client.version())
            for c in await client.list_containers():
                ...
            async with client.subscribe() as events:
                async for envelope in events:
                    ...

    Every namespaced call carries the namespace in the `containerd-namespace` metadata
    (without it containerd answers FAILED_PRECONDITION). The channel lets only
    `ALLOWED_RPCS` through: any other call raises `ReadOnlyViolation`, unsent.
    """

    def __init__(
        self,
        address: str,
        namespace: str = NAMESPACE,
        *,
        call_timeout: float = CALL_TIMEOUT,
    ) -> None:
        self.namespace = check_namespace(namespace)
        self.call_timeout = check_seconds("the call timeout", call_timeout)
        self.path = check_address(address)
        self._metadata = ((NAMESPACE_METADATA, namespace),)
        raw = grpc.insecure_channel(
            f"unix://{self.path}",
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # fail fast instead of queueing calls while containerd is away; the watcher
                # owns the retry policy
                ("grpc.enable_retries", 0),
                # grpc's own reconnect back-off grows to 2 minutes by default: a client that
                # outlives a containerd restart would fail calls that long
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                # no keepalive pings: containerd's grpc server keeps grpc-go's default policy
                # (at most one ping per 5 minutes) and answers more with GOAWAY; the watcher
                # checks a quiet stream with a Version call instead
            ],
        )
        # only the gated channel is kept: every stub, and `close`, go through it
        self._channel = grpc.intercept_channel(raw, _ReadOnly(ALLOWED_RPCS))
        self._containers = containers_pb2_grpc.ContainersStub(self._channel)
        self._tasks = tasks_pb2_grpc.TasksStub(self._channel)
        self._snapshots = snapshots_pb2_grpc.SnapshotsStub(self._channel)
        self._events = events_pb2_grpc.EventsStub(self._channel)
        self._version = version_pb2_grpc.VersionStub(self._channel)
        self._images = images_pb2_grpc.ImagesStub(self._channel)
        self._content = content_pb2_grpc.ContentStub(self._channel)
        self._namespaces = namespace_pb2_grpc.NamespacesStub(self._channel)
        # one thread per live subscription; a separate limiter keeps them off trio's default
        self._stream_limiter = trio.CapacityLimiter(8)

    def close(self) -> None:
        self._channel.close()

    async def _unary(
        self, method: Any, request: Any, what: str, *, deadline: float | None = None
    ) -> Any:
        """Run one unary call as a grpc future, completed into trio; cancellable.

        `deadline`: the call's grpc deadline in seconds (default: `call_timeout`)."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: object) -> None:
            # grpc runs this on its own thread, or inline if the call is already done
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future: _Future = method.future(
            request, metadata=self._metadata, timeout=deadline or self.call_timeout
        )
        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()
            raise
        try:
            return future.result()
        except grpc.RpcError as exc:
            raise _translate(exc, self.path, what) from exc

    async def version(self) -> Version:
        resp = await self._unary(self._version.Version, empty_pb2.Empty(), "Version")
        return Version(version=resp.version, revision=resp.revision)

    async def namespaces(self) -> list[str]:
        """The names of containerd's namespaces (those that hold anything)."""
        req = namespace_pb2.ListNamespacesRequest()
        resp = await self._unary(self._namespaces.List, req, "Namespaces.List")
        return [ns.name for ns in resp.namespaces]

    async def list_containers(self, filters: Sequence[str] = ()) -> list[ContainerRecord]:
        """Every container of the namespace (matching containerd `filters`, if any).

        Uses the ListStream RPC, one message per container, as containerd's own client does:
        the unary List answers in one message, which containerd caps at 16 MiB, a size a node
        with a few thousand CRI containers exceeds. Falls back to List where ListStream is
        unimplemented.
        """
        req = containers_pb2.ListContainersRequest(filters=list(filters))
        try:
            messages = await self._collect(
                self._containers.ListStream, req, "Containers.List", idle_timeout=self.call_timeout
            )
        except ConnectError as exc:
            if exc.code is not Code.UNIMPLEMENTED:
                raise
            resp = await self._unary(self._containers.List, req, "Containers.List")
            return [decode.container(c) for c in resp.containers]
        return [decode.container(m.container) for m in messages]

    async def get_container(self, container_id: str) -> ContainerRecord:
        """The container's record; `NotFound` when containerd has no such container."""
        return decode.container(await self._get_container_pb(container_id))

    async def _get_container_pb(self, container_id: str) -> containers_pb2.Container:
        req = containers_pb2.GetContainerRequest(id=container_id)
        resp = await self._unary(self._containers.Get, req, f"container {container_id}")
        found: containers_pb2.Container = resp.container
        return found

    async def list_tasks(self, *, deadline: float | None = None) -> list[TaskRecord]:
        """Every task of the namespace. containerd asks each shim for its task's state, so
        on a busy node this takes long: `deadline` (default `call_timeout`) says how long."""
        req = tasks_pb2.ListTasksRequest()
        resp = await self._unary(self._tasks.List, req, "Tasks.List", deadline=deadline)
        return [decode.task(t) for t in resp.tasks]

    async def get_task(self, container_id: str) -> TaskRecord:
        req = tasks_pb2.GetRequest(container_id=container_id)
        resp = await self._unary(self._tasks.Get, req, f"task {container_id}")
        return decode.task(resp.process)

    async def snapshot_mounts(self, snapshotter: str, key: str) -> tuple[LayerMount, ...]:
        req = snapshots_pb2.MountsRequest(snapshotter=snapshotter, key=key)
        what = f"snapshot {snapshotter}/{key}"
        resp = await self._unary(self._snapshots.Mounts, req, what)
        return decode.snapshot_mounts(resp.mounts)

    async def image(self, name: str) -> ImageInfo:
        """The image `name` (as a container's `image` names it): digest, id, size, annotations.

        Reads the manifest (and, for a multi-platform index, the linux/amd64 or else first
        manifest) from the content store; nothing is pulled or changed.
        """
        req = images_pb2.GetImageRequest(name=name)
        image = (await self._unary(self._images.Get, req, f"image {name}")).image
        manifest: dict[str, Any] | None = None
        try:
            blob = await self._read_blob(image.target.digest)
            manifest = decode.manifest(blob)
            if manifest is not None and decode.is_index(image.target.media_type, manifest):
                chosen = decode.pick_manifest(manifest)
                manifest = decode.manifest(await self._read_blob(chosen)) if chosen else None
        except Gone:
            manifest = None
        return decode.image_info(image, manifest)

    async def _read_blob(self, digest: str) -> bytes:
        """A (small) content blob, e.g. a manifest: Content.Read is a server stream."""
        req = content_pb2.ReadContentRequest(digest=digest)
        chunks = await self._collect(self._content.Read, req, f"content {digest}")
        return b"".join(chunk.data for chunk in chunks)

    async def _collect(
        self, method: Any, request: Any, what: str, *, idle_timeout: float | None = None
    ) -> list[Any]:
        """All messages of a finite server stream, read in a worker thread.

        Without `idle_timeout`, the whole stream shares the call deadline. With it, the
        deadline follows progress: the stream fails only when no message came for that long
        (a listing of thousands that keeps delivering is not late). Cancelling abandons the
        thread only after cancelling the call, which ends its iteration within milliseconds.
        """
        if idle_timeout is None:
            call = method(request, metadata=self._metadata, timeout=self.call_timeout)
            return await self._drain(call, what)
        call = method(request, metadata=self._metadata)
        received: list[Any] = []

        def count(message: Any) -> Any:  # in the worker thread: a list append, no wake-up
            received.append(None)
            return message

        async def watchdog(scope: trio.CancelScope) -> None:
            # checks progress every `idle_timeout`: late by at most that much, and free of a
            # wake-up of the trio thread per message (20 000 of them at start-up)
            seen = -1
            while len(received) != seen:
                seen = len(received)
                await trio.sleep(idle_timeout)
            scope.cancel()

        with single_errors():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watchdog, nursery.cancel_scope)
                messages = await self._drain(map(count, call), what, call)
                nursery.cancel_scope.cancel()
                return messages
        call.cancel()  # the watchdog cancelled the drain: no progress for `idle_timeout`
        raise ConnectError(
            f"containerd at {self.path} sent nothing more of {what} for {idle_timeout:g}s"
        )

    async def _drain(self, messages: Any, what: str, call: Any = None) -> list[Any]:
        call = messages if call is None else call
        try:
            return await trio.to_thread.run_sync(
                list, messages, limiter=self._stream_limiter, abandon_on_cancel=True
            )
        except trio.Cancelled:
            call.cancel()
            raise
        except grpc.RpcError as exc:
            raise _translate(exc, self.path, what) from exc

    @asynccontextmanager
    async def subscribe(self, filters: Sequence[str] | None = None) -> AsyncIterator[Events]:
        """Subscribe to containerd's event stream (of this client's namespace by default).

        The stream delivers every namespace whatever the metadata says, so the default
        filter selects ours; envelopes of other namespaces are dropped here as well.
        Leaving the block cancels the call and waits for the pump thread to end.
        """
        if filters is None:
            # only what the watcher models: snapshot, image and content events are a quarter
            # of a pod's and would cost a decode and a wake-up each
            filters = [f'namespace=="{self.namespace}",topic~="^/(containers|tasks)/"']
        # a stream has no deadline, and grpc would wait ~20 s for a peer that accepts but
        # never speaks: one unary call first proves containerd is there, within the deadline
        await self.version()
        request = events_pb2.SubscribeRequest(filters=list(filters))
        call = self._events.Subscribe(request, metadata=self._metadata)
        send, receive = trio.open_memory_channel[Envelope | Exception](STREAM_BUFFER)
        leaving = threading.Event()
        room = threading.Semaphore(STREAM_BUFFER)
        with single_errors():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, call, send, leaving, room)
                try:
                    yield Events(receive, room)
                finally:
                    leaving.set()
                    call.cancel()
                    receive.close()

    async def _pump(
        self,
        call: Any,
        send: trio.MemorySendChannel[Any],
        leaving: threading.Event,
        room: threading.Semaphore,
    ) -> None:
        """Pump the stream into `send` from a worker thread.

        Envelopes are handed over in batches with `run_sync_soon` (no round trip to the trio
        thread per event, which capped the stream at a few thousand events/s, and one wake-up
        per batch of what arrived while the trio thread was busy); `room` counts the
        free places of the channel's buffer (the consumer gives them back), so the thread
        waits when it is full: a slow consumer slows the stream down, nothing is lost.
        """
        namespace = self.namespace
        token = trio.lowlevel.current_trio_token()
        # envelopes not yet handed over; one `flush` scheduled at a time takes them all, so a
        # burst costs one wake-up of the trio thread per batch, not per event
        ready: deque[Envelope] = deque()
        scheduled = threading.Event()

        def flush() -> None:  # on the trio thread; must not raise
            scheduled.clear()  # before taking: what comes after schedules another flush
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while ready:
                    send.send_nowait(ready.popleft())

        def pump() -> None:
            for pb in call:
                env = decode.envelope(pb, ts=time.time())
                if env.namespace and env.namespace != namespace:
                    continue
                while not room.acquire(timeout=_ROOM_POLL):
                    if leaving.is_set():
                        return
                if leaving.is_set():
                    return
                ready.append(env)
                if scheduled.is_set():
                    continue
                scheduled.set()
                try:
                    token.run_sync_soon(flush)
                except trio.RunFinishedError:
                    return

        async with send:
            try:
                await trio.to_thread.run_sync(pump, limiter=self._stream_limiter)
                error: Exception = ConnectError(f"containerd at {self.path} ended the stream")
            except grpc.RpcError as exc:
                if leaving.is_set():
                    return
                error = _translate(exc, self.path, "event stream")
            if not leaving.is_set():
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await send.send(error)


class Events:
    """The async iterator of a subscription: `Envelope`s until the stream breaks.

    A broken stream raises `ConnectError` (or `ContainerdError`) from `__anext__`.
    """

    def __init__(
        self,
        receive: trio.MemoryReceiveChannel[Envelope | Exception],
        room: threading.Semaphore | None = None,
    ) -> None:
        self._receive = receive
        self._room = room

    def __aiter__(self) -> Events:
        return self

    async def __anext__(self) -> Envelope:
        try:
            item = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None
        if isinstance(item, Exception):
            raise item
        if self._room is not None:
            self._room.release()  # a place in the buffer for the pump thread
        return item


@asynccontextmanager
async def open_client(
    address: str = ADDRESS,
    namespace: str = NAMESPACE,
    *,
    call_timeout: float = CALL_TIMEOUT,
) -> AsyncIterator[Client]:
    """A `Client` whose channel is closed on exit. Raises `ConnectError` for a bad address.

    `call_timeout` is the deadline of each unary call.
    """
    client = Client(address, namespace, call_timeout=call_timeout)
    try:
        yield client
    finally:
        client.close()


__all__ = [
    "ALLOWED_RPCS",
    "Client",
    "Events",
    "Version",
    "check_address",
    "open_client",
]
