"""What the event stream does not tell, looked up on the node: the shell's I/O helpers.

* upperdir and rootfs of running tasks: one read of the node's mount table gives both (the
  rootfs overlay's super options name its upperdir); Snapshots.Mounts only where it cannot;
* the start time of a task found by a listing: /proc/<pid>/stat;
* a cross-check of the spec's cgroup path against /proc/<pid>/cgroup (a warning, no more).

/proc reads are memory reads, cheap enough for the trio thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from . import cgroups, decode, mounts, procfs
from .client import Client
from .errors import ConnectError, ContainerdError, NotFound
from .index import Index
from .records import ContainerId, Resolved, Workspace

log = logging.getLogger("watcher.watcher")

#: Snapshots.Mounts calls in flight while resolving the workspaces of a (re)sync
RESOLVE_CONCURRENCY = 32


class Resolver:
    def __init__(self, index: Index, namespace: str, proc_root: str = "/proc") -> None:
        self.index = index
        self.namespace = namespace
        self.proc_root = proc_root
        self._mountinfo = mounts.mountinfo_path(proc_root)

    async def resolve(
        self, client: Client, cids: Sequence[ContainerId], ts: float
    ) -> list[Resolved]:
        """Look up what the event stream did not tell: upperdirs and rootfs mount points.

        One read of the node's mount table gives both for every running task (the rootfs
        overlay's super options name its upperdir). Only where it cannot (no host /proc,
        another snapshotter) do we ask Snapshots.Mounts, `RESOLVE_CONCURRENCY` calls in
        flight, so a start-up with thousands of workspaces does not make thousands of round
        trips one after the other. Raises the first `ConnectError`, once all lookups ended.
        """
        table = self._mount_table()
        found = {} if table is None else mounts.task_rootfs(table, namespace=self.namespace)
        upperdirs: dict[ContainerId, str | None] = {
            cid: r.upperdir for cid in cids if (r := found.get(cid)) and r.upperdir
        }
        failures: list[Exception] = []
        pending = iter([cid for cid in cids if cid not in upperdirs])

        async def lookups() -> None:
            for cid in pending:  # one iterator shared by the workers
                try:
                    upperdirs[cid] = await self._upperdir(client, cid)
                except ConnectError as exc:
                    failures.append(exc)
                    return

        async with trio.open_nursery() as nursery:
            for _ in range(min(RESOLVE_CONCURRENCY, len(cids) - len(upperdirs))):
                nursery.start_soon(lookups)
        if failures:
            raise failures[0]
        return [
            Resolved(
                ts=ts,
                container_id=cid,
                upperdir=upperdirs.get(cid),
                rootfs=r.mount_point if (r := found.get(cid)) else None,
                started_at=self._started_at(cid),
            )
            for cid in cids
        ]

    def _started_at(self, cid: ContainerId) -> float | None:
        ws = self.index.by_container(cid)
        if ws is None or ws.pid is None or ws.started_at is not None:
            return None
        return procfs.started_at(ws.pid, self.proc_root)

    async def _upperdir(self, client: Client, cid: ContainerId) -> str | None:
        snapshotter, key = _snapshot_of(self.index, cid)
        upperdir: str | None = None
        try:
            upperdir = decode.upperdir(await client.snapshot_mounts(snapshotter, key))
        except NotFound:
            log.warning("container %s: snapshot %s/%s not found", cid, snapshotter, key)
        except ContainerdError as exc:
            log.warning("container %s: snapshot mounts failed: %s", cid, exc)
        if upperdir is None:
            log.warning("container %s: no upperdir in snapshot %s/%s", cid, snapshotter, key)
        return upperdir

    def _mount_table(self, only: str | None = None) -> list[mounts.MountInfo] | None:
        """The node's mount table; with `only`, just the lines that contain that text."""
        # /proc reads are memory reads: cheap enough not to need a worker thread
        try:
            with open(self._mountinfo, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as exc:
            log.warning("cannot read the mount table %s: %s", self._mountinfo, exc)
            return None
        if only is not None:
            text = "\n".join(line for line in text.split("\n") if only in line)
        return mounts.parse_mountinfo(text)

    def rootfs(self, cid: ContainerId) -> str | None:
        """The rootfs mount point of a running task (None when not mounted/visible)."""
        # a container id has no characters the mount table escapes, so its rootfs line
        # holds it verbatim: parsing only those lines spares a parse of the whole table
        # (hundreds of lines on a busy node) on every /tasks/create
        table = self._mount_table(only=cid)
        if table is None:
            return None
        found = mounts.task_rootfs(table, namespace=self.namespace).get(cid)
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


def _snapshot_of(index: Index, cid: ContainerId) -> tuple[str, str]:
    record = index.container_record(cid)
    if record is not None and record.snapshotter:
        return record.snapshotter, record.snapshot_key or cid
    return "overlayfs", cid
