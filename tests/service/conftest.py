"""`ws-watcher serve` and its clients against the rig's real, private containerd.

As in tests/integration: every test that needs containerd is marked ``containerd`` and none
is skipped (a missing root or containerd is an error). The pure tests of the feed and its
fan-out (`PURE`) need neither.

Fixtures:

* `serve` starts the service in this process (`serve_node` in the test's nursery, against
  the rig's containerd) and hands back its `Serving`; `http` is an httpx client (on trio) on
  its unix socket;
* `serve_cli` starts `python -m watcher serve` as a subprocess and waits for its
  `{"event": "serving"}` line (no sleeping: its stdout is read with a deadline).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from serve_process import ServeProcess

from watcher.service.server import Serving, serve_node
from watcher.settings import ServiceSettings, Settings
from watcher.testing import PrivateContainerd

_HERE = Path(__file__).parent
#: the tests that need no containerd
PURE = {"test_feed.py", "test_fanout.py"}
#: generous: a loaded CI machine; the service answers in milliseconds here
DEADLINE = 20.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents and item.path.name not in PURE:
            item.add_marker(pytest.mark.containerd)


ServeFactory = Callable[..., AbstractAsyncContextManager[Serving]]


def settings_for(ctrd: PrivateContainerd) -> Settings:
    """The watcher's settings for the rig: back within a tenth of a second of containerd."""
    return Settings(address=ctrd.address, backoff_initial=0.02, backoff_max=0.2)


@pytest.fixture
def socket_path(sockdir: str) -> str:
    return os.path.join(sockdir, "run", "api.sock")


@pytest.fixture
async def serve(
    containerd: PrivateContainerd, socket_path: str, nursery: trio.Nursery
) -> AsyncIterator[Callable[..., Any]]:
    """`await serve(**service_settings)`: a service in this process, until the test ends."""

    async def start(**service: Any) -> Serving:
        service.setdefault("socket", socket_path)
        serving: Serving = await nursery.start(
            serve_node, settings_for(containerd), ServiceSettings(**service)
        )
        return serving

    yield start


@pytest.fixture
async def http(socket_path: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the service's unix socket (start the service first)."""
    transport = httpx.AsyncHTTPTransport(uds=socket_path, retries=0)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://ws-watcher", timeout=DEADLINE
    ) as client:
        yield client


@pytest.fixture
def serve_cli(containerd: PrivateContainerd) -> Iterator[Callable[..., ServeProcess]]:
    """`serve_cli(*args)`: `ws-watcher serve --address <rig> ARGS`; killed after the test."""
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        argv = [sys.executable, "-m", "watcher", "serve", "--address", containerd.address, *args]
        process = ServeProcess(argv)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
