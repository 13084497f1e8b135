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

from .disclosure import DEFAULT, Disclosure
from .errors import UsageError
from .labels import GITPOD_SCHEMES, LabelScheme
from .pathmap import PathMap

__all__ = [
    "ADDRESS",
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "CALL_TIMEOUT",
    "CHANGE_BUFFER",
    "CLIENT_GRACE",
    "CLIENT_TIMEOUT",
    "FEED_BATCH",
    "FEED_HISTORY",
    "GET_TRIES",
    "HEALTH_CHECK_INTERVAL",
    "LISTEN_HOST",
    "LISTING_TIMEOUT",
    "LOOKUPS",
    "MAX_ID",
    "MAX_MESSAGE_BYTES",
    "MAX_OUTAGE_CAUSES",
    "MAX_UNKNOWN_TYPES",
    "NAMESPACE",
    "NRI_EVENT_BUFFER",
    "NRI_PLUGIN_INDEX",
    "NRI_PLUGIN_NAME",
    "NRI_REGISTRATION_TIMEOUT",
    "NRI_REPLY_TIMEOUT",
    "NRI_SOCKET",
    "NRI_UNAVAILABLE_RETRY",
    "PROC_ROOT",
    "RELIST_GRACE",
    "RELIST_INTERVAL",
    "RELIST_RETRY",
    "RESOLVE_CONCURRENCY",
    "SERVER_ENV",
    "SERVICE_BACKLOG",
    "SERVICE_DIR_MODE",
    "SERVICE_SOCKET",
    "SERVICE_SOCKET_MODE",
    "SETTLE_RELIST",
    "SHARED_STRINGS",
    "START_GRACE",
    "STREAM_BUFFER",
    "TOMBSTONES",
    "WAIT_TIMEOUT",
    "Endpoint",
    "NriSettings",
    "ServiceSettings",
    "Settings",
    "check_id",
    "check_listen",
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

# --- inner workings: tuned, not settings a user gives ---------------------------------------

#: a stream this long without events is checked with a Version call: a containerd that is
#: wedged, or a connection that died silently, is noticed within this time
HEALTH_CHECK_INTERVAL = 10.0
#: seconds after a (re)connection to the first safety relist: containerd registers a
#: subscription only when it serves the call, at a moment the client cannot see, so an event
#: published just then is in neither the listing nor the stream
SETTLE_RELIST = 5.0
#: first and longest wait before a failed relist is tried again
RELIST_RETRY = (1.0, 60.0)
#: round trips (Containers.Get, Snapshots.Mounts) in flight for the stream's needs: enough to
#: overlap a burst of 200 pods, few enough not to add to a busy containerd's queue
LOOKUPS = 32
#: tries of a lookup (Containers.Get, Snapshots.Mounts) that fails (not NotFound) before a
#: relist is asked to find it
GET_TRIES = 3
#: distinct causes of one outage warned about; repeated or further ones are debug-logged
MAX_OUTAGE_CAUSES = 5
#: distinct unknown event types warned about (once each); more are ignored silently
MAX_UNKNOWN_TYPES = 100
#: Snapshots.Mounts calls in flight while resolving the workspaces of a (re)sync
RESOLVE_CONCURRENCY = 32
#: containerd accepts 16 MiB messages; grpc-python receives 4 MiB by default, which one
#: Containers.List on a node with thousands of containers exceeds.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: stream items buffered between the pump thread and the consumer; the thread then waits,
#: so a slow consumer slows the stream down instead of losing events
STREAM_BUFFER = 1024
#: distinct strings kept for sharing; past this the table starts afresh (sharing is an
#: optimisation: a string decoded twice is merely stored twice)
SHARED_STRINGS = 65_536


# --- followers and callers ---------------------------------------------------------------------

#: changes buffered per follower before the oldest are dropped (a `Lagged` in their place):
#: minutes of a busy node, a few MB
CHANGE_BUFFER: Final = 10_000
#: the longest id accepted (containerd's are 64 characters; Kubernetes names at most 253)
MAX_ID: Final = 1024
#: how long `ws-watcher wait` and `wait-stop` wait unless told otherwise
WAIT_TIMEOUT: Final = 60.0

# --- the node service (`ws-watcher serve`) and its clients -----------------------------------

#: where `serve` listens: a directory of its own under /run, so that a pod mounts the
#: directory (a socket file mounted alone goes stale when the server makes a new one)
SERVICE_SOCKET: Final = "/run/ws-watcher/api.sock"
#: owner and group may connect (connecting to a unix socket needs write permission on it),
#: nobody else: what leaves the socket is every workspace on the node
SERVICE_SOCKET_MODE: Final = 0o660
#: the socket's directory, when `serve` makes it: anyone may look the socket up; the
#: socket's own mode decides who may connect
SERVICE_DIR_MODE: Final = 0o755
#: the environment variable that points the CLI's commands at a service (as `--server`)
SERVER_ENV: Final = "WS_WATCHER_SERVER"
#: connections queued before the server accepts them: a hundred clients connecting at once
#: must queue, not be refused (the kernel caps it at net.core.somaxconn)
SERVICE_BACKLOG: Final = 4096
#: the host of a `--listen PORT` given without one: loopback, so nothing is reachable from
#: off the node unless asked for (the API has no authentication of its own)
LISTEN_HOST: Final = "127.0.0.1"
#: changes the service holds for followers that resume (`/v1/watch?since=N`): a follower
#: that reconnects after a blip of seconds finds what it missed even in a burst of 200 pods
#: starting at once (~800 changes); each is a line of ~1.5 KB, so ~6 MB at most
FEED_HISTORY: Final = 4096
#: changes written to one follower per write: one far behind catches up in chunks of
#: ~0.4 MB, not in one write of the whole history
FEED_BATCH: Final = 256
#: the client's deadline for a short request (list, get, probes): `inspect` asks containerd
#: up to three calls of `CALL_TIMEOUT` each
CLIENT_TIMEOUT: Final = 30.0
#: how much longer than a wait's own timeout the client waits for its answer: the service
#: answers a timed-out wait itself (504), and a busy node may be slow to say so
CLIENT_GRACE: Final = 10.0


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
    path_map: PathMap = field(default_factory=PathMap)
    backoff_initial: float = BACKOFF_INITIAL
    backoff_max: float = BACKOFF_MAX
    call_timeout: float = CALL_TIMEOUT
    listing_timeout: float = LISTING_TIMEOUT
    change_buffer: int = CHANGE_BUFFER
    relist_interval: float = RELIST_INTERVAL
    relist_grace: float = RELIST_GRACE
    start_grace: float = START_GRACE
    #: the NRI source beside the event stream (`watcher.nri_source`); None: the stream alone
    nri: NriSettings | None = None

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


# --- the node service ------------------------------------------------------------------------

#: a TCP address to listen on: (host, port); port 0 takes any free one (tests)
Endpoint = tuple[str, int]
#: the longest path a unix socket can have (sun_path is 108 bytes with its final NUL)
_MAX_SOCKET_PATH = 107


def check_listen(text: str, what: str = "--listen") -> Endpoint:
    """`PORT`, `HOST:PORT` or `[IPV6]:PORT` as (host, port); only a port means loopback.

    >>> check_listen("9102")
    ('127.0.0.1', 9102)
    >>> check_listen("[::1]:80")
    ('::1', 80)
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        host = LISTEN_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"{what} {text!r}: write an IPv6 address in brackets, [::1]:PORT")
    if not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{what} {text!r}: not PORT or HOST:PORT (a port is 0 to 65535)")
    return host, int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSettings:
    """How `ws-watcher serve` serves its API (the watcher's own are a `Settings`).

    Raises `UsageError` for a value that cannot work, at construction.
    """

    #: the unix socket of the API (always served)
    socket: str = SERVICE_SOCKET
    socket_mode: int = SERVICE_SOCKET_MODE
    #: the group id the socket is given to (`--socket-group`); None keeps ours
    socket_group: int | None = None
    #: also serve the API on TCP here (`--listen`)
    listen: Endpoint | None = None
    #: serve only /healthz, /readyz and /metrics here (`--metrics-listen`): probes and
    #: Prometheus need no workspace data
    metrics_listen: Endpoint | None = None
    feed_history: int = FEED_HISTORY
    feed_batch: int = FEED_BATCH
    #: which annotations may leave the process (the CLI's `--show-annotation`)
    disclosure: Disclosure = DEFAULT

    def __post_init__(self) -> None:
        if not isinstance(self.socket, str) or not self.socket.startswith("/"):
            raise UsageError(f"the API's socket must be an absolute path, not {self.socket!r}")
        if len(self.socket.encode()) > _MAX_SOCKET_PATH:
            raise UsageError(f"the socket path {self.socket!r} is too long for a unix socket")
        if not 0 <= self.socket_mode <= 0o777:
            raise UsageError(f"socket_mode must be a permission mode, not {self.socket_mode:o}")
        for name in ("feed_history", "feed_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"{name} must be at least 1, not {value!r}")


# --- NRI: containerd's Node Resource Interface (containerd >= 1.7) ------------------------------

#: where containerd serves NRI by default (NRI's `DefaultSocketPath`; containerd 2.x's
#: `socket_path`); 1.7 serves it only when its config turns NRI on
NRI_SOCKET: Final = "/var/run/nri/nri.sock"
#: the name the plugin registers under (containerd logs it, e.g. "99-ws-watcher")
NRI_PLUGIN_NAME: Final = "ws-watcher"
#: NRI calls plugins in ascending index order (two digits): last, so that no plugin that
#: does adjust containers ever waits behind an observer
NRI_PLUGIN_INDEX: Final = "99"
#: NRI events queued for the consumer before new ones are dropped (and counted): minutes of a
#: busy node; a dropped event is caught by the event stream and relists
NRI_EVENT_BUFFER: Final = 10_000
#: seconds between looks for an NRI socket that is not there (containerd 1.6, NRI off, or
#: containerd stopped): a connect() every 10 s costs nothing, and a containerd that comes
#: back with NRI is used within seconds (a socket that refuses backs off as for containerd)
NRI_UNAVAILABLE_RETRY: Final = 10.0
#: containerd's own default plugin registration timeout: it drops a plugin slower than that
NRI_REGISTRATION_TIMEOUT: Final = 5.0
#: containerd's default plugin request timeout: a reply later than that is useless (the
#: plugin is dropped, or never sent another event), so a reply stuck longer ends the connection
NRI_REPLY_TIMEOUT: Final = 2.0
#: what containerd accepts as a plugin index (NRI's `CheckPluginIndex`): exactly two digits
_PLUGIN_INDEX_DIGITS = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class NriSettings:
    """How the watcher's observe-only NRI plugin (`watcher.nri`) connects and registers.

    Raises `UsageError` for a value containerd would refuse (an empty name, an index that
    is not two digits) or that cannot work, at construction.
    """

    socket: str = NRI_SOCKET
    plugin_name: str = NRI_PLUGIN_NAME
    plugin_index: str = NRI_PLUGIN_INDEX
    event_buffer: int = NRI_EVENT_BUFFER
    backoff_initial: float = BACKOFF_INITIAL
    backoff_max: float = BACKOFF_MAX
    unavailable_retry: float = NRI_UNAVAILABLE_RETRY
    registration_timeout: float = NRI_REGISTRATION_TIMEOUT
    reply_timeout: float = NRI_REPLY_TIMEOUT

    def __post_init__(self) -> None:
        if not isinstance(self.socket, str) or not self.socket.startswith("/"):
            raise UsageError(f"the NRI socket must be an absolute path, not {self.socket!r}")
        if len(self.socket.encode()) > _MAX_SOCKET_PATH:
            raise UsageError(f"the NRI socket path {self.socket!r} is too long for a unix socket")
        if not isinstance(self.plugin_name, str) or not self.plugin_name:
            raise UsageError("the NRI plugin name must not be empty")
        index = self.plugin_index
        if not (isinstance(index, str) and len(index) == _PLUGIN_INDEX_DIGITS
                and index.isascii() and index.isdigit()):  # fmt: skip
            raise UsageError(f"the NRI plugin index must be two digits, not {index!r}")
        buffer = self.event_buffer
        if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 1:
            raise UsageError(f"event_buffer must be at least 1, not {buffer!r}")
        for name in ("backoff_initial", "backoff_max", "unavailable_retry",
                     "registration_timeout", "reply_timeout"):  # fmt: skip
            check_seconds(name, getattr(self, name))
        if self.backoff_initial > self.backoff_max:
            raise UsageError("backoff must be positive, the initial one at most the maximum")
