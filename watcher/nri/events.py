"""What the NRI plugin tells its consumer: one frozen record per NRI call, decoded.

Made by `watcher.nri.api` (nothing past it sees a protobuf object), sent by the plugin down a
trio memory channel, read by whoever consumes it (the index's shell, once wired). Plain data:
no trio, no protobuf. Every mapping is read-only (`frozen_map`), and annotations stay out of
`repr`: NRI hands a plugin every annotation, credentials included (`watcher.disclosure`).

`ts` is the wall-clock time the plugin received the call, `mono` the trio clock at that
moment (as on the index's inputs): NRI's messages carry no time of their own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from watcher.containerd_records import EMPTY_MAP, ContainerId, SandboxId


class EventKind(enum.Enum):
    """The NRI lifecycle events the plugin subscribes to; values are NRI's `Event` numbers.

    `UpdateContainer`/`PostUpdateContainer` (8, 9) are left out: resource updates say
    nothing about a workspace's identity or life, and subscribing would put the watcher on
    the path of every update.
    """

    RUN_POD_SANDBOX = 1
    STOP_POD_SANDBOX = 2
    REMOVE_POD_SANDBOX = 3
    CREATE_CONTAINER = 4
    POST_CREATE_CONTAINER = 5
    START_CONTAINER = 6
    POST_START_CONTAINER = 7
    STOP_CONTAINER = 10
    REMOVE_CONTAINER = 11

    @property
    def about_pod(self) -> bool:
        """A pod sandbox's event (no container), rather than a container's."""
        return self.value <= EventKind.REMOVE_POD_SANDBOX.value

    @property
    def mask_bit(self) -> int:
        """Its bit in the `ConfigureResponse.events` mask (NRI's `EventMask.Set`: 1 << (e-1))."""
        return 1 << (self.value - 1)


#: every event the plugin subscribes to (a mask of 0 would mean *all* events to containerd)
SUBSCRIBED: frozenset[EventKind] = frozenset(EventKind)


def event_mask(kinds: frozenset[EventKind] = SUBSCRIBED) -> int:
    """The `ConfigureResponse.events` mask for `kinds`."""
    mask = 0
    for kind in kinds:
        mask |= kind.mask_bit
    return mask


def _empty() -> Mapping[str, str]:
    return EMPTY_MAP


class ContainerState(enum.Enum):
    """NRI's `ContainerState` (what the runtime says of the container at that call)."""

    UNKNOWN = 0
    CREATED = 1
    PAUSED = 2
    RUNNING = 3
    STOPPED = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class PodSandbox:
    """NRI's `PodSandbox`: the pod as the runtime knows it. Empty strings become None."""

    id: SandboxId
    name: str
    namespace: str
    uid: str
    labels: Mapping[str, str] = field(default_factory=_empty)
    annotations: Mapping[str, str] = field(default_factory=_empty, repr=False)
    runtime_handler: str | None = None
    #: the pod's cgroup parent (`linux.cgroup_parent`, e.g. /kubepods/besteffort/pod<uid>)
    cgroup_parent: str | None = None
    #: the sandbox's PID, when the runtime sends it (NRI fills it in for v1 emulation)
    pid: int | None = None
    ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """One mount of the container's OCI spec, as NRI lists it (with its options)."""

    destination: str
    type: str
    source: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    """NRI's `Container`. `pid` is None until the runtime knows one (from StartContainer on);
    `cgroups_path` is the OCI spec's `linux.cgroupsPath` (None when empty)."""

    id: ContainerId
    sandbox_id: SandboxId
    name: str
    state: ContainerState = ContainerState.UNKNOWN
    labels: Mapping[str, str] = field(default_factory=_empty)
    annotations: Mapping[str, str] = field(default_factory=_empty, repr=False)
    mounts: tuple[Mount, ...] = ()
    cgroups_path: str | None = None
    pid: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PodSandboxEvent:
    """RunPodSandbox, StopPodSandbox or RemovePodSandbox, as NRI delivered it."""

    kind: EventKind
    pod: PodSandbox
    ts: float
    mono: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerEvent:
    """A container's lifecycle step. `pod` is the container's pod, None when the runtime
    sent none (it always does for CRI containers)."""

    kind: EventKind
    container: Container
    pod: PodSandbox | None
    ts: float
    mono: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Synchronized:
    """NRI's Synchronize: every pod and container the runtime knows, at (re)registration.

    A listing, authoritative as of `mono` except for what happened while it was made: NRI
    does not hold pod operations back while it lists, so a container created meanwhile may be
    missing here and arrive as an event shortly after (or not at all, containerd/nri#129; the
    event stream and relists are the safety net). A listing split over several messages
    (NRI >= 0.8, `more`) is delivered once, whole.
    """

    pods: tuple[PodSandbox, ...]
    containers: tuple[Container, ...]
    ts: float
    mono: float


#: what the plugin's channel carries
NriItem = PodSandboxEvent | ContainerEvent | Synchronized
