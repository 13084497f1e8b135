"""`ws-watcher serve` as a subprocess, for tests (tests/ is on sys.path, as for
`record_builders`): its `{"event": "serving"}` line read with a deadline, its stderr kept, its
end awaited.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from running import DEADLINE, Running


class ServeProcess(Running):
    """A `ws-watcher serve` subprocess: its serving line, its stderr, its end."""

    def __init__(self, argv: list[str]) -> None:
        # what the test passes, not what the shell that started pytest had set
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CONTAINERD_", "WS_WATCHER_SERVER"))
        }
        super().__init__(argv, env=env)

    def serving(self, timeout: float = DEADLINE) -> dict[str, Any]:
        """The `{"event": "serving", ...}` line: the API answers from now on."""
        obj = self.event(timeout)
        assert obj["event"] == "serving", obj
        return obj

    def stop(self, signum: int = signal.SIGTERM, timeout: float = DEADLINE) -> int:
        self.signal(signum)
        return self.wait(timeout)
