"""Fan-out of lifecycle changes to any number of followers, none of whom can stall the rest.

Synopsis::

    hub = ChangeHub(buffer=1000)
    with hub.subscribe() as changes:   # registered at once: nothing published after is missed
        hub.publish(change)            # synchronous, never blocks the publisher
        async for change in changes:
            ...

Each follower has its own bounded buffer. A follower that falls more than `buffer` changes
behind loses the oldest of them and receives one `Lagged` (saying how many it missed) in their
place, ahead of the newest ones; it can then read the current state from the watcher's
`workspaces()`. The publisher (the watcher) never waits for anybody.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from .metrics import Metrics
from .published import Change, Lagged
from .settings import CHANGE_BUFFER


class ChangeStream:
    """One follower's view: an async iterator of `Change` (and `Lagged`) objects."""

    def __init__(self, buffer: int, metrics: Metrics) -> None:
        self._queue: deque[Change | Lagged] = deque()
        self._buffer = buffer
        self._metrics = metrics
        self._missed = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False

    def _push(self, change: Change) -> None:
        if len(self._queue) >= self._buffer:
            dropped = self._queue.popleft()
            if not isinstance(dropped, Lagged):
                self._missed += 1
                self._metrics.lost()
        self._queue.append(change)
        self._lot.unpark_all()

    def close(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> Change | Lagged:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            await self._lot.park()
        await trio.lowlevel.checkpoint()
        return self._take()

    def _take(self) -> Change | Lagged:
        if self._missed:
            missed, self._missed = self._missed, 0
            return Lagged(ts=getattr(self._queue[0], "ts", 0.0), missed=missed)
        return self._queue.popleft()

    def take_ready(self) -> list[Change | Lagged]:
        """Everything queued now, without waiting (a `Lagged` first if changes were lost):
        a consumer that writes in batches takes the rest of a burst with one call."""
        out: list[Change | Lagged] = []
        while self._queue:
            out.append(self._take())
        return out


class ChangeHub:
    def __init__(self, buffer: int = CHANGE_BUFFER, metrics: Metrics | None = None) -> None:
        if buffer < 1:
            raise ValueError("a follower's buffer holds at least one change")
        self._buffer = buffer
        self._metrics = metrics or Metrics()
        self._streams: set[ChangeStream] = set()

    @contextmanager
    def subscribe(self) -> Iterator[ChangeStream]:
        stream = ChangeStream(self._buffer, self._metrics)
        self._streams.add(stream)
        try:
            yield stream
        finally:
            self._streams.discard(stream)
            stream.close()

    def publish(self, change: Change) -> None:
        self._metrics.published(change)
        for stream in self._streams:
            stream._push(change)

    def close(self) -> None:
        """End every follower's iteration (the watcher is shutting down)."""
        for stream in self._streams:
            stream.close()

    @property
    def followers(self) -> int:
        return len(self._streams)
