"""NRI as a source of the index: the plugin's records turned into the index's inputs.

NRI tells the watcher of a pod when its sandbox runs and of a container before containerd
creates it, with the labels, annotations, mounts and cgroup path containerd's event stream
does not carry — so a workspace is `created` before the stream says a word, with no
Containers.Get on the way. The stream stays the authority on everything else: tasks, PIDs,
exits, deletions (`watcher.index`: "two sources, one index").

What each NRI call becomes (`inputs_of`):

* RunPodSandbox, and the pod of each container call: `ContainerAnnounced` of the sandbox;
* CreateContainer, PostCreateContainer: `ContainerAnnounced` of the container;
* StartContainer: `StartAnnounced` (the `starting` change);
* RemoveContainer: `AnnouncementWithdrawn` (ends only a container containerd never showed);
* Synchronize: an announcement of every pod and container it lists;
* the rest (stops, PostStart, RemovePodSandbox): nothing — the stream tells them, and a
  container's end is published when containerd has deleted it, not when NRI is told.

Pure: no I/O, no clock (the plugin stamped `ts`/`mono` when the call came).
"""

from __future__ import annotations

from collections.abc import Mapping

from watcher.cgroups import CgroupPathError, cgroup_path_from_spec
from watcher.containerd_records import (
    ContainerId,
    ContainerRecord,
    CriContainerMeta,
    CriSandboxMeta,
    SpecMount,
    frozen_map,
)
from watcher.cri import (
    CONTAINER_NAME_LABEL,
    KIND_LABEL,
    POD_NAME_LABEL,
    POD_NAMESPACE_LABEL,
    POD_UID_LABEL,
    ContainerKind,
)
from watcher.inputs import AnnouncementWithdrawn, ContainerAnnounced, Event, StartAnnounced
from watcher.nri.events import (
    Container,
    ContainerEvent,
    EventKind,
    NriItem,
    PodSandbox,
    PodSandboxEvent,
    Synchronized,
)

__all__ = ["NRI_TOPIC", "container_record", "inputs_of", "sandbox_record"]

#: the topic NRI's inputs are counted under in the metrics' events (beside containerd's)
NRI_TOPIC = "nri"

#: the spec annotations containerd's CRI plugin sets on an app container
IMAGE_NAME_ANNOTATION = "io.kubernetes.cri.image-name"
#: the kubelet's annotation of a container's restart count (CRI's attempt)
RESTART_COUNT_ANNOTATION = "io.kubernetes.container.restartCount"

_ANNOUNCING = frozenset({EventKind.CREATE_CONTAINER, EventKind.POST_CREATE_CONTAINER})


def inputs_of(item: NriItem) -> list[Event]:
    """The index inputs one NRI record gives (see the module's table)."""
    if isinstance(item, PodSandboxEvent):
        if item.kind is EventKind.RUN_POD_SANDBOX:
            return [_announced(sandbox_record(item.pod), item.ts, item.mono)]
        return []
    if isinstance(item, ContainerEvent):
        return _container_inputs(item)
    if isinstance(item, Synchronized):
        return [
            *(_announced(sandbox_record(p), item.ts, item.mono) for p in item.pods),
            *(_announced(container_record(c, None), item.ts, item.mono) for c in item.containers),
        ]
    raise TypeError(f"not an NRI record: {item!r}")


def _container_inputs(item: ContainerEvent) -> list[Event]:
    cid = item.container.id
    if item.kind in _ANNOUNCING:
        out: list[Event] = []
        if item.pod is not None:
            out.append(_announced(sandbox_record(item.pod), item.ts, item.mono))
        out.append(_announced(container_record(item.container, item.pod), item.ts, item.mono))
        return out
    if item.kind is EventKind.START_CONTAINER:
        return [StartAnnounced(ts=item.ts, container_id=cid)]
    if item.kind is EventKind.REMOVE_CONTAINER:
        return [AnnouncementWithdrawn(ts=item.ts, container_id=cid)]
    return []


def _announced(record: ContainerRecord, ts: float, mono: float) -> ContainerAnnounced:
    return ContainerAnnounced(ts=ts, container=record, mono=mono)


def sandbox_record(pod: PodSandbox) -> ContainerRecord:
    """The pod's sandbox as containerd would describe it: the pod's labels plus CRI's kind
    and the kubelet's identity labels (NRI gives those as fields too)."""
    labels = {
        POD_NAME_LABEL: pod.name,
        POD_NAMESPACE_LABEL: pod.namespace,
        POD_UID_LABEL: pod.uid,
        **pod.labels,
        KIND_LABEL: ContainerKind.SANDBOX.value,
    }
    return ContainerRecord(
        id=ContainerId(pod.id),
        labels=frozen_map(labels),
        cri_sandbox=CriSandboxMeta(
            name=pod.name, namespace=pod.namespace, uid=pod.uid, annotations=pod.annotations
        ),
    )


def container_record(container: Container, pod: PodSandbox | None) -> ContainerRecord:
    """An app container as containerd would describe it, less what only containerd keeps
    (created_at, snapshot, log path): that comes with containerd's own record."""
    labels: dict[str, str] = {CONTAINER_NAME_LABEL: container.name}
    if pod is not None:
        labels |= {POD_NAME_LABEL: pod.name, POD_NAMESPACE_LABEL: pod.namespace,
                   POD_UID_LABEL: pod.uid}  # fmt: skip
    labels |= container.labels
    labels[KIND_LABEL] = ContainerKind.CONTAINER.value
    annotations = container.annotations
    return ContainerRecord(
        id=container.id,
        labels=frozen_map(labels),
        image=annotations.get(IMAGE_NAME_ANNOTATION, ""),
        cgroup_path=_cgroup_path(container.cgroups_path),
        mounts=tuple(
            SpecMount(destination=m.destination, source=m.source, type=m.type)
            for m in container.mounts
        ),
        cri_container=CriContainerMeta(
            name=container.name,
            attempt=_attempt(annotations),
            sandbox_id=container.sandbox_id,
            annotations=annotations,
        ),
    )


def _cgroup_path(cgroups_path: str | None) -> str | None:
    if not cgroups_path:
        return None
    try:
        return cgroup_path_from_spec(cgroups_path)
    except CgroupPathError:
        return None  # as `decode` does: unknown, containerd's record may tell


def _attempt(annotations: Mapping[str, str]) -> int | None:
    raw = annotations.get(RESTART_COUNT_ANNOTATION)
    return int(raw) if raw is not None and raw.isdecimal() and len(raw) < 10 else None
