"""`ws-watcher serve` as a subprocess, for tests (tests/ is on sys.path, as for
`record_builders`): its `{"event": "serving"}` line read with a deadline, its stderr kept, its
end awaited.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from typing import Any

#: generous: a loaded CI machine; the service starts in well under a second here
DEADLINE = 20.0


class ServeProcess:
    """A `ws-watcher serve` subprocess: its serving line, its stderr, its end."""

    def __init__(self, argv: list[str]) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CONTAINERD_", "WS_WATCHER_SERVER"))
        }
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=self._pump_err, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def serving(self, timeout: float = DEADLINE) -> dict[str, Any]:
        """The `{"event": "serving", ...}` line: the API answers from now on."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"serve did not start within {timeout}s:\n{self.stderr}") from None
        if line is None:
            self.wait()
            raise AssertionError(f"serve ended ({self.proc.returncode}):\n{self.stderr}")
        obj: dict[str, Any] = json.loads(line)
        assert obj["event"] == "serving", obj
        return obj

    def stop(self, signum: int = signal.SIGTERM, timeout: float = DEADLINE) -> int:
        self.proc.send_signal(signum)
        return self.wait(timeout)

    def wait(self, timeout: float = DEADLINE) -> int:
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
