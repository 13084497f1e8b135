"""Lines to standard output from a worker thread: a reader that stops reading never blocks
the trio loop.

A pipe whose reader is stuck fills up, and a `write` to it blocks. Done on the event loop,
that froze the whole watcher (no calls to containerd, no health checks, no reaction to
SIGTERM). Here each batch of lines is written by one worker thread with `os.write` (no
buffer of Python's left to flush at exit), and the caller awaits it: while it waits, the
changes queue up in the library's bounded per-follower buffer, whose oldest are dropped with
a `Lagged` in their place (`Watcher.changes()`); the watcher itself never waits for us.

A batch that provably cannot block — at most `PIPE_BUF` bytes to a pipe that polls
writable — is written on the loop at once: the hand-off to a thread and back costs about a
millisecond a line on a busy node (0.85 ms median measured in `watch`), and a pipe is what
`watch`'s output is read through (`| jq`, a supervisor). Linux reports a pipe writable
while it has a free page, and a write of at most `PIPE_BUF` bytes to it is whole and atomic.

Cancellation abandons a write that blocks (the thread stays blocked until the reader reads
or goes; the process can still exit: trio's worker threads are daemons). A reader that went
away raises `BrokenPipeError`, which `main` turns into exit 0.
"""

from __future__ import annotations

import os
import select
import stat
import sys
from collections.abc import Sequence
from typing import TextIO

import trio

__all__ = ["LineWriter"]


class LineWriter:
    """Synopsis: ``await LineWriter().write(["one line", "another"])``.

    Writes to `sys.stdout` as it is at the time of each write: its file descriptor when it
    has one, else (a test's captured stdout) its `write`.
    """

    def __init__(self) -> None:
        # one writer at a time keeps lines whole and in order
        self._limiter = trio.CapacityLimiter(1)

    async def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        text = "\n".join(lines) + "\n"
        stream = sys.stdout
        # a write still in a thread (abandoned by a cancel) goes first: no overtaking it
        if not self._limiter.borrowed_tokens and _write_if_room(stream, text):
            return
        await trio.to_thread.run_sync(
            _write, stream, text, limiter=self._limiter, abandon_on_cancel=True
        )


def _fd(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None


def _write_if_room(stream: TextIO, text: str) -> bool:
    """Write `text` now if that cannot block (see the module's docstring); False if not
    tried, which leaves it to the thread."""
    data = text.encode("utf-8", "surrogateescape")
    fd = _fd(stream)
    if fd is None or len(data) > select.PIPE_BUF or not stat.S_ISFIFO(os.fstat(fd).st_mode):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    if not any(events & select.POLLOUT for _, events in poller.poll(0)):
        return False  # full: the thread waits for room
    stream.flush()  # empty: every line of ours comes through here
    os.write(fd, data)  # whole: a pipe takes at most PIPE_BUF bytes atomically
    return True


def _write(stream: TextIO, text: str) -> None:  # in the worker thread
    fd = _fd(stream)
    if fd is None:
        stream.write(text)
        stream.flush()
        return
    stream.flush()  # anything written through the stream before us goes first
    view = memoryview(text.encode("utf-8", "surrogateescape"))
    while view:
        view = view[os.write(fd, view) :]
