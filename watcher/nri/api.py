"""NRI's API messages: decoded into `watcher.nri.events` records, and the plugin's few replies
encoded. The only module of the plugin that touches NRI's protobuf classes.

The API is NRI's `pkg/api/api.proto` as vendored in `containerd_protos` (v0.8.0, what
containerd 2.1 pins); containerd 1.7 speaks v0.6.1, a subset of it (fields added since read as
absent). What is decoded is what identifies a pod or container and says where it runs —
ids, names, labels, annotations, mounts, cgroups path, PID. A container's `args` and `env`
are not: the watcher needs neither, and environments carry secrets.

Every reply of the plugin is built here, and every one is empty of adjustments: a
`ConfigureResponse` holds only the event mask, a `SynchronizeResponse` no update (its `more`
echoes the request's, which NRI's split Synchronize requires), every event's response is the
empty message (zero bytes on the wire).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.message import DecodeError, Message

from containerd_protos.nri.pkg.api import api_pb2
from watcher.containerd_records import ContainerId, SandboxId, frozen_map

from .errors import BadMessage
from .events import (
    Container,
    ContainerEvent,
    ContainerState,
    EventKind,
    Mount,
    PodSandbox,
    PodSandboxEvent,
)

PLUGIN_SERVICE: Final = api_pb2.DESCRIPTOR.services_by_name["Plugin"].full_name
RUNTIME_SERVICE: Final = api_pb2.DESCRIPTOR.services_by_name["Runtime"].full_name
REGISTER_PLUGIN: Final = "RegisterPlugin"
CONFIGURE: Final = "Configure"
SYNCHRONIZE: Final = "Synchronize"
SHUTDOWN: Final = "Shutdown"
#: the Plugin methods that carry lifecycle events, and the empty message each is answered with
EVENT_METHODS: Final[Mapping[str, type[Message]]] = {
    "CreateContainer": api_pb2.CreateContainerResponse,
    "StopContainer": api_pb2.StopContainerResponse,
    "StateChange": api_pb2.Empty,
}
#: the Plugin methods this plugin serves; any other is answered Unimplemented (a newer
#: runtime then falls back to what it knows we serve: NRI >= 0.10 sends each event by its
#: own method first, and StateChange on Unimplemented)
SERVED: Final = frozenset({CONFIGURE, SYNCHRONIZE, SHUTDOWN, *EVENT_METHODS})


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigureInfo:
    """What the runtime says of itself in `Configure` (timeouts: seconds; None when it sends
    none, as NRI before v0.8 does)."""

    runtime_name: str
    runtime_version: str
    registration_timeout: float | None = None
    request_timeout: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncChunk:
    """One `SynchronizeRequest`; `more`: further chunks of the same listing follow."""

    pods: tuple[PodSandbox, ...]
    containers: tuple[Container, ...]
    more: bool = False


def register_request(name: str, index: str) -> bytes:
    return _encode(api_pb2.RegisterPluginRequest(plugin_name=name, plugin_idx=index))


def configure_request(payload: bytes) -> ConfigureInfo:
    """Raises `BadMessage` for a payload that is no `ConfigureRequest`."""
    pb: Any = _parse(api_pb2.ConfigureRequest, payload)
    return ConfigureInfo(
        runtime_name=pb.runtime_name,
        runtime_version=pb.runtime_version,
        registration_timeout=pb.registration_timeout / 1000 or None,  # milliseconds
        request_timeout=pb.request_timeout / 1000 or None,
    )


def configure_response(event_mask: int) -> bytes:
    return _encode(api_pb2.ConfigureResponse(events=event_mask))


def synchronize_request(payload: bytes) -> SyncChunk:
    """Raises `BadMessage` for a payload that is no `SynchronizeRequest`."""
    pb: Any = _parse(api_pb2.SynchronizeRequest, payload)
    return SyncChunk(
        pods=tuple(_pod(p) for p in pb.pods),
        containers=tuple(_container(c) for c in pb.containers),
        more=pb.more,
    )


def synchronize_response(more: bool) -> bytes:
    """No update; `more` echoes the request's (NRI closes a plugin whose echo differs)."""
    return _encode(api_pb2.SynchronizeResponse(more=more))


def empty_response(method: str) -> bytes:
    """The empty response of an event method (`EVENT_METHODS`) or `Shutdown`: zero bytes."""
    return _encode(EVENT_METHODS.get(method, api_pb2.Empty)())


def event(
    method: str, payload: bytes, *, ts: float, mono: float
) -> PodSandboxEvent | ContainerEvent | None:
    """The record of an event call; None for an event the plugin does not model (an update).

    Raises:
        BadMessage: the payload is not the method's request message, or lacks the pod or
            container its kind is about.
    """
    if method == "StateChange":
        pb: Any = _parse(api_pb2.StateChangeEvent, payload)
        try:
            kind = EventKind(pb.event)
        except ValueError:
            return None
    elif method == "CreateContainer":
        pb = _parse(api_pb2.CreateContainerRequest, payload)
        kind = EventKind.CREATE_CONTAINER
    elif method == "StopContainer":
        pb = _parse(api_pb2.StopContainerRequest, payload)
        kind = EventKind.STOP_CONTAINER
    else:
        raise BadMessage(f"{method} is not an NRI event")
    pod = _pod(pb.pod) if pb.HasField("pod") else None
    if kind.about_pod:
        if pod is None:
            raise BadMessage(f"{method} {kind.name} without its pod")
        return PodSandboxEvent(kind=kind, pod=pod, ts=ts, mono=mono)
    if not pb.HasField("container"):
        raise BadMessage(f"{method} {kind.name} without its container")
    return ContainerEvent(kind=kind, container=_container(pb.container), pod=pod, ts=ts, mono=mono)


def _pod(pb: Any) -> PodSandbox:
    return PodSandbox(
        id=SandboxId(pb.id),
        name=pb.name,
        namespace=pb.namespace,
        uid=pb.uid,
        labels=frozen_map(pb.labels),
        annotations=frozen_map(pb.annotations),
        runtime_handler=pb.runtime_handler or None,
        cgroup_parent=pb.linux.cgroup_parent or None,
        pid=pb.pid or None,
        ips=tuple(pb.ips),
    )


def _container(pb: Any) -> Container:
    try:
        state = ContainerState(pb.state)
    except ValueError:
        state = ContainerState.UNKNOWN
    return Container(
        id=ContainerId(pb.id),
        sandbox_id=SandboxId(pb.pod_sandbox_id),
        name=pb.name,
        state=state,
        labels=frozen_map(pb.labels),
        annotations=frozen_map(pb.annotations),
        mounts=tuple(
            Mount(destination=m.destination, type=m.type, source=m.source, options=tuple(m.options))
            for m in pb.mounts
        ),
        cgroups_path=pb.linux.cgroups_path or None,
        pid=pb.pid or None,
    )


def _parse(cls: type[Message], payload: bytes) -> Message:
    message = cls()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise BadMessage(f"not an NRI {cls.DESCRIPTOR.name}: {exc}") from exc
    return message


def _encode(message: Message) -> bytes:
    return bytes(message.SerializeToString())
