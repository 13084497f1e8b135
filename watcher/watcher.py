"""The trio shell around the index: connect, subscribe, list, apply, reconnect.

All decisions live in the pure `Index`; this module only moves data between containerd and
it, in one task, so applying is never concurrent and the index needs no lock. The loop:

1. open a client, **subscribe first**, then list containers and tasks and apply the listing as
   one `Relisted` (so what happens during the listing is in the buffered stream, not lost);
2. resolve what the index asks for (upperdirs from the Snapshots service, rootfs mount points
   from the node's mount table), publish `Synced`, and from then on apply the stream;
3. on any connection error: publish `Disconnected` (once per outage), wait with capped
   exponential backoff, and start over at 1. The relist reconciles whatever was missed.

Cancellation: everything here is cancellable at any await; leaving `open_watcher` cancels the
loop, which cancels the gRPC calls and waits for the stream's pump thread to end.
Error handling: `ConnectError`/`ContainerdError` from containerd are retried forever once the
watcher has been ready; before that, the first failure propagates (a wrong address is a
mistake to report, not to retry).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

import trio
from trio_util import AsyncValue

from . import decode, mounts
from ._nursery import single_errors
from .changes import DEFAULT_BUFFER, ChangeHub, ChangeStream
from .client import (
    DEFAULT_ADDRESS,
    DEFAULT_NAMESPACE,
    DEFAULT_TIMEOUT,
    Client,
    Events,
    open_client,
)
from .corrections import GRACE, Corrections
from .errors import ConnectError, ContainerdError, NoCgroup, NotFound, NotResolved, UsageError
from .index import Index
from .labels import GITPOD_SCHEMES, LabelScheme
from .prefetch import Step, open_prefetch
from .records import (
    KIND_CONTAINER,
    ChangeKind,
    ContainerChanged,
    ContainerId,
    ContainerRecord,
    ContainerSeen,
    Disconnected,
    Envelope,
    Event,
    ImageInfo,
    InstanceId,
    Relisted,
    Synced,
    TaskCreated,
    TaskRecord,
    TaskStatus,
    Workspace,
    WorkspaceChange,
)
from .resolve import Resolver

log = logging.getLogger(__name__)

#: a stream this long without events is checked with a Version call: a containerd that is
#: wedged, or a connection that died silently, is noticed within this time
HEALTH_CHECK_INTERVAL = 10.0

#: seconds after a (re)connection to the first safety relist (see `_follow`)
SETTLE_RELIST = 5.0

#: distinct causes of one outage warned about; repeated or further ones are debug-logged
MAX_OUTAGE_CAUSES = 5

#: distinct unknown event types warned about (once each); more are ignored silently
MAX_UNKNOWN_TYPES = 100

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything a watcher is configured with, built once (the CLI builds it from flags)."""

    address: str = DEFAULT_ADDRESS
    namespace: str = DEFAULT_NAMESPACE
    schemes: Sequence[LabelScheme] = GITPOD_SCHEMES
    #: the host's /proc: the mount table is read from PROC/1/mountinfo when not /proc
    proc_root: str = "/proc"
    path_map: mounts.PathMap = field(default_factory=mounts.PathMap)
    #: first and longest wait between reconnection attempts
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    #: deadline of each unary call to containerd
    call_timeout: float = DEFAULT_TIMEOUT
    #: changes buffered per follower before the oldest are dropped (see `changes()`)
    change_buffer: int = DEFAULT_BUFFER
    #: seconds between safety relists on a live stream (0: never); like the kubelet's relist
    relist_interval: float = 300.0
    #: seconds a relisted change waits for its event before it counts as missed
    relist_grace: float = GRACE

    def __post_init__(self) -> None:
        if not self.namespace:
            raise UsageError("the containerd namespace must not be empty")
        if not (0 < self.backoff_initial <= self.backoff_max):
            raise UsageError("backoff must be positive, the initial one at most the maximum")
        if self.call_timeout <= 0:
            raise UsageError("the call timeout must be positive")
        if self.relist_interval < 0:
            raise UsageError("the relist interval must not be negative (0 turns it off)")
        if self.relist_grace < 0:
            raise UsageError("the relist grace must not be negative")


class Watcher:
    """A live index of the workspace containers on this node.

    Synopsis::

        async with open_watcher(address="/run/containerd/containerd.sock") as w:
            ws = await w.wait_for_container(instance_id)   # running: PID, upperdir known
            print(ws.pid, w.container_cgroup_path(ws.container_id))
            print(await w.container_rootfs(ws.container_id))
            with w.changes() as changes:
                async for change in changes:
                    ...
            await w.wait_for_container_stop(instance_id)

    Races, stated: a workspace can change again before a waiter runs, so waits return the
    record that satisfied them; the accessors answer from the index as it is now.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._index = Index(self.settings.schemes)
        self._generation = AsyncValue(0)
        self._ready = AsyncValue(False)
        self._hub = ChangeHub(self.settings.change_buffer)
        self._client: Client | None = None
        self._outage = False
        self._resolver = Resolver(self._index, self.settings.namespace, self.settings.proc_root)
        self._wake = trio.Event()
        self._suspects = Corrections(self.settings.relist_grace)
        self._unknown_types: set[str] = set()
        self._causes: set[str] = set()  # of the current outage, warned about

    @property
    def corrections(self) -> int:
        """How many changes safety relists had to make: events the stream never delivered."""
        return self._suspects.count

    # --- the loop ------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the watcher until cancelled; `started()` once the first sync is done."""
        backoff = self.settings.backoff_initial
        started = False
        while True:
            try:
                async with (
                    open_client(
                        self.settings.address,
                        self.settings.namespace,
                        call_timeout=self.settings.call_timeout,
                    ) as client,
                    client.subscribe() as events,
                ):
                    self._client = client
                    if not started:
                        await self._check_namespace(client)
                    await self._resync(client, initial=not started)
                    if not started:
                        task_status.started()
                        started = True
                    backoff = self.settings.backoff_initial
                    await self._follow(client, events)
            except (ConnectError, ContainerdError) as exc:
                if not started:
                    raise
                self._lost(exc)
            finally:
                self._client = None
            with trio.move_on_after(backoff):
                await self._wake.wait()
            self._wake = trio.Event()
            backoff = min(backoff * 2, self.settings.backoff_max)

    async def _check_namespace(self, client: Client) -> None:
        """containerd serves any namespace, an unknown one as empty: a typo would watch
        nothing, silently. So the first connection insists that the namespace exists."""
        known = await client.namespaces()
        if self.settings.namespace not in known:
            raise UsageError(
                f"containerd has no namespace {self.settings.namespace!r} "
                f"(it has: {', '.join(sorted(known)) or 'none'})"
            )

    async def _follow(self, client: Client, events: Events) -> None:
        """Apply the stream; between events, relist on schedule and check containerd lives.

        Only the wait for the next step is ever interrupted (a memory-channel receive loses
        nothing when cancelled); applying a step always runs to its end.
        """
        interval = self.settings.relist_interval
        # the first relist comes early: containerd registers a subscription only when it
        # serves the call, at a moment the client cannot see, so an event published just
        # then is in neither the listing nor the stream
        first = min(interval, SETTLE_RELIST)
        next_relist = trio.current_time() + first if interval > 0 else math.inf
        async with open_prefetch(client, events) as steps:
            while True:
                idle_until = trio.current_time() + HEALTH_CHECK_INTERVAL
                step: Step | None = None
                try:  # in a burst the next step is already there: no cancel scope needed
                    step = steps.receive_nowait()
                except trio.WouldBlock:
                    with trio.move_on_at(min(next_relist, idle_until, self._suspects.next_due())):
                        step = await steps.receive()
                if step is not None:
                    await self._take(client, step)
                    continue
                now = trio.current_time()
                if self._suspects.report_due(now):
                    self._generation.value += 1  # `corrections` changed: wake `wait_until`
                if now >= next_relist:
                    await self._relist(client)
                    next_relist = trio.current_time() + interval
                elif now >= idle_until:
                    await client.version()  # a quiet stream: is anybody there?

    async def _relist(self, client: Client) -> None:
        """The safety relist: whatever it changes is an event the stream did not deliver."""
        changes = await self._resync(client, initial=False, announce=False)
        for change in changes:
            self._suspects.suspect(change, trio.current_time())

    def _lost(self, exc: Exception) -> None:
        """One warning (and one `Disconnected`) per outage, plus one per new cause within it
        (containerd gone, then something else on its socket), at most `MAX_OUTAGE_CAUSES`."""
        self._ready.value = False
        cause = str(exc)
        if not self._outage:
            self._outage = True
            self._causes = {cause}
            log.warning("lost containerd: %s; reconnecting", exc)
            self._hub.publish(Disconnected(ts=time.time(), error=cause))
        elif cause not in self._causes and len(self._causes) < MAX_OUTAGE_CAUSES:
            self._causes.add(cause)
            log.warning("still no containerd: %s; reconnecting", exc)
        else:
            log.debug("still no containerd: %s", exc)

    async def _resync(
        self, client: Client, *, initial: bool, announce: bool = True
    ) -> list[WorkspaceChange]:
        containers = await client.list_containers()
        tasks = await client.list_tasks()
        candidates = tuple(c for c in containers if self._index.is_candidate(c.labels))
        if initial:
            # only with no stream behind it: a relist or resync may list a container between
            # CRI opening its log file and creating its task, and an exit is irrevocable (a
            # running workspace reported exited: found by the soak); the stream tells exits
            tasks += self._exited_without_task(candidates, tasks)
        listing = Relisted(ts=time.time(), containers=candidates, tasks=tuple(tasks))
        changes = await self._apply(client, listing)
        self._outage = False
        if announce:
            count = len(self._index.workspaces())
            self._hub.publish(Synced(ts=time.time(), workspaces=count, initial=initial))
            log.info("synced: %d workspaces", count)
        self._ready.value = True
        return changes

    def _exited_without_task(
        self, containers: Sequence[ContainerRecord], tasks: Sequence[TaskRecord]
    ) -> list[TaskRecord]:
        """Stopped tasks for CRI containers that ran and whose task CRI already deleted.

        A listing shows a container with no task both before its start and after its exit
        (CRI deletes an exited task at once). CRI creates the container's log file when it
        starts it, so a CRI container with a log file and no task has run and exited.
        """
        alive = {t.container_id for t in tasks}
        stopped = []
        for c in containers:
            log_path = c.cri_container.log_path if c.cri_container else None
            if c.id in alive or not log_path or c.kind != KIND_CONTAINER:
                continue
            if os.path.exists(self.settings.path_map.map(log_path)):
                stopped.append(TaskRecord(container_id=c.id, pid=0, status=TaskStatus.STOPPED))
        return stopped

    async def _take(self, client: Client, step: Step) -> None:
        """Apply one step of the stream, its prefetched Get awaited first."""
        await step.ready.wait()
        if step.error is not None:
            raise step.error
        envelope = step.envelope
        assert envelope is not None  # only a failing step has none
        event = envelope.event
        if event is None:
            self._unknown_type(envelope)
            return
        self._suspects.confirm(getattr(event, "container_id", None))
        if isinstance(event, ContainerChanged):
            if step.missing:
                # deleted right after it was created (its delete event follows); if not, the
                # next relist finds it. Known from a listing already: nothing was missed.
                known = self._index.container_record(event.container_id) is not None
                (log.debug if known else log.warning)(
                    "container %s: announced by %s, but containerd has no such container; skipped",
                    event.container_id,
                    envelope.topic,
                )
                return
            record = step.record
            if record is None or not self._index.is_candidate(record.labels):
                return
            event = ContainerSeen(ts=event.ts, container=record)
        elif (
            isinstance(event, TaskCreated)
            and event.rootfs is None
            and self._index.by_container(event.container_id) is not None
        ):
            event = replace(event, rootfs=self._resolver.rootfs(event.container_id))
        await self._apply(client, event)

    def _unknown_type(self, envelope: Envelope) -> None:
        """Warn once per event type that containerd's API does not know (undecodable
        payloads of known types were warned about by `decode`)."""
        name = envelope.type_name
        if name in decode.KNOWN_EVENT_TYPES or name in self._unknown_types:
            return
        if len(self._unknown_types) >= MAX_UNKNOWN_TYPES:
            return
        self._unknown_types.add(name)
        log.warning(
            "event of unknown type %r on %s ignored (a newer containerd?); not repeated",
            name,
            envelope.topic,
        )

    async def _apply(self, client: Client, event: Event) -> list[WorkspaceChange]:
        changes = self._index.apply(event)
        unresolved = self._index.unresolved()
        if unresolved:
            for resolved in await self._resolver.resolve(client, unresolved, event.ts):
                changes += self._index.apply(resolved)
        for change in changes:
            if change.kind is ChangeKind.RUNNING:
                self._resolver.check_cgroup(change.workspace)
            self._hub.publish(change)
        if changes:
            self._generation.value += 1
        return changes

    # --- waiting -------------------------------------------------------------------------

    async def wait_until(self, find: Callable[[], T | None]) -> T:
        """Wait until `find()` returns something other than None, and return that.

        `find` is called now and after every change of the index, on the trio thread, so it
        can read the watcher freely (`lambda: w.workspaces().get(iid)`); it must not block.
        """
        found: list[T] = []

        def check(_: int) -> bool:
            value = find()
            if value is not None:
                found.append(value)
            return value is not None

        await self._generation.wait_value(check)
        return found[-1]

    async def wait_for_container(self, instance_id: str) -> Workspace:
        """The instance's workspace once its task runs with PID and upperdir resolved.

        Waits as long as the caller's cancel scope allows (use `trio.fail_after`); returns
        the record that satisfied the wait.
        """
        _check_id(instance_id, "instance id")

        def running() -> Workspace | None:
            ws = self._index.by_instance(InstanceId(instance_id))
            return ws if ws is not None and ws.running else None

        return await self.wait_until(running)

    async def wait_for_container_stop(self, instance_id: str) -> None:
        """Return once no workspace container of the instance is left (at once if none is)."""
        _check_id(instance_id, "instance id")
        gone = self._index.by_instance(InstanceId(instance_id)) is None
        if not gone:
            await self.wait_until(
                lambda: True if self._index.by_instance(InstanceId(instance_id)) is None else None
            )

    async def is_ready(self) -> bool:
        """containerd is serving and the last (re)sync is done."""
        await trio.lowlevel.checkpoint()
        return bool(self._ready.value)

    async def wait_ready(self, ready: bool = True) -> None:
        """Wait until the watcher is synced with containerd (or, `ready=False`, has lost it)."""
        await self._ready.wait_value(ready)

    def reconnect_now(self) -> None:
        """Cut the current back-off wait short: reconnect at once (e.g. on SIGHUP)."""
        self._wake.set()

    # --- queries -------------------------------------------------------------------------

    def workspaces(self) -> Mapping[InstanceId, Workspace]:
        """A snapshot: each instance with its newest workspace container."""
        return dict(self._index.workspaces())

    def workspace(self, container_id: str) -> Workspace:
        ws = self._index.by_container(ContainerId(container_id))
        if ws is None:
            raise NotFound(f"no workspace container {container_id!r} on this node")
        return ws

    def instance(self, instance_id: str) -> Workspace:
        ws = self._index.by_instance(InstanceId(instance_id))
        if ws is None:
            raise NotFound(f"no workspace instance {instance_id!r} on this node")
        return ws

    async def container_exists(self, container_id: str) -> bool:
        """Ask containerd (not the index) whether the container exists. Errors raise."""
        _check_id(container_id, "container id")
        try:
            await self._connected().get_container(container_id)
        except NotFound:
            return False
        return True

    async def task_info(self, container_id: str) -> TaskRecord:
        """The container's task as containerd reports it now (status, PID, exit status).

        Raises `NotFound` when the container has no task (not started, or deleted).
        """
        _check_id(container_id, "container id")
        return await self._connected().get_task(container_id)

    async def image_info(self, container_id: str) -> ImageInfo:
        """The image of a workspace container: name, digest, id, size, annotations."""
        ws = self.workspace(container_id)
        return await self._connected().image(ws.image)

    def _connected(self) -> Client:
        if self._client is None:
            raise ConnectError("not connected to containerd")
        return self._client

    def container_pid(self, container_id: str) -> int:
        ws = self.workspace(container_id)
        if ws.pid is None:
            raise NotResolved(f"container {container_id} has no task (yet)")
        return ws.pid

    def container_cgroup_path(self, container_id: str) -> str:
        ws = self.workspace(container_id)
        if ws.cgroup_path is None:
            raise NoCgroup(f"container {container_id} has no known cgroup path")
        return ws.cgroup_path

    def container_upperdir(self, container_id: str, *, unmapped: bool = False) -> str:
        ws = self.workspace(container_id)
        if ws.upperdir is None:
            raise NotResolved(f"container {container_id} has no known upperdir (yet)")
        return ws.upperdir if unmapped else self.settings.path_map.map(ws.upperdir)

    async def container_rootfs(self, container_id: str, *, unmapped: bool = False) -> str:
        """The container's rootfs mount point, from the index or else the mount table now."""
        ws = self.workspace(container_id)
        rootfs = ws.rootfs
        if rootfs is None:
            await trio.lowlevel.checkpoint()
            rootfs = self._resolver.rootfs(ws.container_id)
        if rootfs is None:
            raise NotResolved(f"container {container_id} has no rootfs mounted")
        return rootfs if unmapped else self.settings.path_map.map(rootfs)

    def changes(self) -> _ChangesContext:
        """Follow lifecycle changes: `with w.changes() as changes: async for c in changes:`.

        Registered when called, so nothing published after the call is missed. A follower
        that falls `change_buffer` changes behind gets a `Lagged` in place of the oldest
        ones (then `workspaces()` tells the current state); the watcher never waits for it.
        """
        return _ChangesContext(self._hub)

    def close(self) -> None:
        self._hub.close()


class _ChangesContext:
    def __init__(self, hub: ChangeHub) -> None:
        self._cm = hub.subscribe()

    def __enter__(self) -> ChangeStream:
        return self._cm.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(None, None, None)


def _check_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise UsageError(f"empty {what}")
    if len(value) > 1024:
        raise UsageError(f"{what} of {len(value)} characters is not an id")


@asynccontextmanager
async def open_watcher(
    address: str = DEFAULT_ADDRESS,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    settings: Settings | None = None,
) -> AsyncIterator[Watcher]:
    """A running `Watcher`, synced with containerd when the block starts.

    Raises `ConnectError` when containerd cannot be reached for the first sync; after that
    the watcher reconnects by itself for as long as the block runs.
    """
    if settings is None:
        settings = Settings(address=address, namespace=namespace)
    watcher = Watcher(settings)
    with single_errors():
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.serve)
            try:
                yield watcher
            finally:
                watcher.close()
                nursery.cancel_scope.cancel()
