"""Protobuf messages as containerd sends them, built from plain values (pure functions).

Rules:

* Pure: no state, no I/O; each call returns a new message.
* Shapes are containerd's, including its quirks: events are packed under their *bare* type
  URL (`containerd.events.TaskCreate`, no `type.googleapis.com/` prefix), the OCI spec and the
  CRI metadata extensions are JSON inside an `Any`, overlay mounts name the upper layer in an
  `upperdir=` option.
* Malformed on purpose where a test asks for it: raw bytes or a ready `Any` go out as given.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from containerd_protos.services.containers.v1 import containers_pb2
from containerd_protos.types import mount_pb2

from .wire import (
    CRI_CONTAINER_EXTENSION,
    CRI_CONTAINER_EXTENSION_URL,
    CRI_SANDBOX_EXTENSION,
    CRI_SANDBOX_EXTENSION_URL,
    RUNTIME,
    SNAPSHOTTER,
    SPEC_TYPE_URL,
)

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
