"""protobuf → records: where containerd's messages become the records the core reads (the core
itself never sees a message).

Decoding is tolerant by design: a container whose OCI spec or CRI extension is missing or
malformed still yields a record (the unknown parts are None) and one warning naming the
container, because dropping a workspace over a cosmetic field would be a lie of omission.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from containerd_protos.events import (
    container_pb2,
    content_pb2,
    image_pb2,
    namespace_pb2,
    snapshot_pb2,
    task_pb2,
)
from containerd_protos.services.containers.v1 import containers_pb2
from containerd_protos.services.images.v1 import images_pb2
from containerd_protos.types import event_pb2, mount_pb2
from containerd_protos.types.task import task_pb2 as task_types_pb2

from . import cgroups
from .containerd_records import (
    EMPTY_MAP,
    ContainerId,
    ContainerRecord,
    CriContainerMeta,
    CriSandboxMeta,
    ImageInfo,
    LayerMount,
    SandboxId,
    SpecMount,
    TaskRecord,
    TaskStatus,
    frozen_map,
)
from .cri import ContainerKind, kind_of
from .inputs import (
    ContainerChanged,
    ContainerDeleted,
    Envelope,
    Event,
    TaskCreated,
    TaskDeleted,
    TaskExited,
    TaskStarted,
)
from .settings import SHARED_STRINGS

log = logging.getLogger(__name__)

SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
CRI_CONTAINER_EXTENSION = "io.cri-containerd.container.metadata"
CRI_SANDBOX_EXTENSION = "io.cri-containerd.sandbox.metadata"

# containerd publishes events as Anys whose type URL is the bare full name of the message
# ("containerd.events.TaskCreate", no "type.googleapis.com/" prefix), so Any.Unpack would
# silently refuse them: we look the class up by that name instead.
_EVENT_CLASSES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for module in (task_pb2, container_pb2)
    for cls in vars(module).values()
    if isinstance(cls, type) and issubclass(cls, Message)
}

#: every event type of containerd's API (as vendored): those without a class above are
#: ignored quietly; a type outside this set is news (a newer containerd, a plugin)
KNOWN_EVENT_TYPES: frozenset[str] = frozenset(
    cls.DESCRIPTOR.full_name
    for module in (task_pb2, container_pb2, content_pb2, image_pb2, namespace_pb2, snapshot_pb2)
    for cls in vars(module).values()
    if isinstance(cls, type) and issubclass(cls, Message)
)

_TASK_STATUS = {
    task_types_pb2.Status.UNKNOWN: TaskStatus.UNKNOWN,
    task_types_pb2.Status.CREATED: TaskStatus.CREATED,
    task_types_pb2.Status.RUNNING: TaskStatus.RUNNING,
    task_types_pb2.Status.STOPPED: TaskStatus.STOPPED,
    task_types_pb2.Status.PAUSED: TaskStatus.PAUSED,
    task_types_pb2.Status.PAUSING: TaskStatus.PAUSING,
}


def timestamp(ts: Timestamp, *, present: bool = True) -> float | None:
    """A protobuf Timestamp as epoch seconds; None for an unset one.

    Unset is either absent, zero, or Go's zero `time.Time` (year 1, a large negative
    number of seconds), which containerd sends for a task that has not exited.
    """
    if not present or ts.seconds <= 0:
        return None
    return ts.seconds + ts.nanos / 1e9


def snapshot_mount(pb: mount_pb2.Mount) -> LayerMount:
    return LayerMount(type=pb.type, source=pb.source, target=pb.target, options=tuple(pb.options))


def snapshot_mounts(pbs: Iterable[mount_pb2.Mount]) -> tuple[LayerMount, ...]:
    return tuple(snapshot_mount(pb) for pb in pbs)


def task(pb: task_types_pb2.Process) -> TaskRecord:
    """A Tasks.List/Get process. The container id is in `id` for List (`container_id` is
    empty there), in `container_id` for Get: take whichever is set."""
    status = _TASK_STATUS.get(pb.status, TaskStatus.UNKNOWN)
    stopped = status is TaskStatus.STOPPED
    return TaskRecord(
        container_id=ContainerId(pb.container_id or pb.id),
        pid=pb.pid,
        status=status,
        exit_status=pb.exit_status if stopped else None,
        exited_at=timestamp(pb.exited_at, present=pb.HasField("exited_at")),
    )


_shared: dict[str, str] = {}


def _share(text: str) -> str:
    """One copy of `text` for every record that holds it.

    Not `sys.intern`: from CPython 3.12 interned strings are immortal, so every distinct
    label value ever decoded (pod uids, instance ids) would stay in memory for good. This
    table is ours, bounded, and its strings die with the records that hold them.
    """
    found = _shared.get(text)
    if found is not None:
        return found
    if len(_shared) >= SHARED_STRINGS:
        _shared.clear()
    _shared[text] = text
    return text


def _interned(labels: Mapping[str, str]) -> Mapping[str, str]:
    """A read-only copy of `labels` with shared strings: the same keys and most of the same
    values (`app=gitpod`, `component=workspace`, ...) repeat on every workspace of a node, and
    one copy each instead of thousands is most of what a tracked workspace costs in memory."""
    return frozen_map({_share(k): _share(v) for k, v in labels.items()})


def container(pb: containers_pb2.Container) -> ContainerRecord:
    """The record of a container. A CRI sandbox (the pause container) matters for its
    labels and pod metadata only, so its OCI spec, the largest part, is not decoded.

    Never raises for what a container holds: one container that cannot be decoded (a spec
    nested thousands of levels deep, an extension of the wrong shape) must not stop the
    watcher, which decodes every container of the node. It is kept with its id and labels
    only, and one warning names it.
    """
    try:
        return _container(pb)
    except Exception as exc:  # hostile input stays with its container
        cid = ContainerId(pb.id)
        log.warning("container %s: cannot be decoded (%r); kept with its labels only", cid, exc)
        try:
            labels = _interned(pb.labels)
        except Exception:
            labels = EMPTY_MAP
        return ContainerRecord(id=cid, labels=labels)


def _container(pb: containers_pb2.Container) -> ContainerRecord:
    cid = ContainerId(pb.id)
    labels = _interned(pb.labels)
    sandbox = kind_of(labels) is ContainerKind.SANDBOX
    spec = None if sandbox else _spec(cid, pb)
    cgroup_path: str | None = None
    oci_mounts: tuple[SpecMount, ...] = ()
    if spec is not None:
        cgroup_path = _cgroup_path(cid, spec)
        oci_mounts = _oci_mounts(spec)
    return ContainerRecord(
        id=cid,
        labels=labels,
        image=_share(pb.image),
        runtime=pb.runtime.name,
        snapshotter=pb.snapshotter,
        snapshot_key=pb.snapshot_key,
        created_at=timestamp(pb.created_at, present=pb.HasField("created_at")),
        cgroup_path=cgroup_path,
        mounts=oci_mounts,
        cri_container=None if sandbox else _cri_container(cid, pb),
        cri_sandbox=_cri_sandbox(cid, pb) if sandbox else None,
    )


def _spec(cid: ContainerId, pb: containers_pb2.Container) -> dict[str, Any] | None:
    if not pb.HasField("spec") or not pb.spec.value:
        log.warning("container %s: no OCI spec; cgroup path and mounts unknown", cid)
        return None
    if pb.spec.type_url != SPEC_TYPE_URL:
        log.warning("container %s: spec of unexpected type %r", cid, pb.spec.type_url)
    loaded = _json_object(cid, "OCI spec", pb.spec.value)
    return loaded


def _json_object(cid: ContainerId, what: str, raw: bytes) -> dict[str, Any] | None:
    try:
        loaded = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the interpreter's stack allows
        log.warning("container %s: %s is not JSON we can read (%r); ignored", cid, what, exc)
        return None
    if not isinstance(loaded, dict):
        log.warning("container %s: %s is not a JSON object; ignored", cid, what)
        return None
    return loaded


def _cgroup_path(cid: ContainerId, spec: Mapping[str, Any]) -> str | None:
    linux = spec.get("linux")
    raw = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    if not isinstance(raw, str) or not raw:
        log.warning("container %s: OCI spec has no linux.cgroupsPath; cgroup unknown", cid)
        return None
    try:
        return cgroups.cgroup_path_from_spec(raw)
    except cgroups.CgroupPathError as exc:
        log.warning("container %s: %s; cgroup unknown", cid, exc)
        return None


def _oci_mounts(spec: Mapping[str, Any]) -> tuple[SpecMount, ...]:
    raw = spec.get("mounts")
    if not isinstance(raw, list):
        return ()
    return tuple(
        _mount(str(m.get("destination", "")), str(m.get("source", "")), str(m.get("type", "")))
        for m in raw
        if isinstance(m, dict)
    )


@functools.lru_cache(maxsize=4096)
def _mount(destination: str, source: str, type: str) -> SpecMount:
    # /proc, /dev, /sys, ... are the same on every container: one shared object each
    return SpecMount(destination=destination, source=source, type=type)


def _extension(cid: ContainerId, pb: containers_pb2.Container, key: str) -> dict[str, Any]:
    """The `Metadata` object of a CRI extension; empty when absent or malformed."""
    if key not in pb.extensions:
        return {}
    loaded = _json_object(cid, f"extension {key}", pb.extensions[key].value)
    meta = loaded.get("Metadata") if loaded else None
    if loaded is not None and not isinstance(meta, dict):
        log.warning("container %s: extension %s has no Metadata object; ignored", cid, key)
    return meta if isinstance(meta, dict) else {}


def _str_map(raw: object) -> Mapping[str, str]:
    if not isinstance(raw, dict):
        return EMPTY_MAP
    return frozen_map({str(k): str(v) for k, v in raw.items()})


def _opt_str(raw: object) -> str | None:
    return raw if isinstance(raw, str) and raw else None


def _opt_int(raw: object) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def _object(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def _cri_container(cid: ContainerId, pb: containers_pb2.Container) -> CriContainerMeta | None:
    meta = _extension(cid, pb, CRI_CONTAINER_EXTENSION)
    if not meta:
        return None
    config = _object(meta, "Config")
    cmeta = _object(config, "metadata")
    sandbox = _opt_str(meta.get("SandboxID"))
    return CriContainerMeta(
        name=_opt_str(cmeta.get("name")),
        attempt=_opt_int(cmeta.get("attempt")) or 0,
        sandbox_id=SandboxId(sandbox) if sandbox else None,
        image_ref=_opt_str(meta.get("ImageRef")),
        log_path=_opt_str(meta.get("LogPath")),
        annotations=_str_map(config.get("annotations")),
    )


def _cri_sandbox(cid: ContainerId, pb: containers_pb2.Container) -> CriSandboxMeta | None:
    meta = _extension(cid, pb, CRI_SANDBOX_EXTENSION)
    if not meta:
        return None
    config = _object(meta, "Config")
    smeta = _object(config, "metadata")
    return CriSandboxMeta(
        name=_opt_str(smeta.get("name")),
        namespace=_opt_str(smeta.get("namespace")),
        uid=_opt_str(smeta.get("uid")),
        attempt=_opt_int(smeta.get("attempt")) or 0,
        annotations=_str_map(config.get("annotations")),
    )


# --- images --------------------------------------------------------------------------------

_INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


def manifest(blob: bytes) -> dict[str, Any] | None:
    """A manifest or index blob as a dict; None when it is not a JSON object."""
    try:
        loaded = json.loads(blob)
    except (ValueError, UnicodeDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None


def is_index(media_type: str, doc: Mapping[str, Any]) -> bool:
    return media_type in _INDEX_TYPES or doc.get("mediaType") in _INDEX_TYPES


def pick_manifest(index: Mapping[str, Any]) -> str | None:
    """The digest of the linux/amd64 manifest of an index, else of its first one."""
    entries = [m for m in index.get("manifests", ()) if isinstance(m, dict) and m.get("digest")]
    for m in entries:
        platform = m.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return str(m["digest"])
    return str(entries[0]["digest"]) if entries else None


def image_info(pb: images_pb2.Image, doc: Mapping[str, Any] | None) -> ImageInfo:
    """Image record + its (platform) manifest → `ImageInfo`; size/id None without one."""
    size: int | None = None
    image_id: str | None = None
    annotations = dict(pb.target.annotations)
    if doc is not None:
        config = _object(doc, "config")
        layers = [layer for layer in doc.get("layers", ()) if isinstance(layer, dict)]
        image_id = _opt_str(config.get("digest"))
        sizes = [config.get("size", 0), *(layer.get("size", 0) for layer in layers)]
        size = sum(s for s in sizes if isinstance(s, int))
        annotations.update(_str_map(doc.get("annotations")))
    return ImageInfo(
        name=pb.name,
        digest=pb.target.digest,
        media_type=pb.target.media_type,
        id=image_id,
        size=size,
        annotations=frozen_map(annotations),
        labels=frozen_map(pb.labels),
        created_at=timestamp(pb.created_at, present=pb.HasField("created_at")),
    )


# --- the event stream --------------------------------------------------------------------


def event_message(type_url: str, value: bytes) -> Message | None:
    """Decode an event Any by its bare type name; None (logged) when unknown or garbage."""
    name = type_url.rsplit("/", 1)[-1]
    cls = _EVENT_CLASSES.get(name)
    if cls is None:
        return None
    msg = cls()
    try:
        msg.ParseFromString(value)
    except DecodeError as exc:
        log.warning("event %s: undecodable payload (%s); skipped", name, exc)
        return None
    return msg


def envelope(pb: event_pb2.Envelope, *, ts: float) -> Envelope:
    """One stream message → an `Envelope` whose `event` is what the watcher acts on.

    `ts` is when the watcher received it (stamped by the client as it arrives). Never raises
    for what a message holds: an event that cannot be decoded is an envelope without one.
    """
    try:
        return _envelope(pb, ts=ts)
    except Exception as exc:  # hostile input stays with its message
        log.warning("event on %s cannot be decoded (%r); skipped", pb.topic, exc)
        return Envelope(topic=pb.topic, namespace=pb.namespace, timestamp=None,
                        type_name="", event=None)  # fmt: skip


def _envelope(pb: event_pb2.Envelope, *, ts: float) -> Envelope:
    type_name = pb.event.type_url.rsplit("/", 1)[-1]
    msg = event_message(pb.event.type_url, pb.event.value)
    if msg is None and type_name not in _EVENT_CLASSES:
        log.debug("event of unmodelled type %r on %s", type_name, pb.topic)
    at = timestamp(pb.timestamp, present=pb.HasField("timestamp"))
    return Envelope(
        topic=pb.topic,
        namespace=pb.namespace,
        timestamp=at,
        type_name=type_name,
        event=_event(msg, ts=ts, at=at) if msg is not None else None,
    )


def _event(msg: Message, *, ts: float, at: float | None) -> Event | None:
    match msg:
        case container_pb2.ContainerCreate():
            return ContainerChanged(ts=ts, container_id=ContainerId(msg.id))
        case container_pb2.ContainerUpdate():
            return ContainerChanged(
                ts=ts, container_id=ContainerId(msg.id), labels=_interned(msg.labels)
            )
        case container_pb2.ContainerDelete():
            return ContainerDeleted(ts=ts, container_id=ContainerId(msg.id))
        case task_pb2.TaskCreate():
            return TaskCreated(
                ts=ts,
                container_id=ContainerId(msg.container_id),
                pid=msg.pid,
                rootfs_mounts=snapshot_mounts(msg.rootfs),
                bundle=msg.bundle,
            )
        case task_pb2.TaskStart():
            return TaskStarted(
                ts=ts, container_id=ContainerId(msg.container_id), pid=msg.pid, started_at=at
            )
        case task_pb2.TaskExit() | task_pb2.TaskDelete():
            ended = TaskExited if isinstance(msg, task_pb2.TaskExit) else TaskDeleted
            return ended(
                ts=ts,
                container_id=ContainerId(msg.container_id),
                exec_id=msg.id,
                pid=msg.pid,
                exit_status=msg.exit_status,
                exited_at=timestamp(msg.exited_at, present=msg.HasField("exited_at")),
            )
    return None
