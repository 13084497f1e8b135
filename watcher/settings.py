"""Every default of ws-watcher, written once, and the one frozen object built from them.

kopf's settings are the model: grouped by concern, each default with a line of why, validated
once, in one place (`Settings.__post_init__`, and the `check_*` functions the CLI's parser and
the client share). The CLI builds a `Settings` from its flags and decides no default of its
own; the library takes one, or the defaults.

Pure: no I/O, no trio, no grpc (the core reads its defaults here too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from . import mounts
from .errors import UsageError
from .labels import GITPOD_SCHEMES, LabelScheme

__all__ = [
    "ADDRESS",
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "CALL_TIMEOUT",
    "CHANGE_BUFFER",
    "LISTING_TIMEOUT",
    "MAX_ID",
    "NAMESPACE",
    "PROC_ROOT",
    "RELIST_GRACE",
    "RELIST_INTERVAL",
    "START_GRACE",
    "TOMBSTONES",
    "WAIT_TIMEOUT",
    "Settings",
    "check_id",
    "check_namespace",
    "check_seconds",
]

# --- where containerd is ---------------------------------------------------------------------

#: the socket of a kubelet's containerd
ADDRESS: Final = "/run/containerd/containerd.sock"
#: the namespace the CRI plugin keeps pods in
NAMESPACE: Final = "k8s.io"
#: the node's /proc (a pod mounts the host's elsewhere and says so)
PROC_ROOT: Final = "/proc"

# --- talking to containerd ---------------------------------------------------------------------

#: deadline of each unary call (and of each message of a listing): long enough for a busy
#: containerd, short enough that a wedged one is noticed
CALL_TIMEOUT: Final = 10.0
#: deadline of Tasks.List: a listing runs beside the stream (nothing waits for it), and
#: containerd asks every shim, which takes seconds when hundreds of pods start at once
LISTING_TIMEOUT: Final = 60.0
#: first and longest wait between reconnection attempts: back within 2 s of containerd
#: answering again, without hammering a socket that refuses
BACKOFF_INITIAL: Final = 0.05
BACKOFF_MAX: Final = 2.0

# --- keeping the index in step ---------------------------------------------------------------

#: seconds between safety relists on a live stream, like the kubelet's relist (0: never)
RELIST_INTERVAL: Final = 300.0
#: seconds a relisted change waits for its event before it counts as missed: an event may
#: lag behind a listing of the same moment
RELIST_GRACE: Final = 5.0
#: seconds (monotonic) a container may be known without a task before a listing takes it
#: for exited: the kubelet starts a container right after it created it
START_GRACE: Final = 30.0
#: deleted container ids remembered, so late events for them are ignored: containerd never
#: reuses an id, and thousands of create/delete cycles must not grow memory without bound
TOMBSTONES: Final = 10_000

# --- followers and callers ---------------------------------------------------------------------

#: changes buffered per follower before the oldest are dropped (a `Lagged` in their place):
#: minutes of a busy node, a few MB
CHANGE_BUFFER: Final = 10_000
#: the longest id accepted (containerd's are 64 characters; Kubernetes names at most 253)
MAX_ID: Final = 1024
#: how long `ws-watcher wait` and `wait-stop` wait unless told otherwise
WAIT_TIMEOUT: Final = 60.0


def check_namespace(namespace: object) -> str:
    if not isinstance(namespace, str) or not namespace:
        raise UsageError("the containerd namespace must not be empty")
    return namespace


def check_seconds(name: str, value: object, *, zero: bool = False) -> float:
    """A finite number of seconds, positive (or 0 when `zero` is allowed: "off")."""
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if zero else value > 0)
    )
    if not ok:
        what = "0 (off) or positive" if zero else "a positive number of seconds"
        raise UsageError(f"{name} must be {what}, not {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"the {what} must not be empty")
    if len(value) > MAX_ID:
        raise UsageError(f"the {what} of {len(value)} characters is not one")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything a watcher is configured with, built once (the CLI builds it from flags).

    Raises `UsageError` for a value that cannot work (an empty namespace, a zero or NaN
    timeout, a buffer of nothing), at construction, not when it is first used.
    """

    address: str = ADDRESS
    namespace: str = NAMESPACE
    schemes: Sequence[LabelScheme] = GITPOD_SCHEMES
    #: the host's /proc: the mount table is read from PROC/1/mountinfo when not /proc
    proc_root: str = PROC_ROOT
    path_map: mounts.PathMap = field(default_factory=mounts.PathMap)
    backoff_initial: float = BACKOFF_INITIAL
    backoff_max: float = BACKOFF_MAX
    call_timeout: float = CALL_TIMEOUT
    listing_timeout: float = LISTING_TIMEOUT
    change_buffer: int = CHANGE_BUFFER
    relist_interval: float = RELIST_INTERVAL
    relist_grace: float = RELIST_GRACE
    start_grace: float = START_GRACE

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address:
            raise UsageError("the containerd address must not be empty")
        check_namespace(self.namespace)
        if not self.schemes:
            raise UsageError("at least one label scheme is needed")
        for name in ("backoff_initial", "backoff_max", "call_timeout", "listing_timeout"):
            check_seconds(name, getattr(self, name))
        if self.backoff_initial > self.backoff_max:
            raise UsageError("backoff must be positive, the initial one at most the maximum")
        for name in ("relist_interval", "relist_grace", "start_grace"):
            check_seconds(name, getattr(self, name), zero=True)
        buffer = self.change_buffer
        if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 1:
            raise UsageError(f"change_buffer must be at least 1, not {buffer!r}")
