"""An observe-only NRI plugin: containerd tells the watcher of pods and containers *before* it
acts on them (containerd >= 1.7; NRI on by default from 2.0).

One concept per module, bottom up:

* `ttrpc` — ttrpc's framing and Request/Response envelope, and both ends of a connection,
  sans I/O;
* `mux` — NRI's connection multiplexer: its codec, and `Mux` over a trio stream;
* `api` — NRI's API messages decoded into records, the plugin's (empty) replies encoded: the
  only module here that touches NRI's protobuf classes;
* `events` — the records: `PodSandboxEvent`, `ContainerEvent`, `Synchronized` (plain data);
* `plugin` — `NriPlugin`: connect, register, answer at once, queue, reconnect.

The watcher reads `NriPlugin.events` and turns them into the index's inputs
(`watcher.nri_source`, `Loop.follow_nri`).
"""

from .errors import BadMessage, ConnectionCut, LateReply, ProtocolError, RegistrationError
from .events import (
    Container,
    ContainerEvent,
    ContainerState,
    EventKind,
    Mount,
    NriItem,
    PodSandbox,
    PodSandboxEvent,
    Synchronized,
)
from .plugin import NriPlugin, NriStats, open_nri_plugin, serve_nri_plugin

__all__ = [
    "BadMessage",
    "ConnectionCut",
    "Container",
    "ContainerEvent",
    "ContainerState",
    "EventKind",
    "LateReply",
    "Mount",
    "NriItem",
    "NriPlugin",
    "NriStats",
    "PodSandbox",
    "PodSandboxEvent",
    "ProtocolError",
    "RegistrationError",
    "Synchronized",
    "open_nri_plugin",
    "serve_nri_plugin",
]
