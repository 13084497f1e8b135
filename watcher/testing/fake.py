"""A fake containerd: real gRPC on a unix socket, scriptable state, events and faults.

Why: the watcher's hardest paths (a stream dropped mid-way, a refused or slow List, garbage on
the wire, an event that never comes, containerd restarting) cannot be provoked on demand with a
real containerd. This server speaks the same protocol on the same kind of socket, so the
watcher and its client run unmodified against it, while the test decides what happens.

Synopsis::

    with FakeContainerd(tmp_path) as fake:
        pod = fake.add_pod("ws-1", labels=mk2_labels("inst-1", "ws-1", "owner-1"))
        async with open_client(fake.address) as client:
            async with client.subscribe() as events:
                await fake.wait_until(lambda f: f.subscriber_count == 1)
                fake.exit_task(pod.containers["workspace"], exit_status=137)
                ...
        fake.fail(Rpc.CONTAINERS_LIST, grpc.StatusCode.UNAVAILABLE, times=2)
        fake.delay(Rpc.TASKS_LIST, 1.5)
        fake.drop_streams()               # every Subscribe ends with UNAVAILABLE
        fake.withhold_next()              # the next event is never delivered
        fake.kill(); fake.start()         # containerd SIGKILLed, restarted on the same socket
        assert {c.method for c in fake.calls()} <= READ_ONLY_RPCS

Rules of the fake:

* It implements what the watcher uses — Version.Version, Containers.List/Get, Tasks.List/Get,
  Snapshots.Mounts, Events.Subscribe; every other RPC of these services answers UNIMPLEMENTED
  (inherited from the generated servicers), and is still recorded.
* Like containerd: namespaced RPCs without `containerd-namespace` metadata fail with
  FAILED_PRECONDITION; events carry their namespace in the envelope and a *bare* type URL
  (`containerd.events.TaskCreate`); Subscribe delivers every namespace unless filtered.
* State survives `stop()`/`start()` (containerd keeps its metadata and shims across a
  restart); event streams do not, and there is no event history (a late subscriber missed
  everything).
* The high-level helpers (`add_pod`, `start_task`, ...) change the state *and* publish what
  containerd would; with `publish=False` they change the state silently — what happened while
  the watcher was away.
* Thread-safe: one lock guards state, streams, faults and the call record; tests call the
  helpers from the trio thread while gRPC's worker threads serve.

Rejected: an in-process servicer without a socket (the client's connection handling is part of
what is tested); grpc.aio (it would need asyncio next to trio).
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import math
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NoReturn

import grpc
import trio
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from containerd_protos.events import container_pb2 as container_events
from containerd_protos.events import snapshot_pb2 as snapshot_events
from containerd_protos.events import task_pb2 as task_events
from containerd_protos.services.containers.v1 import containers_pb2, containers_pb2_grpc
from containerd_protos.services.events.v1 import events_pb2, events_pb2_grpc
from containerd_protos.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from containerd_protos.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from containerd_protos.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from containerd_protos.services.version.v1 import version_pb2, version_pb2_grpc
from containerd_protos.types import event_pb2, mount_pb2
from containerd_protos.types.task import task_pb2 as task_types

from .fake_filters import UNSUPPORTED, Filter, FilterError, Unsupported, parse_all
from .labels import mk2_labels

#: the CRI plugin's namespace, where kubelet pods live
NAMESPACE: Final = "k8s.io"
NAMESPACE_METADATA: Final = "containerd-namespace"
SPEC_TYPE_URL: Final = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
CRI_CONTAINER_EXTENSION: Final = "io.cri-containerd.container.metadata"
CRI_SANDBOX_EXTENSION: Final = "io.cri-containerd.sandbox.metadata"
CRI_CONTAINER_EXTENSION_URL: Final = "github.com/containerd/cri/pkg/store/container/Metadata"
CRI_SANDBOX_EXTENSION_URL: Final = "github.com/containerd/cri/pkg/store/sandbox/Metadata"
RUNTIME: Final = "io.containerd.runc.v2"
SNAPSHOTTER: Final = "overlayfs"
#: the image CRI runs as every pod's sandbox (any image will do for the fake)
PAUSE_IMAGE: Final = "registry.k8s.io/pause:3.9"
WORKSPACE_IMAGE: Final = "eu.gcr.io/gitpod-dev/workspace-images:fake"
#: containerd's own limit; the client raises its receive limit to the same
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
#: each live Subscribe holds a worker thread for its whole life; tests open a handful
MAX_WORKERS: Final = 64
#: truncated protobuf: field 1, length-delimited, claims 5 bytes but carries 2
GARBAGE: Final = b"\x0a\x05ab"


class Rpc(enum.StrEnum):
    """Full gRPC method names of the RPCs the fake implements (what the watcher may call)."""

    VERSION = "/containerd.services.version.v1.Version/Version"
    CONTAINERS_LIST = "/containerd.services.containers.v1.Containers/List"
    CONTAINERS_GET = "/containerd.services.containers.v1.Containers/Get"
    #: what containerd's own client lists with (List answers in one message, capped at
    #: 16 MiB: a node with thousands of containers exceeds it)
    CONTAINERS_LIST_STREAM = "/containerd.services.containers.v1.Containers/ListStream"
    TASKS_LIST = "/containerd.services.tasks.v1.Tasks/List"
    TASKS_GET = "/containerd.services.tasks.v1.Tasks/Get"
    SNAPSHOTS_MOUNTS = "/containerd.services.snapshots.v1.Snapshots/Mounts"
    EVENTS_SUBSCRIBE = "/containerd.services.events.v1.Events/Subscribe"
    NAMESPACES_LIST = "/containerd.services.namespaces.v1.Namespaces/List"


#: every RPC that only reads: a read-only client calls nothing else
READ_ONLY_RPCS: Final = frozenset(str(r) for r in Rpc)


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One RPC the fake received: full method name, `containerd-namespace` (None if absent)."""

    method: str
    namespace: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FakePod:
    """A kubelet-style pod the fake holds. Immutable: `replace_container` returns the next one.

    `containers` maps the Kubernetes container name to the id of its current attempt; `pids`
    maps every container id of the pod (sandbox included) to its task's PID.
    """

    name: str
    namespace: str
    uid: str
    labels: Mapping[str, str]
    sandbox_id: str
    containers: Mapping[str, str]
    attempts: Mapping[str, int]
    pids: Mapping[str, int]
    cgroup_parent: str | None
    containerd_namespace: str = NAMESPACE
    exited: tuple[str, ...] = ()


# --- protobuf builders (pure) ---------------------------------------------------------------

JsonOrRaw = Mapping[str, Any] | bytes | any_pb2.Any


def timestamp(at: float | None = None) -> Timestamp:
    """A protobuf Timestamp of `at` (epoch seconds), now by default."""
    ns = time.time_ns() if at is None else int(at * 1e9)
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def json_any(value: JsonOrRaw, type_url: str) -> any_pb2.Any:
    """An Any holding `value` as JSON (a mapping), raw bytes (garbage on purpose), or as is."""
    if isinstance(value, any_pb2.Any):
        return value
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return any_pb2.Any(type_url=type_url, value=raw)


def event_any(event: Message | any_pb2.Any) -> any_pb2.Any:
    """An event as containerd packs it: the bare full name as type URL (no
    `type.googleapis.com/` prefix — which is why `Any.Unpack` refuses containerd's events)."""
    if isinstance(event, any_pb2.Any):
        return event
    return any_pb2.Any(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString())


def build_container(
    container_id: str,
    *,
    labels: Mapping[str, str] | None = None,
    image: str = "",
    runtime: str = RUNTIME,
    snapshotter: str = SNAPSHOTTER,
    snapshot_key: str | None = None,
    created_at: float | None = None,
    spec: JsonOrRaw | None = None,
    spec_type_url: str = SPEC_TYPE_URL,
    extensions: Mapping[str, JsonOrRaw] | None = None,
    extension_type_url: str = "",
) -> containers_pb2.Container:
    """A `containers_pb2.Container` from plain values.

    `spec` is the OCI spec as a dict (JSON-encoded into an Any of containerd's spec type URL),
    raw bytes (for "spec is not JSON"), or a ready Any; `None` leaves the spec unset.
    `extensions` values likewise (type URL `extension_type_url`, or the CRI plugin's own for
    its two well-known keys). `snapshot_key` defaults to the container id, as CRI does.
    """
    ts = timestamp(created_at)
    pb = containers_pb2.Container(
        id=container_id,
        labels=dict(labels or {}),
        image=image,
        runtime=containers_pb2.Container.Runtime(name=runtime),
        snapshotter=snapshotter,
        snapshot_key=container_id if snapshot_key is None else snapshot_key,
        created_at=ts,
        updated_at=ts,
    )
    if spec is not None:
        pb.spec.CopyFrom(json_any(spec, spec_type_url))
    for key, value in (extensions or {}).items():
        url = extension_type_url or _EXTENSION_URLS.get(key, "")
        pb.extensions[key].CopyFrom(json_any(value, url))
    return pb


_EXTENSION_URLS = {
    CRI_CONTAINER_EXTENSION: CRI_CONTAINER_EXTENSION_URL,
    CRI_SANDBOX_EXTENSION: CRI_SANDBOX_EXTENSION_URL,
}


def overlay_mount(upperdir: str, workdir: str, lowerdirs: Sequence[str] = ()) -> mount_pb2.Mount:
    """An overlay mount as the overlayfs snapshotter returns it: type `overlay` (the
    snapshotter's *name* is `overlayfs`), the upper layer in an `upperdir=` option."""
    options = ["index=off", f"workdir={workdir}", f"upperdir={upperdir}"]
    if lowerdirs:
        options.append("lowerdir=" + ":".join(lowerdirs))
    return mount_pb2.Mount(type="overlay", source="overlay", options=options)


def oci_spec(
    cgroups_path: str | None, *, annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A small OCI runtime spec: process, root, a few mounts, `linux.cgroupsPath`."""
    linux: dict[str, Any] = {
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
    }
    if cgroups_path is not None:
        linux["cgroupsPath"] = cgroups_path
    return {
        "ociVersion": "1.1.0",
        "process": {"args": ["/bin/sleep", "infinity"], "cwd": "/", "env": ["PATH=/bin"]},
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
        ],
        "annotations": dict(annotations or {}),
        "linux": linux,
    }


# --- faults -----------------------------------------------------------------------------


class _FaultKind(enum.Enum):
    FAIL = "fail"
    DELAY = "delay"


@dataclass(slots=True)
class _Fault:
    method: str
    kind: _FaultKind
    remaining: float  # math.inf: until cleared
    code: grpc.StatusCode | None = None
    details: str = ""
    seconds: float = 0.0
    cleared: bool = False


@dataclass(frozen=True, slots=True)
class _Abort:
    """A queued instruction to end a stream with a status."""

    code: grpc.StatusCode
    details: str


@dataclass(slots=True)
class _Subscriber:
    filter: Filter
    queue: deque[event_pb2.Envelope | _Abort] = field(default_factory=deque)
    closed: bool = False


@dataclass(slots=True)
class _Namespace:
    containers: dict[str, containers_pb2.Container] = field(default_factory=dict)
    tasks: dict[str, task_types.Process] = field(default_factory=dict)
    mounts: dict[tuple[str, str], list[mount_pb2.Mount]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _TrioWaiter:
    token: trio.lowlevel.TrioToken
    event: trio.Event


class FakeContainerd:
    """The fake containerd server; see the module docstring for the synopsis and rules.

    Args:
        directory: where the socket lives (`<directory>/fake.sock`; keep the path short, unix
            sockets allow ~100 characters).
        version: what Version.Version answers.
        snapshot_root: prefix of the snapshot directories in mounts (nothing is created).
        max_message_bytes: the largest message sent or received; containerd's is 16 MiB,
            which one Containers.List of ~15 000 small containers already exceeds.
        start: start serving right away (`False`: call `start()`, e.g. to test a missing
            socket first).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        socket_name: str = "fake.sock",
        version: str = "v1.6.20-fake",
        revision: str = "fake",
        snapshot_root: str = "/var/lib/containerd",
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        start: bool = True,
    ) -> None:
        self._socket = Path(directory) / socket_name
        self.version = version
        self.revision = revision
        self.snapshot_root = snapshot_root
        self.max_message_bytes = max_message_bytes
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._namespaces: dict[str, _Namespace] = {}
        self._subscribers: list[_Subscriber] = []
        self._faults: list[_Fault] = []
        self._calls: list[RecordedCall] = []
        self._published: list[event_pb2.Envelope] = []
        self._withheld: list[event_pb2.Envelope] = []
        self._withhold_next = 0
        self._duplicate_next = 0
        self._stalled = False
        self._sent = 0
        self._trio_waiters: set[_TrioWaiter] = set()
        self._server: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False
        self._pids = itertools.count(4000)
        self._snapshots = itertools.count(1)
        if start:
            self.start()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The socket path (what `open_client` and `ctr -a` take)."""
        return str(self._socket)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._server is not None

    def start(self) -> None:
        """Serve on the socket (a stale socket file from a previous run is replaced)."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError("the fake containerd is already running")
            with suppress(FileNotFoundError):
                self._socket.unlink()
            executor = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="fake-containerd")
            server = grpc.server(
                executor,
                interceptors=[_Interceptor(self)],
                options=[
                    ("grpc.max_receive_message_length", self.max_message_bytes),
                    ("grpc.max_send_message_length", self.max_message_bytes),
                ],
            )
            _add_version(_VersionService(self), server)
            _add_containers(_ContainersService(self), server)
            _add_tasks(_TasksService(self), server)
            _add_snapshots(_SnapshotsService(self), server)
            _add_events(_EventsService(self), server)
            _add_namespaces(_NamespacesService(self), server)
            server.add_insecure_port(f"unix://{self._socket}")
            server.start()
            self._server, self._executor = server, executor
            self._stopping = False
            self._changed()

    def stop(self) -> None:
        """Stop at once (grace 0), as a killed containerd would: in-flight calls and event
        streams end with UNAVAILABLE (what grpc tells a client whose server went away),
        delayed calls are released, worker threads joined, the socket file removed (`kill()`
        leaves a dead one). The state is kept for `start()`. Stopping a stopped fake does
        nothing."""
        with self._lock:
            server, executor = self._server, self._executor
            if server is None:
                return
            self._server = self._executor = None
        # cancel first: a stream closed by us before the cancel would end with OK instead
        server.stop(grace=0).wait()
        with self._lock:
            self._stopping = True
            for sub in self._subscribers:
                sub.closed = True
            self._changed()
        assert executor is not None
        executor.shutdown(wait=True)
        with suppress(FileNotFoundError):
            self._socket.unlink()

    def kill(self) -> None:
        """`stop()`, leaving a dead socket file behind, as a SIGKILLed containerd does: the
        path still looks like a socket, connecting to it is refused. `start()` replaces it."""
        self.stop()
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            stale.bind(str(self._socket))
        finally:
            stale.close()

    def restart(self) -> None:
        """`stop()` then `start()` on the same socket path."""
        self.stop()
        self.start()

    def __enter__(self) -> FakeContainerd:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- observation ----------------------------------------------------------------------

    def calls(self) -> list[RecordedCall]:
        """Every RPC received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def published(self) -> list[event_pb2.Envelope]:
        """Every envelope published (withheld ones included), in order (a copy)."""
        with self._lock:
            return list(self._published)

    @property
    def subscriber_count(self) -> int:
        """Live Subscribe streams."""
        with self._lock:
            return sum(not s.closed for s in self._subscribers)

    @property
    def sent_count(self) -> int:
        """Envelopes handed to gRPC on any stream so far (duplicates counted)."""
        with self._lock:
            return self._sent

    @property
    def pending_count(self) -> int:
        """Envelopes queued on live streams but not sent yet (e.g. while stalled)."""
        with self._lock:
            return sum(len(s.queue) for s in self._subscribers if not s.closed)

    async def wait_until(self, predicate: Callable[[FakeContainerd], bool]) -> None:
        """Wait (trio) until `predicate(fake)` is true; re-checked after every change the fake
        sees (a call, a subscription coming or going, an event queued or sent, start/stop).

        The predicate runs under the fake's lock: keep it to reading the fake. There is no
        timeout: wrap in `trio.fail_after`. Cancellation removes the waiter.
        """
        token = trio.lowlevel.current_trio_token()
        while True:
            waiter = _TrioWaiter(token, trio.Event())
            with self._lock:
                if predicate(self):
                    return
                self._trio_waiters.add(waiter)
            try:
                await waiter.event.wait()
            finally:
                with self._lock:
                    self._trio_waiters.discard(waiter)

    def wait_for(self, predicate: Callable[[FakeContainerd], bool], timeout: float) -> bool:
        """The blocking twin of `wait_until` for threads: False if `timeout` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def _changed(self) -> None:
        """Wake every waiter (caller holds the lock)."""
        self._cond.notify_all()
        for waiter in self._trio_waiters:
            with suppress(trio.RunFinishedError):
                waiter.token.run_sync_soon(waiter.event.set)

    # --- state: low level -----------------------------------------------------------------

    def _ns(self, namespace: str) -> _Namespace:
        return self._namespaces.setdefault(namespace, _Namespace())

    def container(self, container_id: str, namespace: str = NAMESPACE) -> containers_pb2.Container:
        """A copy of the container as held; KeyError when absent."""
        with self._lock:
            found = containers_pb2.Container()
            found.CopyFrom(self._ns(namespace).containers[container_id])
            return found

    def container_ids(self, namespace: str = NAMESPACE) -> set[str]:
        with self._lock:
            return set(self._ns(namespace).containers)

    def task(self, container_id: str, namespace: str = NAMESPACE) -> task_types.Process | None:
        """A copy of the container's task, None when it has none."""
        with self._lock:
            held = self._ns(namespace).tasks.get(container_id)
            if held is None:
                return None
            found = task_types.Process()
            found.CopyFrom(held)
            return found

    def put_container(
        self, container: containers_pb2.Container, namespace: str = NAMESPACE
    ) -> None:
        """Store (or replace) a container as is, with no event and no snapshot."""
        with self._lock:
            self._ns(namespace).containers[container.id] = container

    def set_mounts(
        self,
        snapshotter: str,
        key: str,
        mounts: Iterable[mount_pb2.Mount],
        namespace: str = NAMESPACE,
    ) -> None:
        """What Snapshots.Mounts(snapshotter, key) answers (an empty iterable: no mounts)."""
        with self._lock:
            self._ns(namespace).mounts[(snapshotter, key)] = list(mounts)

    def remove_mounts(self, snapshotter: str, key: str, namespace: str = NAMESPACE) -> None:
        """Forget a snapshot: Mounts answers NOT_FOUND for it."""
        with self._lock:
            self._ns(namespace).mounts.pop((snapshotter, key), None)

    def new_pid(self) -> int:
        return next(self._pids)

    def _snapshot_mounts(self) -> list[mount_pb2.Mount]:
        n = next(self._snapshots)
        base = f"{self.snapshot_root}/io.containerd.snapshotter.v1.overlayfs/snapshots"
        return [overlay_mount(f"{base}/{n}/fs", f"{base}/{n}/work", [f"{base}/1/fs"])]

    # --- state: what containerd does ------------------------------------------------------

    def create_container(
        self,
        container_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        image: str = WORKSPACE_IMAGE,
        spec: JsonOrRaw | None = None,
        extensions: Mapping[str, JsonOrRaw] | None = None,
        snapshotter: str = SNAPSHOTTER,
        snapshot_key: str | None = None,
        created_at: float | None = None,
        namespace: str = NAMESPACE,
        publish: bool = True,
    ) -> containers_pb2.Container:
        """Prepare a snapshot (overlay mount with `upperdir=`) and create the container:
        `/snapshot/prepare`, `/containers/create`. Arguments as for `build_container`; the
        spec defaults to one with cgroupsPath `/k8s.io/<id>`. Returns the stored message."""
        if spec is None:
            spec = oci_spec(f"/k8s.io/{container_id}")
        pb = build_container(
            container_id,
            labels=labels,
            image=image,
            snapshotter=snapshotter,
            snapshot_key=snapshot_key,
            created_at=created_at,
            spec=spec,
            extensions=extensions,
        )
        with self._lock:
            ns = self._ns(namespace)
            if container_id in ns.containers:
                raise ValueError(f"container {container_id} already exists in {namespace}")
            ns.containers[container_id] = pb
            ns.mounts[(pb.snapshotter, pb.snapshot_key)] = self._snapshot_mounts()
            if publish:
                self.publish(
                    "/snapshot/prepare",
                    snapshot_events.SnapshotPrepare(
                        key=pb.snapshot_key, parent="sha256:fake-image-top", snapshotter=snapshotter
                    ),
                    namespace,
                )
                self.publish(
                    "/containers/create",
                    container_events.ContainerCreate(
                        id=container_id,
                        image=image,
                        runtime=container_events.ContainerCreate.Runtime(name=RUNTIME),
                    ),
                    namespace,
                )
        return pb

    def create_task(
        self,
        container_id: str,
        *,
        pid: int | None = None,
        namespace: str = NAMESPACE,
        publish: bool = True,
    ) -> int:
        """Create the container's task (status CREATED): `/tasks/create` carrying the rootfs
        mounts (overlay, `upperdir=`) and the PID. Returns the PID."""
        with self._lock:
            ns = self._ns(namespace)
            pb = ns.containers[container_id]
            pid = self.new_pid() if pid is None else pid
            ns.tasks[container_id] = task_types.Process(
                id=container_id, pid=pid, status=task_types.CREATED
            )
            if publish:
                rootfs = ns.mounts.get((pb.snapshotter, pb.snapshot_key), [])
                self.publish(
                    "/tasks/create",
                    task_events.TaskCreate(
                        container_id=container_id,
                        bundle=f"/run/containerd/io.containerd.runtime.v2.task/{namespace}/"
                        f"{container_id}",
                        rootfs=rootfs,
                        io=task_events.TaskIO(),
                        pid=pid,
                    ),
                    namespace,
                )
            return pid

    def start_task(
        self,
        container_id: str,
        *,
        pid: int | None = None,
        namespace: str = NAMESPACE,
        publish: bool = True,
    ) -> int:
        """Run the container's task (status RUNNING): `/tasks/create` first if it has no task,
        then `/tasks/start`. Returns the PID."""
        with self._lock:
            ns = self._ns(namespace)
            if container_id not in ns.tasks:
                self.create_task(container_id, pid=pid, namespace=namespace, publish=publish)
            task = ns.tasks[container_id]
            task.status = task_types.RUNNING
            if publish:
                self.publish(
                    "/tasks/start",
                    task_events.TaskStart(container_id=container_id, pid=task.pid),
                    namespace,
                )
            return task.pid

    def exit_task(
        self,
        container_id: str,
        *,
        exit_status: int = 0,
        namespace: str = NAMESPACE,
        publish: bool = True,
    ) -> None:
        """The task's process ended (status STOPPED): `/tasks/exit` with `id` = container id
        (an exec'd process would carry its exec id there; use `publish` for that)."""
        with self._lock:
            task = self._ns(namespace).tasks[container_id]
            task.status = task_types.STOPPED
            task.exit_status = exit_status
            task.exited_at.CopyFrom(timestamp())
            if publish:
                self.publish(
                    "/tasks/exit",
                    task_events.TaskExit(
                        container_id=container_id,
                        id=container_id,
                        pid=task.pid,
                        exit_status=exit_status,
                        exited_at=task.exited_at,
                    ),
                    namespace,
                )

    def delete_task(
        self, container_id: str, *, namespace: str = NAMESPACE, publish: bool = True
    ) -> None:
        """Delete the task (exiting it first, status 137, if it still runs): `/tasks/delete`."""
        with self._lock:
            task = self._ns(namespace).tasks[container_id]
            if task.status != task_types.STOPPED:
                self.exit_task(container_id, exit_status=137, namespace=namespace, publish=publish)
            del self._ns(namespace).tasks[container_id]
            if publish:
                self.publish(
                    "/tasks/delete",
                    task_events.TaskDelete(
                        container_id=container_id,
                        id=container_id,
                        pid=task.pid,
                        exit_status=task.exit_status,
                        exited_at=task.exited_at,
                    ),
                    namespace,
                )

    def delete_container(
        self, container_id: str, *, namespace: str = NAMESPACE, publish: bool = True
    ) -> None:
        """Delete the container (its task first, if any) and its snapshot:
        `/containers/delete`, `/snapshot/remove`."""
        with self._lock:
            ns = self._ns(namespace)
            if container_id in ns.tasks:
                self.delete_task(container_id, namespace=namespace, publish=publish)
            pb = ns.containers.pop(container_id)
            ns.mounts.pop((pb.snapshotter, pb.snapshot_key), None)
            if publish:
                self.publish(
                    "/containers/delete",
                    container_events.ContainerDelete(id=container_id),
                    namespace,
                )
                self.publish(
                    "/snapshot/remove",
                    snapshot_events.SnapshotRemove(key=pb.snapshot_key, snapshotter=pb.snapshotter),
                    namespace,
                )

    # --- kubelet-style pods ---------------------------------------------------------------

    def add_pod(
        self,
        name: str,
        namespace: str = "default",
        uid: str | None = None,
        labels: Mapping[str, str] | None = None,
        containers: Iterable[str] = ("workspace",),
        *,
        image: str = WORKSPACE_IMAGE,
        cgroup_parent: bool = True,
        annotations: Mapping[str, str] | None = None,
        start: bool = True,
        containerd_namespace: str = NAMESPACE,
        publish: bool = True,
    ) -> FakePod:
        """A pod as CRI makes it: the sandbox (labels = pod labels + `io.kubernetes.pod.*` +
        `io.cri-containerd.kind=sandbox`), then each app container (only the kubelet's
        labels + `io.cri-containerd.kind=container`), each with its task started unless
        `start=False`; CRI metadata extensions on all. cgroupsPath is
        `/kubepods/besteffort/pod<uid>/<id>` (`/k8s.io/<id>` with `cgroup_parent=False`)."""
        uid = uid or _uuid(f"pod/{namespace}/{name}")
        parent = f"/kubepods/besteffort/pod{uid}" if cgroup_parent else None
        pod_labels = {
            **(labels or {}),
            "io.kubernetes.pod.name": name,
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.uid": uid,
        }
        sandbox_id = _container_id(f"{uid}/sandbox/0")
        with self._lock:
            self.create_container(
                sandbox_id,
                labels={**pod_labels, "io.cri-containerd.kind": "sandbox"},
                image=PAUSE_IMAGE,
                spec=oci_spec(_cgroups_path(parent, sandbox_id), annotations=annotations),
                extensions={
                    CRI_SANDBOX_EXTENSION: _sandbox_metadata(
                        sandbox_id, name, namespace, uid, pod_labels, annotations, parent
                    )
                },
                namespace=containerd_namespace,
                publish=publish,
            )
            pids: dict[str, int] = {}
            if start:
                pids[sandbox_id] = self.start_task(
                    sandbox_id, namespace=containerd_namespace, publish=publish
                )
            pod = FakePod(
                name=name,
                namespace=namespace,
                uid=uid,
                labels=pod_labels,
                sandbox_id=sandbox_id,
                containers={},
                attempts={},
                pids=pids,
                cgroup_parent=parent,
                containerd_namespace=containerd_namespace,
            )
            for cname in containers:
                pod = self._add_app_container(
                    pod, cname, 0, image=image, start=start, publish=publish
                )
            return pod

    def _add_app_container(
        self, pod: FakePod, cname: str, attempt: int, *, image: str, start: bool, publish: bool
    ) -> FakePod:
        cid = _container_id(f"{pod.uid}/{cname}/{attempt}")
        self.create_container(
            cid,
            labels={
                "io.cri-containerd.kind": "container",
                "io.kubernetes.container.name": cname,
                "io.kubernetes.pod.name": pod.name,
                "io.kubernetes.pod.namespace": pod.namespace,
                "io.kubernetes.pod.uid": pod.uid,
            },
            image=image,
            spec=oci_spec(_cgroups_path(pod.cgroup_parent, cid)),
            extensions={
                CRI_CONTAINER_EXTENSION: _container_metadata(cid, pod, cname, attempt, image)
            },
            namespace=pod.containerd_namespace,
            publish=publish,
        )
        pids = dict(pod.pids)
        if start:
            pids[cid] = self.start_task(cid, namespace=pod.containerd_namespace, publish=publish)
        return replace(
            pod,
            containers={**pod.containers, cname: cid},
            attempts={**pod.attempts, cname: attempt},
            pids=pids,
        )

    def replace_container(
        self, pod: FakePod, cname: str = "workspace", *, exit_status: int = 1, publish: bool = True
    ) -> FakePod:
        """What the kubelet does after a crash: the current attempt's task exits (it stays,
        exited, listed in `exited`), attempt + 1 is created and started in the same sandbox."""
        with self._lock:
            old = pod.containers[cname]
            task = self._ns(pod.containerd_namespace).tasks.get(old)
            if task is not None and task.status != task_types.STOPPED:
                self.exit_task(
                    old,
                    exit_status=exit_status,
                    namespace=pod.containerd_namespace,
                    publish=publish,
                )
            new = self._add_app_container(
                pod,
                cname,
                pod.attempts[cname] + 1,
                image=WORKSPACE_IMAGE,
                start=True,
                publish=publish,
            )
            return replace(new, exited=(*pod.exited, old))

    def remove_pod(self, pod: FakePod, *, publish: bool = True) -> None:
        """Tear the pod down as the kubelet does: app containers (current and exited
        attempts), then the sandbox — each task exited and deleted, then the container."""
        with self._lock:
            ns = self._ns(pod.containerd_namespace)
            for cid in (*pod.containers.values(), *pod.exited, pod.sandbox_id):
                if cid in ns.containers:
                    self.delete_container(cid, namespace=pod.containerd_namespace, publish=publish)

    def add_synthetic_workspaces(
        self, n: int, *, prefix: str = "ws", namespace: str = NAMESPACE
    ) -> list[FakePod]:
        """`n` running mk2 workspace pods (sandbox + `workspace` container, tasks running),
        silently (no events), for benchmarks: the protobufs are built from one template each
        instead of through the helpers, so 10 000 pods take about a second."""
        sandbox_tpl = build_container(
            "", image=PAUSE_IMAGE, spec=None, labels={"io.cri-containerd.kind": "sandbox"}
        )
        app_tpl = build_container(
            "",
            image=WORKSPACE_IMAGE,
            labels={
                "io.cri-containerd.kind": "container",
                "io.kubernetes.container.name": "workspace",
            },
        )
        pods: list[FakePod] = []
        with self._lock:
            ns = self._ns(namespace)
            first = next(self._pids)
            for i in range(n):
                name = f"{prefix}-{i}"
                uid = _uuid(f"synthetic/{prefix}/{i}")
                instance = _uuid(f"instance/{prefix}/{i}")
                sid, cid = _container_id(f"{uid}/sandbox/0"), _container_id(f"{uid}/workspace/0")
                parent = f"/kubepods/besteffort/pod{uid}"
                kube = {
                    "io.kubernetes.pod.name": name,
                    "io.kubernetes.pod.namespace": "default",
                    "io.kubernetes.pod.uid": uid,
                }
                pod_labels = {**mk2_labels(instance, f"{prefix}-{i}", f"owner-{i % 97}"), **kube}
                sandbox = containers_pb2.Container()
                sandbox.CopyFrom(sandbox_tpl)
                sandbox.id = sandbox.snapshot_key = sid
                sandbox.labels.update(pod_labels)
                sandbox.spec.type_url = SPEC_TYPE_URL
                sandbox.spec.value = _SYNTH_SPEC.format(cgroup=f"{parent}/{sid}").encode()
                app = containers_pb2.Container()
                app.CopyFrom(app_tpl)
                app.id = app.snapshot_key = cid
                app.labels.update(kube)
                app.spec.type_url = SPEC_TYPE_URL
                app.spec.value = _SYNTH_SPEC.format(cgroup=f"{parent}/{cid}").encode()
                ext = app.extensions[CRI_CONTAINER_EXTENSION]
                ext.type_url = CRI_CONTAINER_EXTENSION_URL
                ext.value = _SYNTH_CONTAINER_EXT.format(cid=cid, sid=sid, pod=name).encode()
                spid, cpid = first + 2 * i + 1, first + 2 * i + 2
                base = f"{self.snapshot_root}/io.containerd.snapshotter.v1.overlayfs/snapshots"
                for c, pid, snap in ((sandbox, spid, 2 * i + 1), (app, cpid, 2 * i + 2)):
                    ns.containers[c.id] = c
                    ns.tasks[c.id] = task_types.Process(id=c.id, pid=pid, status=task_types.RUNNING)
                    ns.mounts[(SNAPSHOTTER, c.id)] = [
                        overlay_mount(f"{base}/s{snap}/fs", f"{base}/s{snap}/work")
                    ]
                pods.append(
                    FakePod(
                        name=name,
                        namespace="default",
                        uid=uid,
                        labels=pod_labels,
                        sandbox_id=sid,
                        containers={"workspace": cid},
                        attempts={"workspace": 0},
                        pids={sid: spid, cid: cpid},
                        cgroup_parent=parent,
                        containerd_namespace=namespace,
                    )
                )
            self._pids = itertools.count(first + 2 * n + 1)
        return pods

    # --- events ---------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        event: Message | any_pb2.Any,
        namespace: str = NAMESPACE,
        *,
        copies: int = 1,
    ) -> event_pb2.Envelope:
        """Publish an event as containerd does: an envelope with a timestamp, the namespace
        and the event packed under its bare type URL (an `Any` goes out as is: unknown type
        URLs, garbage bytes). Queued on every stream whose filter matches; `copies` > 1
        delivers it that many times. `withhold_next`/`duplicate_next` apply here."""
        envelope = event_pb2.Envelope(
            timestamp=timestamp(), namespace=namespace, topic=topic, event=event_any(event)
        )
        with self._lock:
            self._published.append(envelope)
            if self._withhold_next > 0:
                self._withhold_next -= 1
                self._withheld.append(envelope)
                return envelope
            if self._duplicate_next > 0:
                self._duplicate_next -= 1
                copies += 1
            self._enqueue(envelope, copies)
        return envelope

    def _enqueue(self, envelope: event_pb2.Envelope, copies: int) -> None:
        adaptor = _envelope_adaptor(envelope)
        for sub in self._subscribers:
            if not sub.closed and sub.filter.matches(adaptor):
                sub.queue.extend([envelope] * copies)
        self._changed()

    def publish_unknown(
        self,
        topic: str = "/fake/unknown",
        type_url: str = "containerd.events.FakeUnknownEvent",
        value: bytes = b"",
        namespace: str = NAMESPACE,
    ) -> event_pb2.Envelope:
        """An event of a type the watcher cannot know (a newer containerd, a plugin)."""
        return self.publish(topic, any_pb2.Any(type_url=type_url, value=value), namespace)

    def publish_garbage(
        self,
        topic: str = "/tasks/create",
        type_url: str = "containerd.events.TaskCreate",
        value: bytes = GARBAGE,
        namespace: str = NAMESPACE,
    ) -> event_pb2.Envelope:
        """A known type URL over bytes that do not parse (truncated by default)."""
        return self.publish(topic, any_pb2.Any(type_url=type_url, value=value), namespace)

    def withhold_next(self, n: int = 1) -> None:
        """The next `n` events are not delivered (the state still changes): a missed event,
        as only a relist can tell. `withheld()` lists them, `release_withheld()` sends them
        late."""
        with self._lock:
            self._withhold_next += n

    def withheld(self) -> list[event_pb2.Envelope]:
        with self._lock:
            return list(self._withheld)

    def release_withheld(self) -> None:
        """Deliver the withheld events now, out of their original order."""
        with self._lock:
            held, self._withheld = self._withheld, []
            for envelope in held:
                self._enqueue(envelope, 1)

    def duplicate_next(self, n: int = 1) -> None:
        """The next `n` events are delivered twice each (as after a containerd restart)."""
        with self._lock:
            self._duplicate_next += n

    def drop_streams(
        self,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        details: str = "fake containerd: event stream dropped",
    ) -> int:
        """End every live Subscribe with `code`, after what was queued before (a stalled
        stream drops at once). Returns how many streams are dropped. New subscriptions are
        not affected."""
        with self._lock:
            live = [s for s in self._subscribers if not s.closed]
            for sub in live:
                if self._stalled:
                    sub.queue.clear()
                    sub.queue.append(_Abort(code, details))
                else:
                    sub.queue.append(_Abort(code, details))
            self._changed()
            return len(live)

    def stall_streams(self) -> None:
        """Send nothing on any stream (events queue up) until `resume_streams()`; the
        connection stays healthy, so only the watcher's own timers can notice."""
        with self._lock:
            self._stalled = True
            self._changed()

    def resume_streams(self) -> None:
        with self._lock:
            self._stalled = False
            self._changed()

    @contextmanager
    def stalled(self) -> Iterator[None]:
        """`stall_streams()` for the block."""
        self.stall_streams()
        try:
            yield
        finally:
            self.resume_streams()

    # --- faults ---------------------------------------------------------------------------

    def fail(
        self,
        method: Rpc | str,
        code: grpc.StatusCode,
        *,
        times: int | None = 1,
        details: str | None = None,
    ) -> None:
        """The next `times` calls of `method` (a full method name; `None`: until
        `clear_faults`) fail with `code` before reaching the fake's state."""
        self._add_fault(
            _Fault(
                method=_check_method(method),
                kind=_FaultKind.FAIL,
                remaining=math.inf if times is None else times,
                code=code,
                details=details or f"fake containerd: scripted {code.name}",
            )
        )

    def delay(self, method: Rpc | str, seconds: float, *, times: int | None = 1) -> None:
        """The next `times` calls of `method` wait `seconds` (`math.inf`: until
        `clear_faults` or `stop`) before being served — enough to exceed a client deadline."""
        self._add_fault(
            _Fault(
                method=_check_method(method),
                kind=_FaultKind.DELAY,
                remaining=math.inf if times is None else times,
                seconds=seconds,
            )
        )

    def clear_faults(self, method: Rpc | str | None = None) -> None:
        """Remove scripted faults (of `method`, or all) and release calls being delayed."""
        with self._lock:
            keep = []
            for fault in self._faults:
                if method is None or fault.method == str(method):
                    fault.cleared = True
                else:
                    keep.append(fault)
            self._faults = keep
            self._changed()

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _apply_faults(self, method: str, context: grpc.ServicerContext) -> None:
        """Run in the worker thread before the handler: delays wait, failures abort."""
        failure: _Fault | None = None
        with self._lock:
            for fault in self._faults:
                if fault.method != method or fault.remaining <= 0:
                    continue
                fault.remaining -= 1
                if fault.kind is _FaultKind.FAIL:
                    failure = fault
                    break
                self._wait_delay(fault)
        if failure is not None:
            assert failure.code is not None
            _abort(context, failure.code, failure.details)

    def _wait_delay(self, fault: _Fault) -> None:
        """Hold a call for the fault's seconds; cut short by `clear_faults` or `stop`."""
        timeout = None if math.isinf(fault.seconds) else fault.seconds
        self._cond.wait_for(lambda: fault.cleared or self._stopping, timeout)

    # --- serving (worker threads) ---------------------------------------------------------

    def _record(self, method: str, namespace: str | None) -> None:
        with self._lock:
            self._calls.append(RecordedCall(method, namespace))
            self._changed()

    def _subscribe(self, flt: Filter) -> _Subscriber:
        with self._lock:
            sub = _Subscriber(flt)
            if self._stopping:
                sub.closed = True
            self._subscribers.append(sub)
            self._changed()
            return sub

    def _close(self, sub: _Subscriber) -> None:
        with self._lock:
            sub.closed = True
            self._changed()

    def _unsubscribe(self, sub: _Subscriber) -> None:
        with self._lock:
            sub.closed = True
            with suppress(ValueError):
                self._subscribers.remove(sub)
            self._changed()

    def _next(self, sub: _Subscriber) -> event_pb2.Envelope | _Abort | None:
        """The next item for a stream, blocking; None once the stream is closed."""
        with self._cond:
            while True:
                if sub.closed:
                    return None
                if sub.queue and (not self._stalled or isinstance(sub.queue[0], _Abort)):
                    item = sub.queue.popleft()
                    if not isinstance(item, _Abort):
                        self._sent += 1
                    self._changed()
                    return item
                self._cond.wait()

    def _namespace_of(self, context: grpc.ServicerContext) -> str:
        """The request's namespace; FAILED_PRECONDITION without one, as containerd answers."""
        for key, value in context.invocation_metadata():
            if key == NAMESPACE_METADATA and value:
                return str(value)
        _abort(
            context,
            grpc.StatusCode.FAILED_PRECONDITION,
            "namespace is required: failed precondition",
        )

    def _held(self, context: grpc.ServicerContext) -> _Namespace:
        return self._namespaces.get(self._namespace_of(context)) or _Namespace()


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, details)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _check_method(method: Rpc | str) -> str:
    name = str(method)
    if not name.startswith("/") or name.count("/") != 2:
        raise ValueError(f"{name!r} is not a full gRPC method name (use Rpc.*)")
    return name


def _uuid(seed: str) -> str:
    """A stable UUID-shaped id from a seed: tests and benchmarks are reproducible."""
    h = hashlib.sha256(seed.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _container_id(seed: str) -> str:
    """A 64-hex id, like CRI's, stable per seed."""
    return hashlib.sha256(seed.encode()).hexdigest()


def _cgroups_path(parent: str | None, cid: str) -> str:
    return f"{parent}/{cid}" if parent else f"/k8s.io/{cid}"


def _sandbox_metadata(
    sid: str,
    name: str,
    namespace: str,
    uid: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None,
    parent: str | None,
) -> dict[str, Any]:
    return {
        "Version": "v1",
        "Metadata": {
            "ID": sid,
            "Name": f"{name}_{namespace}_{uid}_0",
            "Config": {
                "metadata": {"name": name, "uid": uid, "namespace": namespace, "attempt": 0},
                "log_directory": f"/var/log/pods/{namespace}_{name}_{uid}",
                "labels": dict(labels),
                "annotations": dict(annotations or {}),
                "linux": {"cgroup_parent": parent or ""},
            },
            "NetNSPath": "",
            "RuntimeHandler": "",
        },
    }


def _container_metadata(
    cid: str, pod: FakePod, cname: str, attempt: int, image: str
) -> dict[str, Any]:
    log_dir = f"/var/log/pods/{pod.namespace}_{pod.name}_{pod.uid}"
    return {
        "Version": "v1",
        "Metadata": {
            "ID": cid,
            "Name": f"{cname}_{pod.name}_{pod.namespace}_{pod.uid}_{attempt}",
            "SandboxID": pod.sandbox_id,
            "Config": {
                "metadata": {"name": cname, "attempt": attempt},
                "image": {"image": image},
                "labels": {},
                "annotations": {"io.kubernetes.container.restartCount": str(attempt)},
                "log_path": f"{cname}/{attempt}.log",
            },
            "ImageRef": "sha256:" + hashlib.sha256(image.encode()).hexdigest(),
            "LogPath": f"{log_dir}/{cname}/{attempt}.log",
            "StopSignal": "SIGTERM",
        },
    }


# doubled braces: str.format templates of the synthetic loader (json.dumps per pod is the
# slow part of building 10 000 pods)
_SYNTH_SPEC = (
    '{{"ociVersion":"1.1.0","process":{{"args":["/bin/sleep","infinity"],"cwd":"/"}},'
    '"root":{{"path":"rootfs"}},"linux":{{"cgroupsPath":"{cgroup}"}}}}'
)
_SYNTH_CONTAINER_EXT = (
    '{{"Version":"v1","Metadata":{{"ID":"{cid}","Name":"workspace_{pod}_default_0",'
    '"SandboxID":"{sid}","Config":{{"metadata":{{"name":"workspace","attempt":0}}}}}}}}'
)


def _envelope_adaptor(
    envelope: event_pb2.Envelope,
) -> Callable[[tuple[str, ...]], str | Unsupported | None]:
    def adaptor(path: tuple[str, ...]) -> str | Unsupported | None:
        if path == ("namespace",):
            return envelope.namespace
        if path == ("topic",):
            return envelope.topic
        return UNSUPPORTED

    return adaptor


def _container_adaptor(
    pb: containers_pb2.Container,
) -> Callable[[tuple[str, ...]], str | Unsupported | None]:
    def adaptor(path: tuple[str, ...]) -> str | Unsupported | None:
        match path:
            case ("id",):
                return pb.id
            case ("image",):
                return pb.image
            case ("snapshotter",):
                return pb.snapshotter
            case ("runtime", "name"):
                return pb.runtime.name
            case ("labels", key):
                return pb.labels.get(key)
        return UNSUPPORTED

    return adaptor


def _parse_filters(filters: Sequence[str], context: grpc.ServicerContext) -> Filter:
    try:
        return parse_all(filters)
    except FilterError as exc:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))


# --- the servicers ----------------------------------------------------------------------
# The generated servicers answer UNIMPLEMENTED for everything; we override what the watcher
# uses. Their add_* functions are untyped: typed aliases keep mypy --strict quiet.

_add_version: Callable[[Any, Any], None] = version_pb2_grpc.add_VersionServicer_to_server
_add_containers: Callable[[Any, Any], None] = containers_pb2_grpc.add_ContainersServicer_to_server
_add_tasks: Callable[[Any, Any], None] = tasks_pb2_grpc.add_TasksServicer_to_server
_add_snapshots: Callable[[Any, Any], None] = snapshots_pb2_grpc.add_SnapshotsServicer_to_server
_add_events: Callable[[Any, Any], None] = events_pb2_grpc.add_EventsServicer_to_server
_add_namespaces: Callable[[Any, Any], None] = namespace_pb2_grpc.add_NamespacesServicer_to_server


class _VersionService(version_pb2_grpc.VersionServicer):
    def __init__(self, fake: FakeContainerd) -> None:
        self.fake = fake

    def Version(
        self, request: empty_pb2.Empty, context: grpc.ServicerContext
    ) -> version_pb2.VersionResponse:
        return version_pb2.VersionResponse(version=self.fake.version, revision=self.fake.revision)


class _NamespacesService(namespace_pb2_grpc.NamespacesServicer):
    """containerd lists the namespaces that hold anything; CRI's `k8s.io` always exists."""

    def __init__(self, fake: FakeContainerd) -> None:
        self.fake = fake

    def List(
        self, request: namespace_pb2.ListNamespacesRequest, context: grpc.ServicerContext
    ) -> namespace_pb2.ListNamespacesResponse:
        with self.fake._lock:
            names = sorted({NAMESPACE, *self.fake._namespaces})
        return namespace_pb2.ListNamespacesResponse(
            namespaces=[namespace_pb2.Namespace(name=n) for n in names]
        )


class _ContainersService(containers_pb2_grpc.ContainersServicer):
    def __init__(self, fake: FakeContainerd) -> None:
        self.fake = fake

    def Get(
        self, request: containers_pb2.GetContainerRequest, context: grpc.ServicerContext
    ) -> containers_pb2.GetContainerResponse:
        fake = self.fake
        with fake._lock:
            namespace = fake._namespace_of(context)
            found = fake._held(context).containers.get(request.id)
            if found is not None:
                return containers_pb2.GetContainerResponse(container=found)
        _abort(
            context,
            grpc.StatusCode.NOT_FOUND,
            f'container "{request.id}" in namespace "{namespace}": not found',
        )

    def List(
        self, request: containers_pb2.ListContainersRequest, context: grpc.ServicerContext
    ) -> containers_pb2.ListContainersResponse:
        flt = _parse_filters(request.filters, context)
        fake = self.fake
        with fake._lock:
            held = list(fake._held(context).containers.values())
        if flt.alternatives:
            held = [c for c in held if flt.matches(_container_adaptor(c))]
        return containers_pb2.ListContainersResponse(containers=held)

    def ListStream(
        self, request: containers_pb2.ListContainersRequest, context: grpc.ServicerContext
    ) -> Iterator[containers_pb2.ListContainerMessage]:
        flt = _parse_filters(request.filters, context)
        fake = self.fake
        with fake._lock:
            held = list(fake._held(context).containers.values())
        for c in held:
            if flt.matches(_container_adaptor(c)):
                yield containers_pb2.ListContainerMessage(container=c)


class _TasksService(tasks_pb2_grpc.TasksServicer):
    def __init__(self, fake: FakeContainerd) -> None:
        self.fake = fake

    def Get(
        self, request: tasks_pb2.GetRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.GetResponse:
        fake = self.fake
        with fake._lock:
            found = fake._held(context).tasks.get(request.container_id)
            if found is not None:
                process = task_types.Process()
                process.CopyFrom(found)
                process.container_id = request.container_id
                return tasks_pb2.GetResponse(process=process)
        _abort(context, grpc.StatusCode.NOT_FOUND, f"task {request.container_id}: not found")

    def List(
        self, request: tasks_pb2.ListTasksRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.ListTasksResponse:
        fake = self.fake
        with fake._lock:
            held = list(fake._held(context).tasks.values())
        return tasks_pb2.ListTasksResponse(tasks=held)


class _SnapshotsService(snapshots_pb2_grpc.SnapshotsServicer):
    def __init__(self, fake: FakeContainerd) -> None:
        self.fake = fake

    def Mounts(
        self, request: snapshots_pb2.MountsRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.MountsResponse:
        fake = self.fake
        with fake._lock:
            found = fake._held(context).mounts.get((request.snapshotter, request.key))
            if found is not None:
                return snapshots_pb2.MountsResponse(mounts=found)
        _abort(
            context,
            grpc.StatusCode.NOT_FOUND,
            f"snapshot {request.key} does not exist: not found",
        )


class _EventsService(events_pb2_grpc.EventsServicer):
    def __init__(self, fake: FakeContainerd) -> None:
        self.fake = fake

    def Subscribe(
        self, request: events_pb2.SubscribeRequest, context: grpc.ServicerContext
    ) -> Iterator[event_pb2.Envelope]:
        flt = _parse_filters(request.filters, context)
        fake = self.fake
        sub = fake._subscribe(flt)
        # runs when the RPC ends for any reason (client cancel, server stop): wakes _next
        context.add_callback(lambda: fake._close(sub))
        try:
            while True:
                item = fake._next(sub)
                if item is None:
                    return
                if isinstance(item, _Abort):
                    _abort(context, item.code, item.details)
                yield item
        finally:
            fake._unsubscribe(sub)


class _Interceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Records every call (method + namespace metadata), then applies scripted faults in the
    worker thread, before the real handler runs."""

    def __init__(self, fake: FakeContainerd) -> None:
        self.fake = fake

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        method: str = details.method
        namespace = next(
            (str(v) for k, v in details.invocation_metadata if k == NAMESPACE_METADATA), None
        )
        self.fake._record(method, namespace)
        handler = continuation(details)
        if handler is None:
            return None
        fake = self.fake
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                fake._apply_faults(method, context)
                return inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                fake._apply_faults(method, context)
                yield from inner_us(request, context)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


__all__ = [
    "GARBAGE",
    "NAMESPACE",
    "READ_ONLY_RPCS",
    "FakeContainerd",
    "FakePod",
    "RecordedCall",
    "Rpc",
    "build_container",
    "event_any",
    "json_any",
    "mk2_labels",
    "oci_spec",
    "overlay_mount",
    "timestamp",
]
