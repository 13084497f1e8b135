"""The one exception hierarchy of ws-watcher.

Two sides, as in h11: `UsageError` is "you asked for something that cannot be" (bad address,
unknown id); `ContainerdError` is "containerd, or whatever answers on the socket, did not do
what containerd does". grpc exceptions never leave the client module: they become these.
"""

from __future__ import annotations


class WatcherError(Exception):
    """Base of every error ws-watcher raises on purpose."""


class UsageError(WatcherError):
    """The caller asked for something impossible (bad input, wrong configuration)."""


class ReadOnlyViolation(UsageError):
    """The client was asked for an RPC outside its read-only allow-list (`ALLOWED_RPCS` in
    `watcher.client`): refused before anything was sent, so containerd never saw it."""


class ConnectError(WatcherError):
    """containerd cannot be reached at the configured address.

    The message says why in words a user can act on (socket missing, permission denied, not
    a socket, nothing answering, not containerd). `code` is the gRPC status name when the
    error came from a call.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ContainerdError(WatcherError):
    """containerd answered, but with an error we do not handle (carries the gRPC code name)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class NotFound(WatcherError, LookupError):
    """No such container, workspace or instance (in the index, or in containerd)."""


class NoCgroup(WatcherError):
    """The workspace is known, but its cgroup path is not (spec missing or unreadable)."""


class NotResolved(WatcherError):
    """The workspace is known, but the asked-for fact is not resolved (yet, or ever)."""
