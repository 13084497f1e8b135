"""The HTTP API of `ws-watcher serve`: its contract, written once for the server and its client.

Routes (all `GET`, all JSON; the workspace objects and `watch` lines are `watcher.wire`'s,
the CLI's own):

* `/v1/workspaces` — `ws-watcher ls --json`: every workspace, newest container per instance;
* `/v1/workspaces/{id}` — `ws-watcher inspect ID`: by instance id or container id
  (`details=0`: without the task and image, which are asked of containerd);
* `/v1/workspaces/{instance_id}/wait?for=running|gone&timeout=60s` — `ws-watcher wait` and
  `wait-stop` as a long poll;
* `/v1/watch?since=N&initial=1` — `ws-watcher watch` as JSON lines, each with a `seq`;
* `/healthz`, `/readyz`, `/metrics` — probes and Prometheus.

Errors are `{"error": "<one line>", "code": "<ErrorCode>"}` with the status `STATUS` gives:
a client branches on `code`, people read `error`.

The feed (`/v1/watch`): every change the watcher publishes gets the next sequence number,
`seq`, and the server holds the newest `FEED_HISTORY` of them. A follower that reconnects
with `since=N` (the last `seq` it read) and the feed id it was served (`feed=`, from the
`X-WS-Watcher-Feed` header: a restarted server has a new one) gets exactly the changes after
N; when they are no longer held — or N is of another feed — its first line is
`{"event": "resync_required", ...}` and it should re-list. A fresh follower's stream starts
with a `synced` line that carries the `seq` it starts after; with `initial=1` the
workspaces already there come first, as `watch --initial` prints them, without a `seq`
(they are the state at that `seq`, not changes of the feed).

Pure: no I/O, no trio.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from watcher.durations import parse_seconds
from watcher.errors import UsageError
from watcher.settings import WAIT_TIMEOUT
from watcher.wire import JSON

__all__ = [
    "FEED_HEADER",
    "METRICS",
    "READYZ",
    "STATUS",
    "ErrorCode",
    "ResyncRequired",
    "WaitFor",
    "parse_flag",
    "parse_since",
    "parse_timeout",
]

HEALTHZ: Final = "/healthz"
READYZ: Final = "/readyz"
METRICS: Final = "/metrics"
WORKSPACES: Final = "/v1/workspaces"
WATCH: Final = "/v1/watch"

#: the response header naming the feed a `/v1/watch` stream serves (a new one per server
#: process): a follower resumes with `feed=<it>` so that a restarted server's numbers,
#: which start again, are never taken for the old ones
FEED_HEADER: Final = "x-ws-watcher-feed"
JSON_TYPE: Final = "application/json"
#: JSON lines (newline-delimited JSON), as the `watch` command prints them
LINES_TYPE: Final = "application/x-ndjson"

#: a feed line's sequence number
SEQ: Final = "seq"
#: the event of the line that tells a follower to re-list
RESYNC_REQUIRED: Final = "resync_required"


class ErrorCode(enum.Enum):
    """What went wrong, as the `code` of an error body."""

    #: a malformed id, query parameter or value
    BAD_REQUEST = "bad_request"
    #: no workspace instance or container of that id on the node
    UNKNOWN_ID = "unknown_id"
    #: no such route
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    #: a wait's timeout passed first (the workspace is not running / not gone yet)
    TIMEOUT = "timeout"
    #: containerd cannot be reached now (the watcher reconnects by itself)
    UNAVAILABLE = "unavailable"
    #: containerd answered with an error
    CONTAINERD_ERROR = "containerd_error"
    #: `/readyz`: not connected to containerd, or not synced yet
    NOT_READY = "not_ready"
    #: a bug of ours (logged with its traceback)
    INTERNAL = "internal"


#: the HTTP status of each error. A timed-out wait is 504, as the Kubernetes API answers a
#: request it could not complete in time (`reason: Timeout`): distinct from a 404 (no such
#: workspace) and from 503 (containerd unreachable), and not 408, which HTTP keeps for a
#: client too slow to send its request (and which some clients retry by themselves)
STATUS: Final[dict[ErrorCode, int]] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_ID: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.CONTAINERD_ERROR: 502,
    ErrorCode.NOT_READY: 503,
    ErrorCode.INTERNAL: 500,
}


class WaitFor(enum.Enum):
    """What `/v1/workspaces/{id}/wait` waits for: `ws-watcher wait` or `wait-stop`."""

    RUNNING = "running"
    GONE = "gone"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResyncRequired:
    """The feed cannot give this follower what it missed: re-list (`workspaces()`).

    `seq` is where the stream goes on from; `since` what the follower asked to resume
    after (None: a fresh follower that fell behind); `reason` why, in words.
    """

    ts: float
    seq: int
    since: int | None
    reason: str


def parse_since(text: str) -> int:
    """`since=N`: the last `seq` a follower read (0: before the first change)."""
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise UsageError(f"since must be a sequence number (0 or more), not {text[:24]!r}")
    return int(text)


def parse_flag(name: str, text: str) -> bool:
    """`initial=1`: 1/0, true/false, yes/no."""
    value = text.lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise UsageError(f"{name} must be 1 or 0, not {text[:24]!r}")


def parse_timeout(text: str | None) -> float:
    """`timeout=60s` (or seconds, `2m`, ...: `watcher.durations`); `WAIT_TIMEOUT` when absent."""
    return WAIT_TIMEOUT if text is None else parse_seconds("the timeout", text)


def error_body(code: ErrorCode, message: str) -> JSON:
    return {"error": message, "code": code.value}
