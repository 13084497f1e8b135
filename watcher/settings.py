"""What a watcher is configured with: one frozen object, built once, validated once.

The CLI builds it from its flags; library users pass their own. Each default is written here
once, with the reason for its value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import mounts
from .changes import DEFAULT_BUFFER
from .client import DEFAULT_ADDRESS, DEFAULT_NAMESPACE, DEFAULT_TIMEOUT
from .corrections import GRACE
from .errors import UsageError
from .labels import GITPOD_SCHEMES, LabelScheme

__all__ = ["LISTING_TIMEOUT", "Settings"]

#: a listing's deadline: it runs beside the stream (nothing waits for it), and containerd
#: asks every shim for Tasks.List, which takes seconds when hundreds of pods start at once.
#: The container listing streams, so its deadline is per message instead (`call_timeout`
#: without a message): a listing that keeps delivering is never late.
LISTING_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything a watcher is configured with, built once (the CLI builds it from flags)."""

    address: str = DEFAULT_ADDRESS
    namespace: str = DEFAULT_NAMESPACE
    schemes: Sequence[LabelScheme] = GITPOD_SCHEMES
    #: the host's /proc: the mount table is read from PROC/1/mountinfo when not /proc
    proc_root: str = "/proc"
    path_map: mounts.PathMap = field(default_factory=mounts.PathMap)
    #: first and longest wait between reconnection attempts
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    #: deadline of each unary call to containerd (and of each message of a listing)
    call_timeout: float = DEFAULT_TIMEOUT
    #: deadline of Tasks.List (see LISTING_TIMEOUT)
    listing_timeout: float = LISTING_TIMEOUT
    #: changes buffered per follower before the oldest are dropped (see `changes()`)
    change_buffer: int = DEFAULT_BUFFER
    #: seconds between safety relists on a live stream (0: never); like the kubelet's relist
    relist_interval: float = 300.0
    #: seconds a relisted change waits for its event before it counts as missed
    relist_grace: float = GRACE

    def __post_init__(self) -> None:
        if not self.namespace:
            raise UsageError("the containerd namespace must not be empty")
        for name in ("backoff_initial", "backoff_max", "call_timeout", "listing_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise UsageError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.backoff_initial > self.backoff_max:
            raise UsageError("backoff must be positive, the initial one at most the maximum")
        for name in ("relist_interval", "relist_grace"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be 0 or a positive number of seconds, not {value!r}")
        if not isinstance(self.change_buffer, int) or self.change_buffer < 1:
            raise UsageError(f"change_buffer must be at least 1, not {self.change_buffer!r}")
