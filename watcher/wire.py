"""The JSON contract of workspaces and changes, both ways: what the CLI prints and the
service's API answers (records → JSON), and what the API's client reads back (JSON → records).

One home for the field names, so `ws-watcher ls --json`, `GET /v1/workspaces` and the Python
client cannot drift apart. Host paths (`upperdir`, `rootfs`, bind mount sources) are
rewritten with the `PathMap` given. What may leave the process is `watcher.disclosure`'s
rule, applied here to every map encoded: annotations only on the allow-list, no
credential-like key ever.

Maps of names — labels, annotations — are written in sorted key order, so the same state is
the same bytes in every run: their order in a record is whatever containerd's protobuf maps
(or NRI's) gave, which varies from run to run. Sorted here, where they leave, rather than in
`decode`: one place covers every source of records, and in-process code, which compares maps
as maps, pays nothing. The objects' own fields keep the contract's order.

Decoding is the inverse on what encoding wrote: the records it makes hold only what was
sent (annotations the sender's rule let through, paths as the sender mapped them).
Something that is not what the contract says raises `WireError`: the other end is not the
ws-watcher it claims to be, or another version of it.

Pure: no I/O, no clock, no trio.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeAlias

from .containerd_records import (
    ContainerId,
    ImageInfo,
    SandboxId,
    SpecMount,
    TaskRecord,
    TaskStatus,
    frozen_map,
)
from .disclosure import DEFAULT, Disclosure, without_credentials
from .errors import RemoteError
from .pathmap import PathMap
from .published import (
    Change,
    ChangeKind,
    Disconnected,
    InstanceId,
    Synced,
    Workspace,
    WorkspaceChange,
    WorkspaceState,
)

__all__ = [
    "JSON",
    "WORKSPACE_FIELDS",
    "JSONValue",
    "WireError",
    "change_from_json",
    "change_json",
    "dumps",
    "image_from_json",
    "inspect_json",
    "mapped",
    "task_from_json",
    "workspace_from_json",
    "workspace_json",
]

JSON: TypeAlias = dict[str, "JSONValue"]
JSONValue: TypeAlias = str | int | float | bool | list["JSONValue"] | dict[str, "JSONValue"] | None

#: mount types whose source is a host path (CRI writes "bind"; an empty type with bind
#: options means the same to runc)
_BIND_TYPES = frozenset({"bind", "rbind", ""})


class WireError(RemoteError, ValueError):
    """What the other end sent is not the JSON contract (not ws-watcher, or another version)."""


# --- records → JSON ----------------------------------------------------------------------


def _mount_json(mount: SpecMount, path_map: PathMap) -> JSON:
    source = mount.source
    if mount.type in _BIND_TYPES and source.startswith("/"):
        source = path_map.map(source)
    return {"destination": mount.destination, "source": source, "type": mount.type}


def mapped(path: str | None, path_map: PathMap) -> str | None:
    """`path` as the reader sees it (`--path-map`), None as None."""
    return None if path is None else path_map.map(path)


def _sorted(values: Mapping[str, str]) -> JSON:
    """A map of names as JSON: in sorted key order (see the module's doc)."""
    return dict(sorted(values.items()))


def workspace_json(
    ws: Workspace, path_map: PathMap | None = None, disclosure: Disclosure = DEFAULT
) -> JSON:
    """The workspace object, its fields in the order of the README's contract.

    Annotations are those `disclosure` allows; labels lose credential-like keys. Both in
    sorted key order.
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
        "pod_labels": _sorted(without_credentials(ws.pod_labels)),
        "pid": ws.pid,
        "upperdir": mapped(ws.upperdir, pm),
        "cgroup_path": ws.cgroup_path,
        "rootfs": mapped(ws.rootfs, pm),
        "exit_status": ws.exit_status,
        "created_at": ws.created_at,
        # the richer record: CRI's metadata, the OCI spec, the task's times
        "container_name": ws.container_name,
        "attempt": ws.attempt,
        "state": ws.state.value,
        "image_ref": ws.image_ref,
        "log_path": ws.log_path,
        "mounts": [_mount_json(m, pm) for m in ws.mounts],
        "pod_annotations": _sorted(disclosure.annotations(ws.pod_annotations)),
        "container_annotations": _sorted(disclosure.annotations(ws.container_annotations)),
        "started_at": ws.started_at,
        "exited_at": ws.exited_at,
        "scheme": ws.scheme,
    }


#: the workspace object's keys, in order
_PROBE = Workspace(
    instance_id=InstanceId("i"), workspace_id=None, owner_id=None, pod_name="p",
    pod_namespace="n", pod_uid="u", sandbox_id=SandboxId("s"), container_id=ContainerId("c"),
    image="", pod_labels={}, created_at=None,
)  # fmt: skip
WORKSPACE_FIELDS: tuple[str, ...] = tuple(workspace_json(_PROBE))


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


def inspect_json(
    ws: Workspace,
    task: TaskRecord | None,
    image: ImageInfo | None,
    path_map: PathMap | None = None,
    disclosure: Disclosure = DEFAULT,
) -> JSON:
    """`inspect`'s object: the workspace fields, then `task_info` and `image_info` (or null).

    The image's annotations and labels come from its manifest and config (public wherever the
    image is pulled from), less any credential-like key; in sorted key order.
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
            "annotations": _sorted(without_credentials(image.annotations)),
            "labels": _sorted(without_credentials(image.labels)),
            "created_at": image.created_at,
        }
    )
    return out


def dumps(obj: JSONValue) -> str:
    """One line of JSON (ASCII only, so any consumer's decoder reads it)."""
    return json.dumps(obj, ensure_ascii=True, allow_nan=False)


# --- JSON → records ----------------------------------------------------------------------
# Each reader takes the decoded object (`json.loads`) and checks every field it uses: the
# bytes come from another process, and a wrong type must be a `WireError` naming the field,
# not an AttributeError three calls later.


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise WireError(f"{what}: not a JSON object")
    return value


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise WireError(f"{key!r}: not a string")
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise WireError(f"{key!r}: not a string or null")
    return value


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise WireError(f"{key!r}: not an integer or null")
    return value


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = _opt_int(obj, key)
    if value is None:
        raise WireError(f"{key!r}: not an integer")
    return value


def _opt_float(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise WireError(f"{key!r}: not a number or null")
    return float(value)


def _float(obj: Mapping[str, Any], key: str) -> float:
    value = _opt_float(obj, key)
    if value is None:
        raise WireError(f"{key!r}: not a number")
    return value


def _strings(obj: Mapping[str, Any], key: str) -> Mapping[str, str]:
    value = _obj(obj.get(key, {}), key)
    if not all(isinstance(v, str) for v in value.values()):
        raise WireError(f"{key!r}: not a map of strings")
    return frozen_map(value)


def _enum(kind: type[Any], obj: Mapping[str, Any], key: str) -> Any:
    try:
        return kind(_str(obj, key))
    except ValueError:
        raise WireError(f"{key!r}: {obj.get(key)!r} is not a {kind.__name__}") from None


def workspace_from_json(value: object) -> Workspace:
    """A `Workspace` from its JSON object (also a `watch` line's or `inspect`'s: extra keys
    are ignored)."""
    obj = _obj(value, "workspace")
    mounts = obj.get("mounts", [])
    if not isinstance(mounts, list):
        raise WireError("'mounts': not a list")
    return Workspace(
        instance_id=InstanceId(_str(obj, "instance_id")),
        workspace_id=_opt_str(obj, "workspace_id"),
        owner_id=_opt_str(obj, "owner_id"),
        pod_name=_str(obj, "pod_name"),
        pod_namespace=_str(obj, "pod_namespace"),
        pod_uid=_str(obj, "pod_uid"),
        sandbox_id=SandboxId(_str(obj, "sandbox_id")),
        container_id=ContainerId(_str(obj, "container_id")),
        image=_str(obj, "image"),
        pod_labels=_strings(obj, "pod_labels"),
        created_at=_opt_float(obj, "created_at"),
        state=_enum(WorkspaceState, obj, "state"),
        pid=_opt_int(obj, "pid"),
        upperdir=_opt_str(obj, "upperdir"),
        cgroup_path=_opt_str(obj, "cgroup_path"),
        rootfs=_opt_str(obj, "rootfs"),
        exit_status=_opt_int(obj, "exit_status"),
        container_name=_opt_str(obj, "container_name"),
        attempt=_opt_int(obj, "attempt"),
        image_ref=_opt_str(obj, "image_ref"),
        log_path=_opt_str(obj, "log_path"),
        mounts=tuple(
            SpecMount(
                destination=_str(m, "destination"), source=_str(m, "source"), type=_str(m, "type")
            )
            for m in (_obj(item, "mount") for item in mounts)
        ),
        pod_annotations=_strings(obj, "pod_annotations"),
        container_annotations=_strings(obj, "container_annotations"),
        started_at=_opt_float(obj, "started_at"),
        exited_at=_opt_float(obj, "exited_at"),
        scheme=_opt_str(obj, "scheme"),
    )


def change_from_json(value: object, *, initial: bool = False) -> Change:
    """A change from its `watch` line. A `synced` line does not say whether it ended the
    first sync: `initial` does."""
    obj = _obj(value, "change")
    event = _str(obj, "event")
    ts = _float(obj, "ts")
    if event == "synced":
        return Synced(ts=ts, workspaces=_int(obj, "workspaces"), initial=initial)
    if event == "disconnected":
        return Disconnected(ts=ts, error=_str(obj, "error"))
    try:
        kind = ChangeKind(event)
    except ValueError:
        raise WireError(f"'event': {event!r} is not a change") from None
    return WorkspaceChange(kind=kind, ts=ts, workspace=workspace_from_json(obj))


def task_from_json(value: object, container_id: str) -> TaskRecord | None:
    """`inspect`'s `task_info` (null: None) as the `TaskRecord` of `container_id`."""
    if value is None:
        return None
    obj = _obj(value, "task_info")
    return TaskRecord(
        container_id=ContainerId(container_id),
        pid=_int(obj, "pid"),
        status=_enum(TaskStatus, obj, "status"),
        exit_status=_opt_int(obj, "exit_status"),
        exited_at=_opt_float(obj, "exited_at"),
    )


def image_from_json(value: object) -> ImageInfo | None:
    """`inspect`'s `image_info` (null: None)."""
    if value is None:
        return None
    obj = _obj(value, "image_info")
    return ImageInfo(
        name=_str(obj, "name"),
        digest=_str(obj, "digest"),
        media_type=_str(obj, "media_type"),
        id=_opt_str(obj, "id"),
        size=_opt_int(obj, "size"),
        annotations=_strings(obj, "annotations"),
        labels=_strings(obj, "labels"),
        created_at=_opt_float(obj, "created_at"),
    )
