"""The watcher against a real containerd that misbehaves (issue 8): SIGKILLed in the middle of
a burst of pod creations and deletions, down for longer than the back-off cap, its socket
replaced by something that is not containerd.

The rig is driven from threads (blocking CRI calls, as the kubelet makes them); the watcher
runs on trio. Waits are on the watcher (`wait_until`, `wait_ready`) or on log records, all
under `trio.fail_after`; the only sleep is the outage itself.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from watcher.published import (
    Change,
    ChangeKind,
    Disconnected,
    Synced,
    Workspace,
    WorkspaceChange,
)
from watcher.testing import labels
from watcher.testing.containerd import PrivateContainerd
from watcher.testing.errors import CRIError
from watcher.testing.pods import Pod, Pods
from watcher.testing.watching import watching
from watcher.watcher import Settings, open_watcher

#: bound on every wait: only reached when something is broken (CI machines are loaded)
WAIT = 60.0
BURST = 30
KILLS = 3
#: CRI attempts per pod operation across the kills, `RETRY` seconds apart
ATTEMPTS = 120
RETRY = 0.25


class LogWaiter(logging.Handler):
    """Collects the watcher's warnings; wakes trio waiters when one contains a needle."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._waiters: list[tuple[str, trio.Event]] = []
        self._token = trio.lowlevel.current_trio_token()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        for needle, event in self._waiters:
            if needle in message:
                with suppress(trio.RunFinishedError):
                    self._token.run_sync_soon(event.set)

    async def wait_for(self, needle: str) -> str:
        event = trio.Event()
        self._waiters.append((needle, event))
        try:
            with trio.fail_after(WAIT):
                await event.wait()
        finally:
            self._waiters.remove((needle, event))
        return next(m for m in reversed(self.messages) if needle in m)


@asynccontextmanager
async def log_waiter() -> AsyncIterator[LogWaiter]:
    handler = LogWaiter()
    logger = logging.getLogger("watcher")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def kinds_of(seen: list[Change], container_id: str) -> list[ChangeKind]:
    return [
        c.kind
        for c in seen
        if isinstance(c, WorkspaceChange) and c.workspace.container_id == container_id
    ]


def summary(workspaces: dict[str, Workspace]) -> dict[str, tuple[str, int | None, bool]]:
    return {iid: (ws.container_id, ws.pid, ws.running) for iid, ws in workspaces.items()}


async def fresh_listing(ctrd: PrivateContainerd) -> dict[str, Workspace]:
    """What containerd holds now, through a new watcher's initial listing."""
    async with open_watcher(settings=Settings(address=ctrd.address)) as fresh:
        return dict(fresh.workspaces())


# --- SIGKILL during a burst ------------------------------------------------------------------


class Burst:
    """`BURST` threads each create one workspace pod (odd ones then delete theirs), retrying
    CRI calls that fail while containerd is down, as the kubelet would; a killer thread SIGKILLs
    and restarts containerd `KILLS` times while they run."""

    def __init__(self, ctrd: PrivateContainerd, pods: Pods) -> None:
        self.ctrd = ctrd
        self.pods = pods
        self.cond = threading.Condition()
        self.progress = 0  # pod operations done
        self.kills_done = 0
        self.kept: dict[str, Pod] = {}  # instance id -> pod
        self.deleted: dict[str, Pod] = {}
        self.abandoned: list[Pod] = []  # half-made pods of failed attempts, removed again
        self.errors: list[BaseException] = []

    def _step_done(self) -> None:
        with self.cond:
            self.progress += 1
            self.cond.notify_all()

    def _retry(self, what: str, fn: Callable[[], Any]) -> Any:
        for _ in range(ATTEMPTS):
            try:
                return fn()
            except CRIError:
                time.sleep(RETRY)  # the kubelet's back-off: containerd is coming back
        raise AssertionError(f"{what}: CRI kept failing")

    def _pod(self, i: int) -> None:
        iid = f"burst-{i}"
        for attempt in range(ATTEMPTS):
            uid = f"00000000-0000-4000-8000-{i:06d}{attempt:06d}"
            try:
                pod = self.pods.run_pod(
                    f"ws-burst-{i}", uid=uid, labels=labels.mk2_labels(iid, f"ws-{i}", "o")
                )
                break
            except CRIError:
                # a half-made pod (the rig's own clean-up failed too) must go before a retry
                half = next((p for p in self.pods.pods if p.uid == uid), None)
                if half is not None:
                    self.abandoned.append(half)
                    self._retry(f"remove half-made {iid}", lambda h=half: self.pods.remove_pod(h))
                time.sleep(RETRY)
        else:
            raise AssertionError(f"{iid}: could not create it")
        self._step_done()
        if i % 2:
            self._retry(f"remove {iid}", lambda: self.pods.remove_pod(pod))
            self.deleted[iid] = pod
            self._step_done()
        else:
            self.kept[iid] = pod

    def _killer(self) -> None:
        total = BURST + BURST // 2
        for k in range(KILLS):
            with self.cond:
                self.cond.wait_for(lambda k=k: self.progress >= total * (k + 1) // (KILLS + 2))
            self.ctrd.kill9()
            self.ctrd.start()
            with self.cond:
                self.kills_done += 1
                self.cond.notify_all()

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            self.errors.append(exc)
            with self.cond:
                self.progress = 10**9  # release the killer
                self.cond.notify_all()

    def run(self) -> None:
        threads = [threading.Thread(target=self._guard, args=(self._killer,))]
        threads += [threading.Thread(target=self._guard, args=(self._pod, i)) for i in range(BURST)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.errors:
            raise self.errors[0]


async def test_sigkill_three_times_during_a_burst(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    async with watching(containerd, backoff_max=0.5) as (w, seen):
        burst = Burst(containerd, pods)
        await trio.to_thread.run_sync(burst.run)
        assert burst.kills_done == KILLS
        expected = set(burst.kept)
        with trio.fail_after(WAIT):  # settles once the last resync and the stream caught up
            await w.wait_until(
                lambda: (
                    True
                    if set(w.workspaces()) == expected
                    and all(ws.running for ws in w.workspaces().values())
                    else None
                )
            )
        fresh = await fresh_listing(containerd)
        await trio.testing.wait_all_tasks_blocked()
        assert summary(dict(w.workspaces())) == summary(fresh)  # type: ignore[arg-type]

    assert sum(isinstance(c, Disconnected) for c in seen) == KILLS
    assert sum(isinstance(c, Synced) and not c.initial for c in seen) >= KILLS
    for iid, pod in burst.kept.items():
        cid = pod.containers["workspace"]
        ws = fresh[iid]
        assert ws.container_id == cid and ws.running
        assert ws.pid is not None and os.path.exists(f"/proc/{ws.pid}")
        assert kinds_of(seen, cid).count(ChangeKind.RUNNING) == 1
        assert ChangeKind.REMOVED not in kinds_of(seen, cid)
    for pod in [*burst.deleted.values(), *burst.abandoned]:
        for cid in pod.containers.values():
            kinds = kinds_of(seen, cid)
            # seen (created) at some point, unless it came and went during an outage
            assert kinds.count(ChangeKind.REMOVED) == (1 if kinds else 0), (cid, kinds)
            assert kinds.count(ChangeKind.CREATED) <= 1
    assert len(burst.deleted) == BURST // 2


# --- a long outage ---------------------------------------------------------------------------


async def test_long_outage_reconnects_within_one_backoff_period(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    cap = 1.0
    pod = await trio.to_thread.run_sync(
        lambda: pods.run_pod("ws-long", labels=labels.mk2_labels("inst-long", "w", "o"))
    )
    async with log_waiter() as logs, watching(containerd, backoff_max=cap) as (w, seen):
        before = w.instance("inst-long")
        await trio.to_thread.run_sync(containerd.kill9)
        with trio.fail_after(WAIT):
            await w.wait_ready(False)
        await trio.sleep(cap * 3)  # the outage itself: several back-off periods at the cap
        assert not await w.is_ready()
        await trio.to_thread.run_sync(containerd.start)
        up = trio.current_time()
        with trio.fail_after(WAIT):
            await w.wait_ready()
        reconnected_after = trio.current_time() - up
        assert reconnected_after <= cap + 2.0, reconnected_after
        await trio.testing.wait_all_tasks_blocked()
        after = w.instance("inst-long")
        assert (after.container_id, after.pid) == (before.container_id, before.pid)
        assert after.container_id == pod.containers["workspace"] and after.running
    assert sum(isinstance(c, Disconnected) for c in seen) == 1
    lost = [m for m in logs.messages if m.startswith("lost containerd")]
    assert len(lost) == 1


# --- something else on the socket ------------------------------------------------------------


@pytest.fixture
def http1_server() -> Iterator[Callable[[str], None]]:
    """Start a plain HTTP/1 server on a unix socket path (reads, answers 400, closes)."""
    servers: list[socket.socket] = []

    def start(path: str) -> None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen()
        servers.append(server)

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn, suppress(OSError):
                    conn.settimeout(5)
                    conn.recv(65536)  # the request (a gRPC client's HTTP/2 preface)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")

        threading.Thread(target=serve, daemon=True).start()

    yield start
    for server in servers:
        with suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()


async def test_socket_replaced_by_something_else(
    containerd: PrivateContainerd, pods: Pods, http1_server: Callable[[str], None]
) -> None:
    await trio.to_thread.run_sync(
        lambda: pods.run_pod("ws-sock", labels=labels.mk1_labels("inst-sock", "w", "o"))
    )
    path = Path(containerd.address)
    async with log_waiter() as logs, watching(containerd, backoff_max=0.2) as (w, seen):
        before = w.instance("inst-sock")
        await trio.to_thread.run_sync(containerd.kill9)
        with trio.fail_after(WAIT):
            await w.wait_ready(False)
        path.unlink()
        http1_server(str(path))
        said = await logs.wait_for("not containerd")
        assert str(path) in said and "gRPC" in said
        assert not await w.is_ready()
        path.unlink()
        path.write_text("not a socket\n")
        said = await logs.wait_for("not a socket")
        assert str(path) in said
        assert not await w.is_ready()
        path.unlink()
        await trio.to_thread.run_sync(containerd.start)
        with trio.fail_after(WAIT):
            await w.wait_ready()
        after = w.instance("inst-sock")
        assert (after.container_id, after.pid) == (before.container_id, before.pid)
        assert after.running
    assert sum(isinstance(c, Disconnected) for c in seen) == 1
    # one warning per distinct cause, not one per attempt
    warned = [m for m in logs.messages if "not containerd" in m or "not a socket" in m]
    assert 2 <= len(warned) <= 4, warned
