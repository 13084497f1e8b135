"""The resumable feed: every change numbered, the newest of them held for followers that
reconnect, and the state they add up to.

Synopsis::

    feed = Feed(history=4096, encode=encode, epoch="3f2a...")
    entry = feed.append(change)              # entry.seq: 1, 2, 3, ...
    cursor, lines = feed.start(since=None, epoch=None, initial=True, now=now)
    got = feed.after(cursor, limit=256)      # the entries after cursor, or Behind

The feed is the one buffer of every HTTP follower: each follower is a cursor (the last
`seq` it was sent), so a slow or stuck one costs a number, not a copy of the changes, and
nobody ever waits for it. One that falls further behind than `history` is told so
(`Behind`, then a `resync_required` line) instead of silently missing changes — etcd's
"required revision has been compacted", in the form of a line.

A gap (`lose`): changes that never reached the feed (its own subscription to the watcher
lagged) take one sequence number of their own and empty the history, so every follower,
even one that was up to date, is told to re-list rather than step over them.

Every `resync_required` line the feed makes is counted by its cause (`resyncs`): what the
service's followers lost, for its metrics.

Rules: pure (no I/O, no clock: `now` is passed in, no trio); `seq` grows by one per change
and never repeats within a feed; a feed is named by its `epoch`, new per server process, so
numbers of another feed are never taken for this one's.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from watcher.containerd_records import ContainerId
from watcher.published import Change, ChangeKind, WorkspaceChange
from watcher.wire import JSON, dumps

from .protocol import RESYNC_REQUIRED, SEQ

__all__ = ["Behind", "Cause", "Encode", "Entry", "Feed", "line"]

#: a change as a line of the stream: `encode(change, seq)` (`seq` None: a line of the
#: initial state, which is not a change of the feed)
Encode = Callable[[Change, int | None], bytes]


def line(obj: JSON) -> bytes:
    """One line of the stream."""
    return (dumps(obj) + "\n").encode("ascii")


@dataclass(frozen=True, slots=True)
class Entry:
    """One change of the feed, with its number and its line (encoded once, sent to all)."""

    seq: int
    change: Change
    line: bytes


class Cause(enum.Enum):
    """Why a follower cannot resume exactly (the `cause` of `ws_watcher_api_resyncs_total`)."""

    #: it read slower than the feed grew, by more than the history, while connected
    BEHIND = "behind"
    #: it came back (`since=N`) after the changes it missed had left the history
    EXPIRED = "expired"
    #: the feed itself missed changes after its number (`Feed.lose`)
    GAP = "gap"
    #: its number is of another feed: the server restarted
    RESTARTED = "restarted"
    #: its number is ahead of this feed's newest (a client's mistake, or a restart it did
    #: not name the feed for)
    AHEAD = "ahead"


@dataclass(frozen=True, slots=True, kw_only=True)
class Behind:
    """A follower cannot resume exactly: what it needs is no longer (or never was) here."""

    #: where it goes on from
    head: int
    reason: str
    cause: Cause


class Feed:
    """See the module's synopsis. `history`: how many of the newest changes are held."""

    def __init__(self, *, history: int, encode: Encode, epoch: str) -> None:
        if history < 1:
            raise ValueError("a feed holds at least one change")
        self.epoch = epoch
        self._encode = encode
        self._entries: deque[Entry] = deque(maxlen=history)
        self._head = 0
        #: the `seq` of the newest gap (`lose`; 0: none)
        self._gap = 0
        #: `resync_required` lines made, by cause (every cause there from the start, at 0)
        self.resyncs: dict[Cause, int] = dict.fromkeys(Cause, 0)
        #: the newest change of each container not removed, in order of first appearance:
        #: the state at `head`, what a fresh follower with `initial` is sent first
        self._state: dict[ContainerId, WorkspaceChange] = {}

    @property
    def head(self) -> int:
        """The `seq` of the newest change (0: none yet)."""
        return self._head

    @property
    def oldest(self) -> int:
        """The `seq` of the oldest change held (`head + 1` when none is)."""
        return self._entries[0].seq if self._entries else self._head + 1

    def append(self, change: Change) -> Entry:
        self._head += 1
        entry = Entry(self._head, change, self._encode(change, self._head))
        self._entries.append(entry)  # the deque drops the oldest beyond `history`
        if isinstance(change, WorkspaceChange):
            cid = change.workspace.container_id
            if change.kind is ChangeKind.REMOVED:
                self._state.pop(cid, None)
            else:
                self._state[cid] = change
        return entry

    def lose(self, state: Iterable[WorkspaceChange]) -> None:
        """Changes were lost before they reached the feed: a gap of one `seq` that no
        follower can step over. `state`: the watcher's state now, to start again from."""
        self._head += 1
        self._gap = self._head
        self._entries.clear()
        self._state = {c.workspace.container_id: c for c in state}

    def state(self) -> list[WorkspaceChange]:
        """The state at `head`: each container's newest change (none of them `removed`)."""
        return list(self._state.values())

    def instances(self) -> int:
        """How many workspace instances the state holds (a `synced` line's `workspaces`)."""
        return len({c.workspace.instance_id for c in self._state.values()})

    def resume(self, since: int, epoch: str | None) -> int | Behind:
        """The cursor of a follower resuming after `since` of feed `epoch` (None: ours)."""
        if epoch is not None and epoch != self.epoch:
            return Behind(
                head=self._head, reason="the server restarted (a new feed)", cause=Cause.RESTARTED
            )
        if since > self._head:
            return Behind(
                head=self._head, reason=f"seq {since} is ahead of this feed", cause=Cause.AHEAD
            )
        if since < self.oldest - 1:
            return self._not_held(since, Cause.EXPIRED)
        return since

    def after(self, cursor: int, limit: int) -> list[Entry] | Behind:
        """Up to `limit` entries after `cursor`, oldest first ([] when there are none yet);
        `Behind` when some are no longer held."""
        if cursor < self.oldest - 1:
            return self._not_held(cursor, Cause.BEHIND)
        start = cursor - self.oldest + 1
        return list(itertools.islice(self._entries, start, start + limit))

    def _not_held(self, cursor: int, cause: Cause) -> Behind:
        """Behind: the changes after `cursor` are gone, from the history (`cause`) or by a
        gap after it (which alone would have sent any follower to re-list)."""
        return Behind(
            head=self._head,
            reason=f"the changes after seq {cursor} are no longer held",
            cause=Cause.GAP if cursor < self._gap else cause,
        )

    # --- the lines that open a stream ------------------------------------------------------

    def start(
        self, *, since: int | None, epoch: str | None, initial: bool, now: float
    ) -> tuple[int, list[bytes]]:
        """A new follower's cursor and first lines.

        Fresh (`since` None): the state first when `initial`, then a `synced` line at `head`.
        Resuming: nothing, when the changes after `since` are held; else a `resync_required`
        line (followed, with `initial`, by the state and a `synced` line, so the follower
        can rebuild from the stream itself).
        """
        if since is None:
            return self._head, self.opening(initial=initial, now=now)
        resumed = self.resume(since, epoch)
        if isinstance(resumed, Behind):
            return resumed.head, self.resync(resumed, since=since, initial=initial, now=now)
        return resumed, []

    def opening(self, *, initial: bool, now: float) -> list[bytes]:
        """The state (with `initial`) and a `synced` line at `head`."""
        lines = [self._encode(c, None) for c in self.state()] if initial else []
        synced: JSON = {
            SEQ: self._head,
            "event": "synced",
            "ts": now,
            "workspaces": self.instances(),
        }
        return [*lines, line(synced)]

    def resync(
        self, behind: Behind, *, since: int | None, initial: bool, now: float
    ) -> list[bytes]:
        """The `resync_required` line for a follower that cannot resume, and with `initial`
        what it needs to rebuild its state. Counted in `resyncs`."""
        self.resyncs[behind.cause] += 1
        marker: JSON = {
            SEQ: behind.head,
            "event": RESYNC_REQUIRED,
            "ts": now,
            "since": since,
            "reason": behind.reason,
        }
        return [line(marker), *(self.opening(initial=True, now=now) if initial else [])]
