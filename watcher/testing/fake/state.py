"""What the fake containerd holds, and how its users wait for it to change.

Rules:

* One lock (re-entrant) guards everything the fake holds: state, streams, faults and the call
  record. Tests call in from the trio thread while gRPC's worker threads serve, so every read
  and write takes it; readers get copies (`container()`, `task()`, the lists of calls and
  events), never the live collections.
* Every change wakes every waiter (`_changed`, called with the lock held): the threads in
  `wait_for` and the trio tasks in `wait_until`, which re-check their predicates.
* State is per containerd namespace, as containerd keeps it, and survives `stop()`/`start()`
  (containerd keeps its metadata and shims across a restart).
* The setters here store as given, with no event and no side effect: containerd's own steps,
  which publish, are in `containers`.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Self

import trio

from containerd_protos.services.containers.v1 import containers_pb2
from containerd_protos.types import mount_pb2
from containerd_protos.types.task import task_pb2 as task_types

from .messages import overlay_mount
from .wire import NAMESPACE, RecordedCall


@dataclass(slots=True)
class Namespace:
    """What containerd holds in one of its namespaces."""

    containers: dict[str, containers_pb2.Container] = field(default_factory=dict)
    tasks: dict[str, task_types.Process] = field(default_factory=dict)
    mounts: dict[tuple[str, str], list[mount_pb2.Mount]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _TrioWaiter:
    token: trio.lowlevel.TrioToken
    event: trio.Event


class State:
    """The held containers, tasks and snapshot mounts, the call record, the waiters."""

    #: prefix of the snapshot directories in mounts (nothing is created)
    snapshot_root: str = "/var/lib/containerd"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._namespaces: dict[str, Namespace] = {}
        self._calls: list[RecordedCall] = []
        self._trio_waiters: set[_TrioWaiter] = set()
        #: set while the server stops: delayed calls are released, new streams closed
        self._stopping = False
        self._pids = itertools.count(4000)
        self._snapshots = itertools.count(1)

    # --- observation ----------------------------------------------------------------------

    def calls(self) -> list[RecordedCall]:
        """Every RPC received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def _record(self, method: str, namespace: str | None) -> None:
        with self._lock:
            self._calls.append(RecordedCall(method, namespace))
            self._changed()

    async def wait_until(self, predicate: Callable[[Self], bool]) -> None:
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

    def wait_for(self, predicate: Callable[[Self], bool], timeout: float) -> bool:
        """The blocking twin of `wait_until` for threads: False if `timeout` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def _changed(self) -> None:
        """Wake every waiter (caller holds the lock)."""
        self._cond.notify_all()
        for waiter in self._trio_waiters:
            with suppress(trio.RunFinishedError):
                waiter.token.run_sync_soon(waiter.event.set)

    # --- what is held, as is ----------------------------------------------------------------

    def _ns(self, namespace: str) -> Namespace:
        return self._namespaces.setdefault(namespace, Namespace())

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
