"""ws-watcher: a containerd-native, event-driven watcher of Kubernetes workspace pods.

The public API, re-exported flat. Resolved lazily so that the pure core (`watcher.index`,
`watcher.labels`, ...) imports without pulling in grpc and trio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .containerd_records import ImageInfo, TaskRecord
    from .errors import (
        Code,
        ConnectError,
        ContainerdError,
        Gone,
        NoCgroup,
        NotFound,
        NotResolved,
        RemoteError,
        UnknownId,
        UsageError,
        WatcherError,
    )
    from .labels import GITPOD_SCHEMES, LabelScheme
    from .published import (
        ChangeKind,
        Disconnected,
        Lagged,
        Synced,
        Workspace,
        WorkspaceChange,
        WorkspaceState,
    )
    from .watcher import Settings, Watcher, open_watcher

_EXPORTS = {
    "Lagged": "published",
    "Code": "errors",
    "ConnectError": "errors",
    "Gone": "errors",
    "RemoteError": "errors",
    "UnknownId": "errors",
    "ContainerdError": "errors",
    "NoCgroup": "errors",
    "NotFound": "errors",
    "NotResolved": "errors",
    "UsageError": "errors",
    "WatcherError": "errors",
    "GITPOD_SCHEMES": "labels",
    "LabelScheme": "labels",
    "ChangeKind": "published",
    "Disconnected": "published",
    "ImageInfo": "containerd_records",
    "Synced": "published",
    "TaskRecord": "containerd_records",
    "Workspace": "published",
    "WorkspaceChange": "published",
    "WorkspaceState": "published",
    "Settings": "watcher",
    "Watcher": "watcher",
    "open_watcher": "watcher",
}

__all__ = [
    "GITPOD_SCHEMES",
    "ChangeKind",
    "Code",
    "ConnectError",
    "ContainerdError",
    "Disconnected",
    "Gone",
    "ImageInfo",
    "LabelScheme",
    "Lagged",
    "NoCgroup",
    "NotFound",
    "NotResolved",
    "RemoteError",
    "Settings",
    "Synced",
    "TaskRecord",
    "UnknownId",
    "UsageError",
    "Watcher",
    "WatcherError",
    "Workspace",
    "WorkspaceChange",
    "WorkspaceState",
    "open_watcher",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'watcher' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
