"""What the CLI prints: the JSON contract of `watch`, `wait`, `ls` and `inspect`, the `ls` table and
the demo's human-readable lines.

Pure functions from records to strings and JSON-ready dicts: no I/O, no clock (the caller
passes `now`), no trio. Host paths (`upperdir`, `rootfs`, bind mount sources) are rewritten
with the `PathMap` given. What may leave the process is `watcher.disclosure`'s rule, applied
here to every map printed: annotations only on the allow-list, no credential-like key ever.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import TypeAlias

from watcher.changes import Lagged
from watcher.disclosure import DEFAULT, Disclosure, without_credentials
from watcher.mounts import PathMap
from watcher.records import (
    Change,
    Disconnected,
    ImageInfo,
    Mount,
    Synced,
    TaskRecord,
    Workspace,
    WorkspaceChange,
)

__all__ = [
    "JSON",
    "JSONValue",
    "change_json",
    "dumps",
    "format_age",
    "inspect_json",
    "pretty_change",
    "table",
    "workspace_json",
]

JSON: TypeAlias = dict[str, "JSONValue"]
JSONValue: TypeAlias = str | int | float | bool | list["JSONValue"] | dict[str, "JSONValue"] | None

#: mount types whose source is a host path (CRI writes "bind"; an empty type with bind
#: options means the same to runc)
_BIND_TYPES = frozenset({"bind", "rbind", ""})
SHORT_ID = 12
"""Characters of a container id in the table, as `docker ps` and `crictl ps` show them."""


def _mount_json(mount: Mount, path_map: PathMap) -> JSON:
    source = mount.source
    if mount.type in _BIND_TYPES and source.startswith("/"):
        source = path_map.map(source)
    return {"destination": mount.destination, "source": source, "type": mount.type}


def _mapped(path: str | None, path_map: PathMap) -> str | None:
    return None if path is None else path_map.map(path)


def workspace_json(
    ws: Workspace, path_map: PathMap | None = None, disclosure: Disclosure = DEFAULT
) -> JSON:
    """The workspace object, its fields in the order of the README's contract.

    Annotations are those `disclosure` allows; labels lose credential-like keys.
    """
    pm = path_map or PathMap()
    return {
        "instance_id": ws.instance_id,
        "workspace_id": ws.workspace_id,
        "owner_id": ws.owner_id,
        "pod_name": ws.pod_name,
        "pod_namespace": ws.pod_namespace,
        "pod_uid": ws.pod_uid,
        "sandbox_id": ws.sandbox_id,
        "container_id": ws.container_id,
        "image": ws.image,
        "pod_labels": dict(without_credentials(ws.pod_labels)),
        "pid": ws.pid,
        "upperdir": _mapped(ws.upperdir, pm),
        "cgroup_path": ws.cgroup_path,
        "rootfs": _mapped(ws.rootfs, pm),
        "exit_status": ws.exit_status,
        "created_at": ws.created_at,
        # the richer record: CRI's metadata, the OCI spec, the task's times
        "container_name": ws.container_name,
        "attempt": ws.attempt,
        "state": ws.state.value,
        "image_ref": ws.image_ref,
        "log_path": ws.log_path,
        "mounts": [_mount_json(m, pm) for m in ws.mounts],
        "pod_annotations": dict(disclosure.annotations(ws.pod_annotations)),
        "container_annotations": dict(disclosure.annotations(ws.container_annotations)),
        "started_at": ws.started_at,
        "exited_at": ws.exited_at,
        "scheme": ws.scheme,
    }


def change_json(
    change: Change, path_map: PathMap | None = None, disclosure: Disclosure = DEFAULT
) -> JSON:
    """One `watch` line."""
    if isinstance(change, WorkspaceChange):
        return {
            "event": change.kind.value,
            "ts": change.ts,
            **workspace_json(change.workspace, path_map, disclosure),
        }
    if isinstance(change, Synced):
        return {"event": "synced", "ts": change.ts, "workspaces": change.workspaces}
    if isinstance(change, Disconnected):
        return {"event": "disconnected", "ts": change.ts, "error": change.error}
    raise TypeError(f"not a change: {change!r}")


def dumps(obj: JSONValue) -> str:
    """One line of JSON (ASCII only, so any consumer's decoder reads it)."""
    return json.dumps(obj, ensure_ascii=True, allow_nan=False)


# --- for people --------------------------------------------------------------------------


def format_age(seconds: float | None) -> str:
    """kubectl-style ages: 42s, 7m, 3h, 12d ("-" when unknown)."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


_HEADERS = ("INSTANCE", "POD", "CONTAINER", "PID", "STATE", "AGE")


def table(workspaces: Iterable[Workspace], now: float) -> str:
    """The `ls` table: a header and one aligned row per workspace, without a final newline."""
    rows = [_HEADERS]
    for ws in workspaces:
        rows.append(
            (
                ws.instance_id,
                f"{ws.pod_namespace}/{ws.pod_name}",
                ws.container_id[:SHORT_ID],
                "-" if ws.pid is None else str(ws.pid),
                ws.state.value,
                format_age(None if ws.created_at is None else now - ws.created_at),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def pretty_change(change: Change | Lagged, path_map: PathMap | None = None) -> str:
    """A `watch` line for people: time, event, instance, pod and what the event tells."""
    if isinstance(change, Lagged):
        return f"{_clock(change.ts)}  {'lagged':<12}  missed {change.missed} changes"
    if isinstance(change, Synced):
        return f"{_clock(change.ts)}  {'synced':<12}  {change.workspaces} workspaces"
    if isinstance(change, Disconnected):
        return f"{_clock(change.ts)}  {'disconnected':<12}  {change.error}"
    ws = change.workspace
    pm = path_map or PathMap()
    event = change.kind.value
    head = (
        f"{_clock(change.ts)}  {event:<12}  {ws.instance_id:<14}  "
        f"{ws.pod_namespace}/{ws.pod_name}  container {ws.container_id[:SHORT_ID]}"
    )
    if event == "created":
        return f"{head}  ({ws.scheme}: workspace {ws.workspace_id}, owner {ws.owner_id})"
    if event == "running":
        return f"{head}  pid {ws.pid}  upperdir {_mapped(ws.upperdir, pm)}"
    if event == "exited":
        return f"{head}  exit status {ws.exit_status}"
    return head


def inspect_json(
    ws: Workspace,
    task: TaskRecord | None,
    image: ImageInfo | None,
    path_map: PathMap | None = None,
    disclosure: Disclosure = DEFAULT,
) -> JSON:
    """`inspect`'s object: the workspace fields, then `task_info` and `image_info` (or null).

    The image's annotations and labels come from its manifest and config (public wherever the
    image is pulled from), less any credential-like key.
    """
    out = workspace_json(ws, path_map, disclosure)
    out["task_info"] = (
        None
        if task is None
        else {
            "status": task.status.value,
            "pid": task.pid,
            "exit_status": task.exit_status,
            "exited_at": task.exited_at,
        }
    )
    out["image_info"] = (
        None
        if image is None
        else {
            "name": image.name,
            "digest": image.digest,
            "id": image.id,
            "media_type": image.media_type,
            "size": image.size,
            "annotations": dict(without_credentials(image.annotations)),
            "labels": dict(without_credentials(image.labels)),
            "created_at": image.created_at,
        }
    )
    return out
