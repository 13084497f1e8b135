"""Resolution: where a workspace task's files are, answered from what the node can tell.

The one room that answers the index's `NeedLocation` (see `watcher.needs`), in order of cost:

1. **the `/tasks/create` event itself** (`locate`, pure): its rootfs mounts name the overlay
   upper layer (`upperdir=` option) and its bundle dir holds the rootfs mount point
   (`<bundle>/rootfs`). On a snapshotter without an upper layer (native, devmapper, zfs,
   btrfs) the event tells all there is: no upperdir. No I/O: the hot path of a burst.
2. **the node's mount table** (`Resolver.answer`): one read resolves every task of a listing
   (the rootfs overlay's super options name its upperdir);
3. **`Snapshots.Mounts`**, only where the mount table cannot tell (no host /proc, another
   snapshotter), `RESOLVE_CONCURRENCY` calls in flight;

plus the start time of a task found by a listing (/proc/<pid>/stat) and a cross-check of the
spec's cgroup path against /proc/<pid>/cgroup (a warning, no more). It knows nothing of the
index: a need carries all it must know.

/proc reads are memory reads, cheap enough for the trio thread.

Rejected: asking Snapshots.Mounts on every /tasks/create (a round trip per pod in a burst,
when the event already carries the same mounts); parsing the whole mount table on every
/tasks/create to find the rootfs (the bundle path names it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace

import trio

from . import cgroups, mountinfo, procfs
from .client import Client
from .containerd_records import ContainerId, LayerMount
from .errors import ConnectError, ContainerdError, NotFound
from .inputs import Resolved, TaskCreated
from .needs import NeedLocation
from .published import Workspace
from .settings import RESOLVE_CONCURRENCY

log = logging.getLogger(__name__)


def upperdir_of(mount_list: Iterable[LayerMount]) -> str | None:
    """The overlay upper layer among a snapshot's mounts.

    Selected by the `upperdir=` option alone: the mount *type* is `overlay` while the
    snapshotter's *name* is `overlayfs`, and comparing the two (as Gitpod's watcher does)
    never matches.
    """
    for m in mount_list:
        found = mountinfo.upperdir_from_options(m.options)
        if found:
            return found
    return None


def locate(event: TaskCreated) -> TaskCreated:
    """The event with what it tells of the task's files filled in (`located`), when it
    carries its rootfs mounts; unchanged otherwise (the index then asks the node)."""
    if not event.rootfs_mounts or event.located:
        return event
    return replace(
        event,
        upperdir=upperdir_of(event.rootfs_mounts),
        rootfs=os.path.join(event.bundle, "rootfs") if event.bundle else None,
        located=True,
    )


class Resolver:
    """Answers `NeedLocation`s from the node's mount table, Snapshots.Mounts and /proc."""

    def __init__(self, namespace: str, proc_root: str = "/proc") -> None:
        self.namespace = namespace
        self.proc_root = proc_root
        self._mountinfo = mountinfo.mountinfo_path(proc_root)

    async def answer(
        self, client: Client, needs: Sequence[NeedLocation], ts: float
    ) -> list[Resolved]:
        """One `Resolved` per need (also when nothing was found).

        One read of the node's mount table answers every running task; only where it
        cannot do we ask Snapshots.Mounts. Raises the first `ConnectError`, once all
        lookups ended (the caller decides what a lost containerd means).
        """
        table = self._mount_table()
        found = {} if table is None else mountinfo.task_rootfs(table, namespace=self.namespace)
        upperdirs: dict[ContainerId, str | None] = {
            n.container_id: r.upperdir
            for n in needs
            if (r := found.get(n.container_id)) and r.upperdir
        }
        failures: list[Exception] = []
        pending = iter([n for n in needs if n.container_id not in upperdirs])

        async def lookups() -> None:
            for need in pending:  # one iterator shared by the workers
                try:
                    upperdirs[need.container_id] = await self._upperdir(client, need)
                except ConnectError as exc:
                    failures.append(exc)
                    return

        async with trio.open_nursery() as nursery:
            for _ in range(min(RESOLVE_CONCURRENCY, len(needs) - len(upperdirs))):
                nursery.start_soon(lookups)
        if failures:
            raise failures[0]
        return [
            Resolved(
                ts=ts,
                container_id=n.container_id,
                upperdir=upperdirs.get(n.container_id),
                rootfs=r.mount_point if (r := found.get(n.container_id)) else None,
                started_at=procfs.started_at(n.pid, self.proc_root) if n.want_started_at else None,
            )
            for n in needs
        ]

    async def _upperdir(self, client: Client, need: NeedLocation) -> str | None:
        cid, snapshotter, key = need.container_id, need.snapshotter, need.snapshot_key
        try:
            return upperdir_of(await client.snapshot_mounts(snapshotter, key))
        except NotFound:
            log.warning("container %s: snapshot %s/%s not found", cid, snapshotter, key)
        except ContainerdError as exc:
            log.warning("container %s: snapshot mounts failed: %s", cid, exc)
        return None

    def _mount_table(self, only: str | None = None) -> list[mountinfo.MountEntry] | None:
        """The node's mount table; with `only`, just the lines that contain that text."""
        try:
            with open(self._mountinfo, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as exc:
            log.warning("cannot read the mount table %s: %s", self._mountinfo, exc)
            return None
        if only is not None:
            text = "\n".join(line for line in text.split("\n") if only in line)
        return mountinfo.parse_mountinfo(text)

    def rootfs(self, cid: ContainerId) -> str | None:
        """The rootfs mount point of a running task (None when not mounted/visible)."""
        # a container id has no characters the mount table escapes, so its rootfs line
        # holds it verbatim: parsing only those lines spares a parse of the whole table
        table = self._mount_table(only=cid)
        if table is None:
            return None
        found = mountinfo.task_rootfs(table, namespace=self.namespace).get(cid)
        return found.mount_point if found else None

    def check_cgroup(self, ws: Workspace) -> None:
        """Warn when the kernel puts the task elsewhere than the spec's cgroup path says."""
        if ws.pid is None or ws.cgroup_path is None:
            return
        path = f"{self.proc_root}/{ws.pid}/cgroup"
        try:
            with open(path, encoding="utf-8") as f:
                actual = cgroups.proc_cgroup_path(f.read())
        except OSError:
            return  # the task may be gone already, or /proc is not the host's
        if actual is not None and not cgroups.cgroup_matches(ws.cgroup_path, actual):
            log.warning(
                "container %s: spec cgroup %s, but %s shows %s",
                ws.container_id,
                ws.cgroup_path,
                path,
                actual,
            )
