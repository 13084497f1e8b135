"""The order of `watch` lines: what to print for each change the library publishes.

Pure and synchronous (a step function; the trio loop around it stays thin). The library
publishes the changes of the initial sync before the first `Synced`; a newly listed workspace
comes as `created` and then `running` (or `exited` when its task is gone). `watch` prints
them only with `--initial`, one line per container in its state at the end of the sync:
`running`, or `exited` where the task is gone (`created` for one whose task has not started
yet). Everything after the first `Synced` is printed as published.
"""

from __future__ import annotations

from watcher.containerd_records import ContainerId
from watcher.published import Change, Synced, WorkspaceChange

__all__ = ["Follower"]


class Follower:
    """Synopsis: ``for change in follower.feed(change): print(encode(change))``."""

    def __init__(self, *, initial: bool) -> None:
        self._initial = initial
        self._synced = False
        #: the last initial change of each container, in order of first appearance
        self._pending: dict[ContainerId, WorkspaceChange] = {}

    @property
    def synced(self) -> bool:
        """The initial sync is over."""
        return self._synced

    def feed(self, change: Change) -> list[Change]:
        if self._synced:
            return [change]
        if isinstance(change, WorkspaceChange):
            if self._initial:
                self._pending[change.workspace.container_id] = change
            return []
        if isinstance(change, Synced):
            self._synced = True
            # the last change of a container is its state at the end of the sync
            lines: list[Change] = list(self._pending.values())
            self._pending.clear()
            return [*lines, change]
        # a Disconnected before the first sync cannot happen (the first failure raises);
        # print it as it comes should a future library publish one
        return [change]
