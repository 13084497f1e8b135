"""Publishing: the visible workspace snapshots, the lifecycle steps reported, the newest
container of each instance, and the immutable snapshots handed to readers.

Synopsis::

    published = Published()
    published.publish(cid, old, new, ts, out)   # new: Workspace, or None once not visible
    published.republish(before, visible, ts, out)   # a listing's visible set, on a new board
    published.visible[cid]        # a container's visible Workspace
    published.newest[iid]         # an instance's newest visible Workspace
    published.containers()        # {container id: Workspace}  (an immutable snapshot)
    published.workspaces()        # {instance id: newest Workspace}

Rules of this module (the index's rules about changes live here):

* **Changes are the diff of a container's visible snapshot**, appended to `out` in causal
  order: `created` when it becomes visible, `running` once its snapshot is running (at most
  once, and never after `exited`: a container reported exited never comes back to running),
  `exited` once its task is gone (`running` is skipped if it never ran for us), `removed`
  when it stops being visible. Each step is reported at most once while the container stays
  visible. `starting` (told by NRI, `announce_start`) comes between `created` and `running`,
  at most once and never after either of those.
* **Published objects are never mutated.** Every change carries an immutable `Workspace`
  (the new one; for `removed` the last one published) and the input's `ts`; an unchanged
  snapshot keeps its published object. `containers()`/`workspaces()` are copied once after a
  change, then shared.
* **The newest container of an instance**: highest attempt, then latest creation, then id
  (`newness`); an instance is gone once none of its containers is visible.
* **A listing republishes on a new board**: what it no longer shows is `removed` first, then
  the rest in `newness` order; the steps already reported carry over, so a listing reports
  only what changed.

What is visible is decided elsewhere (`watcher.podjoin`); this module only publishes it.
No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from watcher.containerd_records import ContainerId
from watcher.published import ChangeKind, InstanceId, Workspace, WorkspaceChange, WorkspaceState

__all__ = ["Published", "newness"]

# which lifecycle steps a container has had reported (bit flags: one small int a container)
_REPORTED_CREATED: Final = 1
_REPORTED_RUNNING: Final = 2
_REPORTED_EXITED: Final = 4
_REPORTED_STARTING: Final = 8


def newness(ws: Workspace) -> tuple[int, float, str]:
    """Order of an instance's containers: highest attempt, then latest creation, then id."""
    return (
        -1 if ws.attempt is None else ws.attempt,
        float("-inf") if ws.created_at is None else ws.created_at,
        ws.container_id,
    )


class Published:
    """What the index has published: one board, replaced whole by a listing.

    `visible`, `reported`, `instances` and `newest` are public to the index that owns the
    board (and its tests): read them, change them only through `publish`/`republish`.
    """

    def __init__(self) -> None:
        self.visible: dict[ContainerId, Workspace] = {}
        self.reported: dict[ContainerId, int] = {}  # the _REPORTED_* flags of a container
        self.instances: dict[InstanceId, dict[ContainerId, Workspace]] = {}
        self.newest: dict[InstanceId, Workspace] = {}
        self._containers: Mapping[ContainerId, Workspace] | None = None
        self._workspaces: Mapping[InstanceId, Workspace] | None = None

    def containers(self) -> Mapping[ContainerId, Workspace]:
        """Every visible workspace container: an immutable snapshot."""
        if self._containers is None:
            self._containers = MappingProxyType(dict(self.visible))
        return self._containers

    def workspaces(self) -> Mapping[InstanceId, Workspace]:
        """Every instance with a visible container, mapped to its newest: an immutable
        snapshot."""
        if self._workspaces is None:
            self._workspaces = MappingProxyType(dict(self.newest))
        return self._workspaces

    def publish(
        self,
        cid: ContainerId,
        old: Workspace | None,
        new: Workspace | None,
        ts: float,
        out: list[WorkspaceChange],
    ) -> None:
        """Make `new` the container's visible snapshot (None: not visible); report the
        lifecycle steps this reaches into `out`."""
        self._containers = self._workspaces = None
        if new is None:
            if old is None:
                return
            self.visible.pop(cid, None)
            self.reported.pop(cid, None)
            self._instance_drop(old)
            out.append(WorkspaceChange(kind=ChangeKind.REMOVED, ts=ts, workspace=old))
            return
        self.visible[cid] = new
        if old is not None and old.instance_id != new.instance_id:
            self._instance_drop(old)
        self._instance_put(new)
        flags = self.reported.get(cid, 0)
        if not flags & _REPORTED_CREATED:
            flags |= _REPORTED_CREATED
            out.append(WorkspaceChange(kind=ChangeKind.CREATED, ts=ts, workspace=new))
        state = new.state
        if state is WorkspaceState.RUNNING and not flags & (_REPORTED_RUNNING | _REPORTED_EXITED):
            flags |= _REPORTED_RUNNING
            out.append(WorkspaceChange(kind=ChangeKind.RUNNING, ts=ts, workspace=new))
        if state is WorkspaceState.EXITED and not flags & _REPORTED_EXITED:
            flags |= _REPORTED_EXITED
            out.append(WorkspaceChange(kind=ChangeKind.EXITED, ts=ts, workspace=new))
        self.reported[cid] = flags

    def announce_start(self, cid: ContainerId, ts: float, out: list[WorkspaceChange]) -> None:
        """The runtime is about to start a visible container's process: `starting`, once,
        unless it was reported running or exited already."""
        ws = self.visible.get(cid)
        flags = self.reported.get(cid, 0)
        if ws is None or flags & (_REPORTED_STARTING | _REPORTED_RUNNING | _REPORTED_EXITED):
            return
        self.reported[cid] = flags | _REPORTED_STARTING
        out.append(WorkspaceChange(kind=ChangeKind.STARTING, ts=ts, workspace=ws))

    def republish(
        self,
        before: Published,
        visible: Mapping[ContainerId, Workspace],
        ts: float,
        out: list[WorkspaceChange],
    ) -> list[Workspace]:
        """Publish a listing's `visible` snapshots on this (new, empty) board; report the
        difference from the board `before` it into `out`. Returns the snapshots published,
        in the order published."""
        gone = [ws for cid, ws in before.visible.items() if cid not in visible]
        for ws in sorted(gone, key=newness):
            out.append(WorkspaceChange(kind=ChangeKind.REMOVED, ts=ts, workspace=ws))
        published = sorted(visible.values(), key=newness)
        for i, ws in enumerate(published):
            cid = ws.container_id
            flags = before.reported.get(cid)
            if flags is not None:
                self.reported[cid] = flags
            old = before.visible.get(cid)
            if old is not None and old == ws:
                published[i] = ws = old  # unchanged: keep the published object
            self.publish(cid, old, ws, ts, out)
        return published

    def _instance_put(self, ws: Workspace) -> None:
        iid = ws.instance_id
        entries = self.instances.get(iid)
        if entries is None:
            self.instances[iid] = {ws.container_id: ws}
            self.newest[iid] = ws
            return
        entries[ws.container_id] = ws
        self.newest[iid] = max(entries.values(), key=newness)

    def _instance_drop(self, ws: Workspace) -> None:
        iid = ws.instance_id
        entries = self.instances.get(iid)
        if entries is None or entries.pop(ws.container_id, None) is None:
            return
        if entries:
            self.newest[iid] = max(entries.values(), key=newness)
        else:
            del self.instances[iid]
            del self.newest[iid]
