"""A program run as a subprocess for tests (tests/ is on sys.path, as for `record_builders`):
its stdout lines on a queue, read with deadlines, its stderr kept. No sleeping for
synchronisation: a test reads the line it waits for, or fails at the deadline.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["DEADLINE", "Running"]

#: generous: a loaded CI machine; the commands answer in well under a second here
DEADLINE = 20.0


class Running:
    """A started `ws-watcher`: its stdout lines arrive on a queue, read with deadlines."""

    def __init__(self, argv: Sequence[str], **popen: Any) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **popen,
        )
        self.lines: list[str] = []  # every stdout line read so far
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._err_queue: queue.Queue[str | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=self._pump_err, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)
            self._err_queue.put(line)
        self._err_queue.put(None)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def line(self, timeout: float = DEADLINE) -> str:
        """The next stdout line; fails at the deadline or at end of output."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no output line within {timeout}s from {self.argv}; stderr:\n{self.stderr}"
            ) from None
        if line is None:
            self._queue.put(None)  # stays at end of output
            raise AssertionError(f"{self.argv} ended its output; stderr:\n{self.stderr}")
        self.lines.append(line)
        return line

    def event(self, timeout: float = DEADLINE) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.line(timeout))
        return obj

    def until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = DEADLINE
    ) -> list[dict[str, Any]]:
        """Read JSON lines until one satisfies `predicate`; all of them, that one last."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            obj = self.event(max(0.0, deadline - time.monotonic()))
            seen.append(obj)
            if predicate(obj):
                return seen

    def stderr_line(self, needle: str, timeout: float = DEADLINE) -> None:
        """Wait for a stderr line containing `needle` (a log line used as a sync point)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._err_queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no {needle!r} on stderr:\n{self.stderr}")
            if needle in line:
                return

    def wait(self, timeout: float = DEADLINE) -> int:
        """The exit status; the output readers have finished."""
        code = self.proc.wait(timeout)
        for t in self._threads:
            t.join(timeout)
        return code

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def rest(self) -> list[str]:
        """The remaining stdout lines (after the process ended)."""
        out = []
        while (line := self._queue.get(timeout=DEADLINE)) is not None:
            out.append(line)
        self._queue.put(None)
        self.lines += out
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
