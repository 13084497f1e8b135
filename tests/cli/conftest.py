"""The `ws-watcher` executable as a subprocess, against the rig's private containerd.

The `containerd` and `pods` fixtures are the rig's own (``watcher.testing.fixtures``), as in
``tests/integration``; every test here is marked ``containerd`` and none is skipped. The
`ws_watcher` fixture starts the command (``python -m watcher``) and reads its stdout line by
line with deadlines: no sleeping for synchronisation.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from running import DEADLINE, Running

__all__ = ["Running", "WsWatcher", "native_ws_watcher", "ws_watcher"]

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.containerd)


class WsWatcher:
    """Starts `ws-watcher ARGS --address <the rig's socket>` (unless `address=None`)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.started: list[Running] = []

    def start(
        self, *args: str, address: str | None = "", prefix: Sequence[str] = (), **popen: Any
    ) -> Running:
        """`prefix` runs it through another program (e.g. setpriv)."""
        argv = [*prefix, sys.executable, "-m", "watcher", *args]
        if address is not None:
            argv += ["--address", address or self.address]
        return self.spawn(*argv, **popen)

    def spawn(self, *argv: str, **popen: Any) -> Running:
        """Start any program (an example script); killed at the end of the test."""
        env = dict(os.environ)
        env.pop("CONTAINERD_ADDRESS", None)
        env.pop("CONTAINERD_NAMESPACE", None)
        running = Running(argv, env=env, **popen)
        self.started.append(running)
        return running

    def run(self, *args: str, address: str | None = "", timeout: float = DEADLINE,
            prefix: Sequence[str] = (), **popen: Any) -> tuple[int, list[str], str]:  # fmt: skip
        """Run to the end: (exit status, stdout lines, stderr)."""
        running = self.start(*args, address=address, prefix=prefix, **popen)
        code = running.wait(timeout)
        return code, running.rest(), running.stderr


def _started_on(address: str) -> Iterator[WsWatcher]:
    made = WsWatcher(address)
    try:
        yield made
    finally:
        for running in made.started:
            running.kill()


@pytest.fixture
def ws_watcher(containerd: Any) -> Iterator[WsWatcher]:
    yield from _started_on(containerd.address)


@pytest.fixture
def native_ws_watcher(native_containerd: Any) -> Iterator[WsWatcher]:
    """`ws_watcher` on the rig's containerd whose CRI snapshotter is `native`."""
    yield from _started_on(native_containerd.address)
