"""The facade: a live index of the workspaces on this node, to query, await and follow.

`Watcher` answers from the index that `watcher.loop.Loop` keeps in step with containerd;
`serve` runs that loop and hands the watcher to `task_status.started(...)` once synced, so
`open_watcher`, the CLI and the test rig use the one object it hands out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import trio

from ._nursery import single_errors
from .changes import ChangeStream
from .client import Client
from .containerd_records import ContainerId, ImageInfo, TaskRecord
from .errors import ConnectError, NoCgroup, NotFound, NotResolved, UnknownId, UsageError
from .loop import Loop
from .metrics import Metrics
from .published import InstanceId, Workspace
from .settings import ADDRESS, NAMESPACE, Settings, check_id

if TYPE_CHECKING:  # the plugin's modules load only when NRI is asked for
    from .nri.plugin import NriPlugin

__all__ = ["Settings", "Watcher", "open_watcher"]

T = TypeVar("T")


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
        self._loop = Loop(self.settings)
        self._index = self._loop.index
        self._generation = self._loop.generation
        #: the NRI plugin, once `serve` started it (`Settings.nri`)
        self.nri: NriPlugin | None = None
        #: this watcher's Prometheus metrics (`watcher.metrics.render(w.metrics)` for a scrape)
        self.metrics: Metrics = self._loop.metrics

    @property
    def corrections(self) -> int:
        """How many changes safety relists had to make: events the stream never delivered."""
        return self._loop.corrections.count

    async def serve(
        self, *, task_status: trio.TaskStatus[Watcher] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the watcher until cancelled; `started(self)` once the first sync is done.

        Raises `ConnectError`/`UsageError` when the first sync fails; after it, reconnects
        by itself for as long as it runs.
        """
        with single_errors():
            async with trio.open_nursery() as nursery:
                await nursery.start(self._loop.run)
                if self.settings.nri is not None:
                    from .nri.plugin import serve_nri_plugin  # loaded only when asked for

                    self.nri = await nursery.start(serve_nri_plugin, self.settings.nri)
                    nursery.start_soon(self._loop.follow_nri, self.nri)
                task_status.started(self)

    # --- waiting -------------------------------------------------------------------------

    async def wait_until(self, find: Callable[[], T | None]) -> T:
        """Wait until `find()` returns something other than None, and return that.

        `find` is called now and after every change of the index, on the trio thread, so it
        can read the watcher freely (`lambda: w.workspaces().get(iid)`); it must not block.
        """
        with self.metrics.waiting("until"):
            return await self._wait(find)

    async def _wait(self, find: Callable[[], T | None]) -> T:
        found: list[T] = []

        def check(_: int) -> bool:
            value = find()
            if value is not None:
                found.append(value)
            return value is not None

        await self._generation.wait_value(check)
        return found[-1]

    async def wait_for_container(self, instance_id: str) -> Workspace:
        """The instance's workspace once its task runs (see `Workspace.running`).

        Waits as long as the caller's cancel scope allows (use `trio.fail_after`); returns
        the record that satisfied the wait.
        """
        check_id(instance_id, "instance id")

        def running() -> Workspace | None:
            ws = self._index.by_instance(InstanceId(instance_id))
            return ws if ws is not None and ws.running else None

        with self.metrics.waiting("running"):
            return await self._wait(running)

    async def wait_for_container_stop(self, instance_id: str) -> None:
        """Return once no workspace container of the instance is left (at once if none is)."""
        check_id(instance_id, "instance id")
        iid = InstanceId(instance_id)
        with self.metrics.waiting("stop"):
            if self._index.by_instance(iid) is not None:
                await self._wait(lambda: True if self._index.by_instance(iid) is None else None)

    async def is_ready(self) -> bool:
        """containerd is serving and the last (re)sync is done."""
        await trio.lowlevel.checkpoint()
        return bool(self._loop.ready.value)

    async def wait_ready(self, ready: bool = True) -> None:
        """Wait until the watcher is synced with containerd (or, `ready=False`, has lost it)."""
        await self._loop.ready.wait_value(ready)

    def reconnect_now(self) -> None:
        """Cut the current back-off wait short: reconnect at once (e.g. on SIGHUP)."""
        self._loop.wake.set()

    # --- queries -------------------------------------------------------------------------

    def workspaces(self) -> Mapping[InstanceId, Workspace]:
        """A snapshot: each instance with its newest workspace container."""
        return dict(self._index.workspaces())

    def container(self, container_id: str) -> Workspace:
        """The workspace of one container (`instance()` looks up by instance id)."""
        ws = self._index.by_container(ContainerId(container_id))
        if ws is None:
            raise UnknownId(f"no workspace container {container_id!r} on this node")
        return ws

    def instance(self, instance_id: str) -> Workspace:
        """The instance's newest workspace container (the one `workspaces()` lists)."""
        ws = self._index.by_instance(InstanceId(instance_id))
        if ws is None:
            raise UnknownId(f"no workspace instance {instance_id!r} on this node")
        return ws

    async def container_exists(self, container_id: str) -> bool:
        """Ask containerd (not the index) whether the container exists. Errors raise."""
        check_id(container_id, "container id")
        try:
            await self._connected().get_container(container_id)
        except NotFound:
            return False
        return True

    async def task_info(self, container_id: str) -> TaskRecord:
        """The container's task as containerd reports it now (status, PID, exit status).

        Raises `NotFound` when the container has no task (not started, or deleted).
        """
        check_id(container_id, "container id")
        return await self._connected().get_task(container_id)

    async def image_info(self, container_id: str) -> ImageInfo:
        """The image of a workspace container: name, digest, id, size, annotations."""
        ws = self.container(container_id)
        return await self._connected().image(ws.image)

    def _connected(self) -> Client:
        if self._loop.client is None:
            raise ConnectError("not connected to containerd")
        return self._loop.client

    def container_pid(self, container_id: str) -> int:
        ws = self.container(container_id)
        if ws.pid is None:
            raise NotResolved(f"container {container_id} has no task (yet)")
        return ws.pid

    def container_cgroup_path(self, container_id: str) -> str:
        ws = self.container(container_id)
        if ws.cgroup_path is None:
            raise NoCgroup(f"container {container_id} has no known cgroup path")
        return ws.cgroup_path

    def container_upperdir(self, container_id: str, *, unmapped: bool = False) -> str:
        ws = self.container(container_id)
        if ws.upperdir is None:
            raise NotResolved(f"container {container_id} has no known upperdir (yet)")
        return ws.upperdir if unmapped else self.settings.path_map.map(ws.upperdir)

    async def container_rootfs(self, container_id: str, *, unmapped: bool = False) -> str:
        """The container's rootfs mount point, from the index or else the mount table now."""
        ws = self.container(container_id)
        rootfs = ws.rootfs
        if rootfs is None:
            await trio.lowlevel.checkpoint()
            rootfs = self._loop.resolver.rootfs(ws.container_id)
        if rootfs is None:
            raise NotResolved(f"container {container_id} has no rootfs mounted")
        return rootfs if unmapped else self.settings.path_map.map(rootfs)

    def changes(self) -> AbstractContextManager[ChangeStream]:
        """Follow lifecycle changes: `with w.changes() as changes: async for c in changes:`.

        Registered when the `with` block starts, so nothing published after that is missed.
        A follower that falls `change_buffer` changes behind gets a `Lagged` in place of the
        oldest ones (then `workspaces()` tells the current state); the watcher never waits
        for it.
        """
        return self._loop.hub.subscribe()

    def close(self) -> None:
        self._loop.hub.close()


@asynccontextmanager
async def open_watcher(
    address: str | None = None,
    namespace: str | None = None,
    *,
    settings: Settings | None = None,
) -> AsyncIterator[Watcher]:
    """A running `Watcher`, synced with containerd when the block starts.

    Give the `address` (and `namespace`), or whole `settings` — not both: an address beside
    settings that name their own would be silently one or the other.

    Raises `ConnectError` when containerd cannot be reached for the first sync (`UsageError`
    for bad settings); after that the watcher reconnects by itself for as long as it runs.
    """
    if settings is None:
        settings = Settings(
            address=ADDRESS if address is None else address,
            namespace=NAMESPACE if namespace is None else namespace,
        )
    elif address is not None or namespace is not None:
        raise UsageError("give open_watcher an address and namespace, or settings, not both")
    with single_errors():
        async with trio.open_nursery() as nursery:
            watcher: Watcher = await nursery.start(Watcher(settings).serve)
            try:
                yield watcher
            finally:
                watcher.close()
                nursery.cancel_scope.cancel()
