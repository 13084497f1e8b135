"""Lines to standard output from a worker thread: a reader that stops reading never blocks
the trio loop.

A pipe whose reader is stuck fills up, and a `write` to it blocks. Done on the event loop,
that froze the whole watcher (no calls to containerd, no health checks, no reaction to
SIGTERM). Here each batch of lines is written by one worker thread with `os.write` (no
buffer of Python's left to flush at exit), and the caller awaits it: while it waits, the
changes queue up in the library's bounded per-follower buffer, whose oldest are dropped with
a `Lagged` in their place (`Watcher.changes()`); the watcher itself never waits for us.

Cancellation abandons a write that blocks (the thread stays blocked until the reader reads
or goes; the process can still exit: trio's worker threads are daemons). A reader that went
away raises `BrokenPipeError`, which `main` turns into exit 0.
"""

from __future__ import annotations

import os
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
        await trio.to_thread.run_sync(
            _write, sys.stdout, text, limiter=self._limiter, abandon_on_cancel=True
        )


def _write(stream: TextIO, text: str) -> None:  # in the worker thread
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        stream.write(text)
        stream.flush()
        return
    stream.flush()  # anything written through the stream before us goes first
    view = memoryview(text.encode("utf-8", "surrogateescape"))
    while view:
        view = view[os.write(fd, view) :]
