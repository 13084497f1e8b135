"""The feed kept in step with the watcher, and HTTP followers woken as it grows.

Synopsis::

    fanout = Fanout(watcher, stream, history=4096, batch=256, encode=encode)
    nursery.start_soon(fanout.run)               # the watcher's changes → the feed
    cursor, first = fanout.feed.start(since=None, epoch=None, initial=False, now=now)
    while (step := await fanout.next(cursor)) is not None:
        cursor, lines = step                     # send them; a slow send delays nobody else

One subscription to the watcher (`Watcher.changes()`, taken before the watcher's first
sync so the feed starts with it) fills the feed; every HTTP follower reads the feed by its
own cursor. The pump never waits for a follower: `next` only reads. A follower that was
busy sending while the feed moved on more than `history` changes gets a `resync_required`
line and goes on from the newest change: it is told, not silently short.

Cancellation: `run` ends when the watcher closes its followers (shutdown) or is cancelled;
either way `next` then answers None, and the streams end.
"""

from __future__ import annotations

import logging
import secrets
import time

import trio

from watcher.changes import ChangeStream
from watcher.published import ChangeKind, Lagged, WorkspaceChange, WorkspaceState
from watcher.watcher import Watcher

from .feed import Behind, Encode, Feed

__all__ = ["Fanout"]

log = logging.getLogger("watcher.service")

_KIND_OF_STATE = {
    WorkspaceState.CREATED: ChangeKind.CREATED,
    WorkspaceState.RUNNING: ChangeKind.RUNNING,
    WorkspaceState.EXITED: ChangeKind.EXITED,
}


class Fanout:
    def __init__(
        self,
        watcher: Watcher,
        changes: ChangeStream,
        *,
        history: int,
        batch: int,
        encode: Encode,
        epoch: str | None = None,
    ) -> None:
        self._watcher = watcher
        self._changes = changes
        self._batch = batch
        #: a feed of its own per process: its numbers mean nothing to another one
        self.feed = Feed(history=history, encode=encode, epoch=epoch or secrets.token_hex(8))
        self._grown = trio.lowlevel.ParkingLot()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Move the watcher's changes into the feed until the watcher closes; then wake
        every follower so that it ends."""
        task_status.started()
        try:
            async for first in self._changes:
                # what queued while we were away, in one go: one wake-up per burst
                for change in (first, *self._changes.take_ready()):
                    if isinstance(change, Lagged):
                        self._lost(change)
                    else:
                        self.feed.append(change)
                self._grown.unpark_all()
        finally:
            self._closed = True
            self._grown.unpark_all()

    def _lost(self, lagged: Lagged) -> None:
        # cannot happen short of a trio loop starved for `change_buffer` changes: the feed is
        # fed by this task alone and appending never waits; said loudly if it ever does
        log.warning(
            "the API's feed missed %d changes; its followers are told to re-list", lagged.missed
        )
        now = time.time()
        self.feed.lose(
            WorkspaceChange(kind=_KIND_OF_STATE[ws.state], ts=now, workspace=ws)
            for ws in self._watcher.workspaces().values()
        )

    async def next(self, cursor: int, *, initial: bool = False) -> tuple[int, list[bytes]] | None:
        """Wait for changes after `cursor`; the new cursor and their lines (a batch at
        most), or a `resync_required` line when some are no longer held (followed, for a
        follower that asked for the `initial` state, by the state now). None once the feed
        has ended (the server is stopping)."""
        while self.feed.head <= cursor:
            if self._closed:
                return None
            await self._grown.park()
        got = self.feed.after(cursor, self._batch)
        if isinstance(got, Behind):
            return got.head, self.feed.resync(got, since=cursor, initial=initial, now=time.time())
        return got[-1].seq, [entry.line for entry in got]
