"""The one exception hierarchy of ws-watcher: every error the library raises on purpose
derives from `WatcherError`, on one of two sides, as in h11:

* `UsageError` — the caller's mistake: a bad address or setting, an id that is not one, an
  unknown id (`UnknownId`), a call the read-only client refuses;
* `RemoteError` — containerd, or the node, did not do what it should: unreachable or not
  containerd (`ConnectError`), an answer that is an error (`ContainerdError`; `Gone` when it
  says the thing does not exist), data we cannot read (`CgroupPathError`).

Beside them, `NotResolved` and `NoCgroup`: a known workspace lacks the fact asked for. And
`NotFound`, the base of `UnknownId` and `Gone`, for callers to whom "not there" is one case.

gRPC errors never leave the client module: they become these, with their status as a `Code`
and the grpc error chained as the cause. Programming errors (a wrong type) stay `TypeError`.
"""

from __future__ import annotations

import enum

__all__ = [
    "CgroupPathError",
    "Code",
    "ConnectError",
    "ContainerdError",
    "Gone",
    "NoCgroup",
    "NotFound",
    "NotResolved",
    "ReadOnlyViolation",
    "RemoteError",
    "UnknownId",
    "UsageError",
    "WatcherError",
]


class Code(enum.Enum):
    """gRPC status codes, as containerd answers them (the names of grpc.StatusCode)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class WatcherError(Exception):
    """Base of every error ws-watcher raises on purpose."""


# --- the caller's side -------------------------------------------------------------------


class UsageError(WatcherError):
    """The caller asked for something impossible (bad input, wrong configuration)."""


class ReadOnlyViolation(UsageError):
    """The client was asked for an RPC outside its read-only allow-list (`ALLOWED_RPCS` in
    `watcher.client`): refused before anything was sent, so containerd never saw it."""


class NotFound(WatcherError, LookupError):
    """Not there: an unknown id (`UnknownId`) or what containerd says is gone (`Gone`)."""


class UnknownId(UsageError, NotFound):
    """No such workspace container or instance in the index (on this node, now)."""


# --- containerd's and the node's side ----------------------------------------------------


class RemoteError(WatcherError):
    """containerd, or the node, misbehaved. `code`: the gRPC status, when a call said it."""

    def __init__(self, message: str, *, code: Code | None = None) -> None:
        super().__init__(message)
        self.code = code


class ConnectError(RemoteError):
    """containerd cannot be reached at the configured address, or what answers is not it.

    The message says why in words a user can act on (socket missing, permission denied, not
    a socket, nothing answering, not containerd).
    """


class ContainerdError(RemoteError):
    """containerd answered, but with an error we do not handle."""


class Gone(ContainerdError, NotFound):
    """containerd says there is no such container, task, snapshot or image (any more)."""


class CgroupPathError(RemoteError, ValueError):
    """A spec's `linux.cgroupsPath` that is not one (neither a path nor a systemd triple)."""


# --- neither: a fact not known -----------------------------------------------------------


class NoCgroup(WatcherError):
    """The workspace is known, but its cgroup path is not (spec missing or unreadable)."""


class NotResolved(WatcherError):
    """The workspace is known, but the asked-for fact is not resolved (yet, or ever)."""
