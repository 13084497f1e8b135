"""The watcher against the fake containerd, one fault at a time (issue 8).

For every fault: the watcher keeps running, logs (at most) one warning naming the container
where there is one, its index equals what the fake holds once the next resync is done, and
waiters are neither woken falsely nor lost. Each test keeps a *sentinel* waiter for an instance
that never exists (it must still be waiting at the end) next to the waits it expects to return.

No sleeping for synchronisation: waits are on the watcher (`wait_until`, the `Synced` count),
or on the fake (`fake.wait_until`, e.g. for the calls of a relist), all under `trio.fail_after`.
No root or real containerd is needed: the fake only (tests/fake runs alone).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
import trio
import trio.testing
from trio_util import AsyncValue

from containerd_protos.events import container_pb2 as container_events
from containerd_protos.events import task_pb2 as task_events
from containerd_protos.types.task import task_pb2 as task_types
from watcher import loop as loop_module
from watcher.errors import ConnectError, NoCgroup, NotFound
from watcher.published import (
    Change,
    ChangeKind,
    Disconnected,
    Lagged,
    Synced,
    Workspace,
    WorkspaceChange,
)
from watcher.testing.fake import (
    NAMESPACE,
    READ_ONLY_RPCS,
    FakeContainerd,
    FakePod,
    Rpc,
    mk2_labels,
    oci_spec,
)
from watcher.watcher import Settings, Watcher, open_watcher

T = TypeVar("T")

#: bound on every wait: only reached when something is broken (the machine may be loaded)
PATIENCE = 20.0
#: a client deadline short enough that a delayed call runs into it quickly
CALL_TIMEOUT = 0.5
#: instances the tests never create: their waiters must never return
NEVER = "inst-never"


# --- harness -------------------------------------------------------------------------------


@pytest.fixture
def caplog_warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="watcher")
    return caplog


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The watcher's warnings (and worse) so far, as messages."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("watcher")
    ]


@contextmanager
def logged(logger: logging.Logger, text: str) -> Iterator[trio.Event]:
    """An event set when `logger` (on the trio thread) logs a message containing `text`."""
    seen = trio.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen.set()

    handler = Handler()
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


@dataclass
class Watched:
    """A running watcher, every change it published, and counters to await."""

    w: Watcher
    fake: FakeContainerd
    seen: list[Change]
    synced: AsyncValue[int]
    disconnected: AsyncValue[int]
    never: list[Workspace]

    async def resync_after(self, synced: int) -> None:
        """Wait until the watcher published a `Synced` beyond the first `synced` ones."""
        with trio.fail_after(PATIENCE):
            await self.synced.wait_value(lambda n: n > synced)
        await trio.testing.wait_all_tasks_blocked()

    async def reconnected(self) -> None:
        """Drop the event stream and wait for the watcher's resync on a new one."""
        before = self.synced.value
        self.fake.drop_streams()
        await self.resync_after(before)

    async def wait(self, find: Callable[[], T | None]) -> T:
        """`w.wait_until(find)`, then let the collector take what was published so far."""
        with trio.fail_after(PATIENCE):
            found = await self.w.wait_until(find)
        await trio.testing.wait_all_tasks_blocked()
        return found

    def kinds(self, container_id: str) -> list[ChangeKind]:
        return [
            c.kind
            for c in self.seen
            if isinstance(c, WorkspaceChange) and c.workspace.container_id == container_id
        ]


@asynccontextmanager
async def watching(fake: FakeContainerd, **settings: Any) -> AsyncIterator[Watched]:
    """A watcher on `fake`, a collector of its changes, and a sentinel waiter for `NEVER`.

    On leaving, the sentinel must still be waiting and nobody may have lagged.
    """
    defaults: dict[str, Any] = {
        "address": fake.address,
        "backoff_initial": 0.01,
        "backoff_max": 0.2,
        "call_timeout": CALL_TIMEOUT * 4,
        "relist_interval": 0,
    }
    config = Settings(**(defaults | settings))
    seen: list[Change] = []
    synced = AsyncValue(0)
    disconnected = AsyncValue(0)
    never: list[Workspace] = []
    async with open_watcher(settings=config) as w, trio.open_nursery() as nursery:
        changes = w.changes()
        stream = changes.__enter__()

        async def collect() -> None:
            async for change in stream:
                assert not isinstance(change, Lagged)
                seen.append(change)
                if isinstance(change, Synced):
                    synced.value += 1
                elif isinstance(change, Disconnected):
                    disconnected.value += 1

        async def sentinel() -> None:
            never.append(await w.wait_for_container(NEVER))

        nursery.start_soon(collect)
        nursery.start_soon(sentinel)
        try:
            yield Watched(w, fake, seen, synced, disconnected, never)
            await trio.testing.wait_all_tasks_blocked()
            assert never == [], "a waiter for an instance that never existed was woken"
        finally:
            changes.__exit__(None, None, None)
            nursery.cancel_scope.cancel()


def workspace_pod(fake: FakeContainerd, iid: str, **kwargs: Any) -> FakePod:
    return fake.add_pod(f"ws-{iid}", labels=mk2_labels(iid, f"ws-{iid}", "owner"), **kwargs)


def running(w: Watcher, iid: str) -> Callable[[], Workspace | None]:
    def find() -> Workspace | None:
        ws = w.workspaces().get(iid)  # type: ignore[call-overload]
        return ws if ws is not None and ws.running else None

    return find


def gone(w: Watcher, iid: str) -> Callable[[], bool | None]:
    return lambda: True if iid not in w.workspaces() else None


def container_gone(w: Watcher, container_id: str) -> Callable[[], bool | None]:
    def find() -> bool | None:
        try:
            w.container(container_id)
        except NotFound:
            return True
        return None

    return find


def assert_consistent(w: Watcher, fake: FakeContainerd, pods: Mapping[str, FakePod]) -> None:
    """The watcher's workspaces are exactly the `pods` whose workspace container the fake
    still holds, with the fake's PID and task state (an oracle independent of the index)."""
    held = fake.container_ids()
    expected = {iid: pod for iid, pod in pods.items() if pod.containers["workspace"] in held}
    assert set(w.workspaces()) == set(expected)
    for iid, pod in expected.items():
        cid = pod.containers["workspace"]
        ws = w.workspaces()[iid]  # type: ignore[index]
        assert ws.container_id == cid
        task = fake.task(cid)
        if task is None:
            assert not ws.running
        else:
            assert ws.pid == task.pid
            assert ws.running == (task.status == task_types.RUNNING)


#: short enough for a fast test, long enough that a loaded machine delivers an event in flight
GRACE = 1.0
RELIST = 0.2


async def relists_done(fake: FakeContainerd, n: int) -> None:
    """Wait for `n` more relists (each lists the tasks once)."""
    start = sum(c.method == Rpc.TASKS_LIST for c in fake.calls())
    with trio.fail_after(PATIENCE):
        await fake.wait_until(
            lambda f: sum(c.method == Rpc.TASKS_LIST for c in f.calls()) >= start + n
        )


# --- the event stream ------------------------------------------------------------------


async def test_dropped_stream_mid_way(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    a = workspace_pod(fake, "inst-a")
    async with watching(fake) as wd:
        await wd.wait(running(wd.w, "inst-a"))
        # waiters from before the drop, for what happens while the watcher is away
        got: list[Workspace] = []
        async with trio.open_nursery() as nursery:

            async def wait_b() -> None:
                with trio.fail_after(PATIENCE):
                    got.append(await wd.w.wait_for_container("inst-b"))

            async def wait_a_gone() -> None:
                with trio.fail_after(PATIENCE):
                    await wd.w.wait_for_container_stop("inst-a")

            nursery.start_soon(wait_b)
            nursery.start_soon(wait_a_gone)
            await trio.testing.wait_all_tasks_blocked()
            before = wd.synced.value
            c = workspace_pod(fake, "inst-c")  # published: delivered before the drop
            fake.drop_streams()
            # no await in between: these happen while the stream is gone, silently
            fake.remove_pod(a, publish=False)
            b = workspace_pod(fake, "inst-b", publish=False)
            await wd.resync_after(before)
        assert got[0].container_id == b.containers["workspace"]
        assert_consistent(wd.w, fake, {"inst-a": a, "inst-b": b, "inst-c": c})
        assert wd.disconnected.value == 1
        assert wd.kinds(a.containers["workspace"])[-1] is ChangeKind.REMOVED
        assert wd.kinds(c.containers["workspace"]) == [ChangeKind.CREATED, ChangeKind.RUNNING]
    lost = [m for m in warnings_of(caplog_warnings) if "lost containerd" in m]
    assert len(lost) == 1 and "dropped" in lost[0]
    assert warnings_of(caplog_warnings) == lost


async def test_stream_and_health_check_failing_together_are_one_loss(
    fake: FakeContainerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """containerd gone fails the event stream and a call in flight in the same instant: two
    errors in the session's nursery are still one outage, not a crash of the watcher."""
    gate = trio.Event()
    sessions = 0
    follow, health = loop_module._Session.follow, loop_module._Session.health

    def failing(real: Callable[..., Any]) -> Callable[..., Any]:
        async def run(self: Any, *args: Any) -> None:
            if sessions > 1:
                return await real(self, *args)  # type: ignore[no-any-return]
            await gate.wait()  # both woken by one set(): both fail before either is cancelled
            raise ConnectError("containerd went away")

        return run

    def counted_sync(real: Callable[..., Any]) -> Callable[..., Any]:
        async def run(self: Any, **kwargs: Any) -> None:
            nonlocal sessions
            sessions += 1
            await real(self, **kwargs)

        return run

    monkeypatch.setattr(loop_module._Session, "follow", failing(follow))
    monkeypatch.setattr(loop_module._Session, "health", failing(health))
    monkeypatch.setattr(loop_module._Session, "sync", counted_sync(loop_module._Session.sync))
    workspace_pod(fake, "inst-a")
    async with watching(fake) as wd:
        await wd.wait(running(wd.w, "inst-a"))
        before = wd.synced.value
        gate.set()
        await wd.resync_after(before)
        assert wd.disconnected.value == 1
        assert sessions == 2


@pytest.mark.parametrize("method", [Rpc.CONTAINERS_LIST_STREAM, Rpc.TASKS_LIST])
@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_list_refused_on_reconnect(
    fake: FakeContainerd,
    caplog_warnings: pytest.LogCaptureFixture,
    method: Rpc,
    code: grpc.StatusCode,
) -> None:
    a = workspace_pod(fake, "inst-a")
    async with watching(fake) as wd:
        await wd.wait(running(wd.w, "inst-a"))
        fake.fail(method, code, times=3)
        before = wd.synced.value
        fake.drop_streams()
        b = workspace_pod(fake, "inst-b", publish=False)
        await wd.resync_after(before)
        assert wd.synced.value == before + 1  # the refused attempts announced nothing
        assert sum(c.method == method for c in fake.calls()) >= 4
        assert_consistent(wd.w, fake, {"inst-a": a, "inst-b": b})
        assert wd.disconnected.value == 1
    # one warning for the outage, one for its new cause; not one per refused attempt
    lost, cause = warnings_of(caplog_warnings)
    assert lost.startswith("lost containerd") and cause.startswith("still no containerd")


async def test_list_delayed_past_the_deadline_on_reconnect(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    a = workspace_pod(fake, "inst-a")
    settings = {"call_timeout": CALL_TIMEOUT, "listing_timeout": CALL_TIMEOUT * 2}
    async with watching(fake, **settings) as wd:
        await wd.wait(running(wd.w, "inst-a"))
        fake.delay(Rpc.TASKS_LIST, CALL_TIMEOUT * 10)
        fake.delay(Rpc.CONTAINERS_LIST_STREAM, CALL_TIMEOUT / 5)  # slow but in time
        before = wd.synced.value
        fake.drop_streams()
        fake.remove_pod(a, publish=False)
        await wd.resync_after(before)
        assert_consistent(wd.w, fake, {"inst-a": a})
        assert wd.disconnected.value == 1
    lost, cause = warnings_of(caplog_warnings)
    assert lost.startswith("lost containerd") and "Tasks.List in time" in cause


async def test_list_refused_at_start_is_a_typed_error(fake: FakeContainerd) -> None:
    # before the first sync a failure is reported, not retried: a wrong address is a mistake
    fake.fail(Rpc.CONTAINERS_LIST_STREAM, grpc.StatusCode.UNAVAILABLE)
    with trio.fail_after(PATIENCE), pytest.raises(ConnectError, match="not answering"):
        async with open_watcher(settings=Settings(address=fake.address)):
            raise AssertionError("started without a listing")


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL])
async def test_subscribe_refused(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture, code: grpc.StatusCode
) -> None:
    a = workspace_pod(fake, "inst-a")
    async with watching(fake) as wd:
        await wd.wait(running(wd.w, "inst-a"))
        fake.fail(Rpc.EVENTS_SUBSCRIBE, code)
        fake.drop_streams()
        # the refused stream is only known to fail once read: the watcher then reconnects
        with trio.fail_after(PATIENCE):
            await fake.wait_until(
                lambda f: (
                    sum(c.method == Rpc.EVENTS_SUBSCRIBE for c in f.calls()) >= 3
                    and f.subscriber_count == 1
                )
            )
        b = workspace_pod(fake, "inst-b")  # on the new stream
        await wd.wait(running(wd.w, "inst-b"))
        assert_consistent(wd.w, fake, {"inst-a": a, "inst-b": b})
    lost = warnings_of(caplog_warnings)
    assert lost and all(m.startswith(("lost containerd", "still no containerd")) for m in lost)


async def test_subscribe_delayed_window_is_closed_by_the_relist(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    """A slow Subscribe: containerd registers a subscription only when it serves the call, and
    nothing tells the client when that is (no headers before the first event). The watcher
    lists meanwhile, so an event published in that window is missed by both: the safety relist
    finds it, and counts it."""
    async with watching(fake, relist_interval=RELIST, relist_grace=GRACE) as wd:
        fake.delay(Rpc.EVENTS_SUBSCRIBE, math.inf)
        before = wd.synced.value
        fake.drop_streams()
        await wd.resync_after(before)  # listed; the new stream is not registered yet
        assert fake.subscriber_count == 0
        a = workspace_pod(fake, "inst-a")  # in the window: nobody receives its events
        ws = await wd.wait(running(wd.w, "inst-a"))  # found by a safety relist
        fake.clear_faults()  # the Subscribe is served now
        with trio.fail_after(PATIENCE):
            await fake.wait_until(lambda f: f.subscriber_count == 1)
        b = workspace_pod(fake, "inst-b")
        await wd.wait(running(wd.w, "inst-b"))
        await relists_done(fake, int(GRACE / RELIST) + 3)
        assert wd.w.corrections == 1
        assert_consistent(wd.w, fake, {"inst-a": a, "inst-b": b})
        assert wd.kinds(ws.container_id) == [ChangeKind.CREATED, ChangeKind.RUNNING]
    lost, corrected = warnings_of(caplog_warnings)
    assert "lost containerd" in lost
    assert "relist corrected" in corrected and ws.container_id in corrected


# --- single calls failing ----------------------------------------------------------------


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_get_after_create_fails_once(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture, code: grpc.StatusCode
) -> None:
    """A Get that fails is tried again: a busy containerd is not a lost one."""
    async with watching(fake) as wd:
        fake.fail(Rpc.CONTAINERS_GET, code)
        a = workspace_pod(fake, "inst-a")
        ws = await wd.wait(running(wd.w, "inst-a"))
        assert ws.container_id == a.containers["workspace"]
        assert wd.disconnected.value == 0
        assert_consistent(wd.w, fake, {"inst-a": a})
        assert wd.kinds(ws.container_id).count(ChangeKind.RUNNING) == 1
    assert warnings_of(caplog_warnings) == []


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_get_after_create_keeps_failing(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture, code: grpc.StatusCode
) -> None:
    """Every try fails: one warning, and a relist (not a reconnect) finds the container."""
    async with watching(fake) as wd:
        fake.fail(Rpc.CONTAINERS_GET, code, times=loop_module.GET_TRIES * 3)
        a = workspace_pod(fake, "inst-a")
        ws = await wd.wait(running(wd.w, "inst-a"))  # after the relist it asked for
        assert ws.container_id == a.containers["workspace"]
        assert wd.disconnected.value == 0
        assert_consistent(wd.w, fake, {"inst-a": a})
        assert wd.kinds(ws.container_id).count(ChangeKind.RUNNING) == 1
    warnings = warnings_of(caplog_warnings)
    assert warnings and all("a relist will look again" in w for w in warnings)


async def test_get_after_create_not_found(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    """containerd answered /containers/create, then NotFound for it (deleted at once — or,
    here, a lie): the container is skipped with a warning; the next resync finds it."""
    async with watching(fake) as wd:
        # the first Get: the sandbox's or the workspace container's, as the concurrent
        # Gets reach the server
        fake.fail(Rpc.CONTAINERS_GET, grpc.StatusCode.NOT_FOUND)
        with logged(logging.getLogger("watcher"), "no such container") as warned:
            a = workspace_pod(fake, "inst-a")
            with trio.fail_after(PATIENCE):
                await warned.wait()  # the NotFound was answered: not cut short by the drop
        await wd.reconnected()
        assert_consistent(wd.w, fake, {"inst-a": a})
        assert wd.w.workspaces()["inst-a"].running  # type: ignore[index]
    ids = (a.sandbox_id, a.containers["workspace"])
    about = [m for m in warnings_of(caplog_warnings) if any(i in m for i in ids)]
    assert len(about) == 1 and "no such container" in about[0], warnings_of(caplog_warnings)


async def test_snapshot_mounts_failing_leaves_upperdir_unknown(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    a = workspace_pod(fake, "inst-a", publish=False)
    cid = a.containers["workspace"]
    fake.fail(Rpc.SNAPSHOTS_MOUNTS, grpc.StatusCode.NOT_FOUND, times=None)
    async with watching(fake) as wd:
        ws = wd.w.container(cid)
        assert ws.upperdir is None and ws.pid == fake.task(cid).pid  # type: ignore[union-attr]
    msgs = warnings_of(caplog_warnings)
    assert msgs and all(cid in m for m in msgs)


# --- what arrives on the stream -----------------------------------------------------------


async def test_unknown_type_url(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    async with watching(fake) as wd:
        for _ in range(3):  # a newer containerd, on a topic the watcher subscribes to
            fake.publish_unknown(topic="/tasks/future", type_url="containerd.events.FromTheFuture")
        fake.publish_unknown(topic="/fake/unknown", type_url="containerd.events.NotForUs")
        a = workspace_pod(fake, "inst-a")
        await wd.wait(running(wd.w, "inst-a"))
        assert_consistent(wd.w, fake, {"inst-a": a})
        assert wd.disconnected.value == 0
    [warning] = warnings_of(caplog_warnings)  # once per type, however often it comes
    assert "containerd.events.FromTheFuture" in warning


async def test_garbage_any(fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture) -> None:
    async with watching(fake) as wd:
        fake.publish_garbage()
        a = workspace_pod(fake, "inst-a")
        await wd.wait(running(wd.w, "inst-a"))
        assert_consistent(wd.w, fake, {"inst-a": a})
        assert wd.disconnected.value == 0
    [warning] = warnings_of(caplog_warnings)
    assert "undecodable" in warning and "TaskCreate" in warning


async def test_garbage_in_place_of_a_task_create_is_fixed_by_the_resync(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    async with watching(fake) as wd:
        # the pod's events, but its workspace's TaskCreate and TaskStart arrive as garbage
        a = workspace_pod(fake, "inst-a", start=False)
        cid = a.containers["workspace"]
        fake.create_task(cid, publish=False)
        fake.publish_garbage()
        fake.start_task(cid, publish=False)
        fake.publish_garbage(topic="/tasks/start", type_url="containerd.events.TaskStart")
        ws = await wd.wait(lambda: wd.w.workspaces().get("inst-a"))  # type: ignore[call-overload]
        assert not ws.running
        await wd.reconnected()
        assert_consistent(wd.w, fake, {"inst-a": a})
        assert wd.w.container(cid).running
    assert len([m for m in warnings_of(caplog_warnings) if "undecodable" in m]) == 2


def add_workspace_with_spec(fake: FakeContainerd, iid: str, spec: bytes | dict[str, Any]) -> str:
    """A workspace pod whose workspace container has `spec` (joined to its sandbox by uid)."""
    pod = workspace_pod(fake, iid, containers=())
    cid = f"{pod.sandbox_id[:40]}cafe{len(iid):04d}"
    fake.create_container(
        cid,
        labels={
            "io.cri-containerd.kind": "container",
            "io.kubernetes.container.name": "workspace",
            "io.kubernetes.pod.name": pod.name,
            "io.kubernetes.pod.namespace": pod.namespace,
            "io.kubernetes.pod.uid": pod.uid,
        },
        spec=spec,
    )
    fake.start_task(cid)
    return cid


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        ({k: v for k, v in oci_spec(None).items() if k != "linux"}, "no linux.cgroupsPath"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "not JSON we can read"),
    ],
    ids=["not-json", "not-an-object", "no-linux", "nested-100k-deep"],
)
async def test_malformed_spec_still_a_workspace_without_cgroup(
    fake: FakeContainerd,
    caplog_warnings: pytest.LogCaptureFixture,
    spec: bytes | dict[str, Any],
    says: str,
) -> None:
    async with watching(fake) as wd:
        cid = add_workspace_with_spec(fake, "inst-m", spec)
        ws = await wd.wait(running(wd.w, "inst-m"))
        assert ws.container_id == cid and ws.cgroup_path is None and ws.upperdir is not None
        with pytest.raises(NoCgroup, match=cid):
            wd.w.container_cgroup_path(cid)
        assert wd.w.container_pid(cid) == fake.task(cid).pid  # type: ignore[union-attr]
        about = [m for m in warnings_of(caplog_warnings) if cid in m]
        assert len(about) == 1 and says in about[0], about
        assert warnings_of(caplog_warnings) == about


async def test_one_hostile_container_stays_with_itself(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    """Any container of the node is decoded, workspace or not: one whose CRI extension and
    spec are nested 100 000 levels deep, there before the watcher starts and made again
    while it runs, costs a warning each, never the watcher."""
    deep = b"[" * 100_000 + b"]" * 100_000
    hostile = {"io.cri-containerd.container.metadata": deep}
    labels = {"io.cri-containerd.kind": "container", "io.kubernetes.container.name": "workspace"}
    fake.create_container("hostile-1", labels=labels, spec=deep, extensions=hostile)
    async with watching(fake) as wd:  # the listing at start decodes it
        fake.create_container("hostile-2", labels=labels, spec=deep, extensions=hostile)
        a = workspace_pod(fake, "inst-a")
        await wd.wait(running(wd.w, "inst-a"))
        assert_consistent(wd.w, fake, {"inst-a": a})
    warnings = warnings_of(caplog_warnings)
    for cid in ("hostile-1", "hostile-2"):
        assert any(cid in w and "not JSON we can read" in w for w in warnings), warnings
    assert all("hostile-" in w for w in warnings), warnings


async def test_weird_labels(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    weird = {
        **mk2_labels("inst-ü", "ws-ключ", "owner-值"),
        "empty": "",
        "huge": "x" * 1_000_000,
        "ünïcødé/ключ": "值🚀\u200b",
        **{f"l{i:05d}": f"v{i}" for i in range(10_000)},
    }
    async with watching(fake) as wd:
        pod = fake.add_pod("ws-weird", labels=weird)
        ws = await wd.wait(running(wd.w, "inst-ü"))
        assert ws.container_id == pod.containers["workspace"]
        assert ws.workspace_id == "ws-ключ" and ws.owner_id == "owner-值"
        assert ws.pod_labels == weird
        await wd.reconnected()  # the same labels through a listing
        assert wd.w.instance("inst-ü").pod_labels == weird
    assert [m for m in warnings_of(caplog_warnings) if "lost containerd" not in m] == []


async def test_empty_instance_id_label_is_no_workspace(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    labels = {**mk2_labels("", "ws-e", "owner"), "workspaceID": ""}
    async with watching(fake) as wd:
        fake.add_pod("ws-empty", labels=labels)
        a = workspace_pod(fake, "inst-a")
        await wd.wait(running(wd.w, "inst-a"))
        assert set(wd.w.workspaces()) == {"inst-a"}
        assert_consistent(wd.w, fake, {"inst-a": a})
    assert warnings_of(caplog_warnings) == []


async def test_events_for_containers_never_created_or_unknown(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    """A TaskCreate for a container never created, deletes for unknown ids: no change, no
    warning (the watcher cannot tell them from the node's many non-workspace containers,
    which it never asks about), and nothing left behind after a resync."""
    async with watching(fake) as wd:
        a = workspace_pod(fake, "inst-a")
        await wd.wait(running(wd.w, "inst-a"))
        mark = len(wd.seen)
        fake.publish("/tasks/create", task_events.TaskCreate(container_id="ghost", pid=99))
        fake.publish("/tasks/start", task_events.TaskStart(container_id="ghost", pid=99))
        fake.publish("/tasks/delete", task_events.TaskDelete(container_id="nobody", id="nobody"))
        fake.publish("/containers/delete", container_events.ContainerDelete(id="nobody"))
        fake.publish("/containers/delete", container_events.ContainerDelete(id=""))
        b = workspace_pod(fake, "inst-b")  # after them on the stream: they were all handled
        await wd.wait(running(wd.w, "inst-b"))
        assert [c.workspace.instance_id for c in wd.seen[mark:]] == ["inst-b", "inst-b"]  # type: ignore[union-attr]
        await wd.reconnected()
        assert_consistent(wd.w, fake, {"inst-a": a, "inst-b": b})
        with pytest.raises(NotFound):
            wd.w.container("ghost")
    assert [m for m in warnings_of(caplog_warnings) if "lost" not in m] == []


async def test_every_event_twice(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    async with watching(fake) as wd:
        fake.duplicate_next(1000)
        a = workspace_pod(fake, "inst-a")
        await wd.wait(running(wd.w, "inst-a"))
        a = fake.replace_container(a)
        await wd.wait(
            lambda: (
                ws
                if (ws := wd.w.workspaces().get("inst-a"))  # type: ignore[call-overload]
                and ws.container_id == a.containers["workspace"]
                and ws.running
                else None
            )
        )
        fake.remove_pod(a)
        await wd.wait(gone(wd.w, "inst-a"))
        with trio.fail_after(PATIENCE):
            await fake.wait_until(lambda f: f.pending_count == 0)
        await trio.testing.wait_all_tasks_blocked()
        lifecycle = [ChangeKind.CREATED, ChangeKind.RUNNING, ChangeKind.EXITED, ChangeKind.REMOVED]
        for cid in (*a.exited, a.containers["workspace"]):
            assert wd.kinds(cid) == lifecycle
        assert wd.w.workspaces() == {}
    assert warnings_of(caplog_warnings) == []


async def test_stalled_stream_relist_fixes_state(
    fake: FakeContainerd,
    caplog_warnings: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing arrives (the connection is healthy, the health check's Version answers); the
    safety relist brings the index up to date, and the late events change nothing again."""
    monkeypatch.setattr(loop_module, "HEALTH_CHECK_INTERVAL", 0.1)
    async with watching(fake, relist_interval=0.3, relist_grace=60) as wd:
        versions = sum(c.method == Rpc.VERSION for c in fake.calls())
        fake.stall_streams()
        a = workspace_pod(fake, "inst-a")
        ws = await wd.wait(running(wd.w, "inst-a"))  # found by a relist
        assert fake.sent_count == 0 and fake.pending_count > 0
        with trio.fail_after(PATIENCE):  # the quiet stream was checked, not torn down
            await fake.wait_until(
                lambda f: sum(c.method == Rpc.VERSION for c in f.calls()) > versions
            )
        assert wd.disconnected.value == 0
        fake.resume_streams()
        with trio.fail_after(PATIENCE):
            await fake.wait_until(lambda f: f.pending_count == 0)
        await trio.testing.wait_all_tasks_blocked()
        assert wd.kinds(ws.container_id) == [ChangeKind.CREATED, ChangeKind.RUNNING]
        assert_consistent(wd.w, fake, {"inst-a": a})
        assert wd.w.corrections == 0  # the late events cleared the suspicion
    assert warnings_of(caplog_warnings) == []


# --- read-only -------------------------------------------------------------------------------


async def test_only_read_only_rpcs_in_a_full_lifecycle_and_reconnects(
    fake: FakeContainerd,
) -> None:
    before = workspace_pod(fake, "inst-before")
    async with watching(fake, relist_interval=0.2) as wd:
        a = workspace_pod(fake, "inst-a")
        ws = await wd.wait(running(wd.w, "inst-a"))
        assert await wd.w.container_exists(ws.container_id)
        assert (await wd.w.task_info(ws.container_id)).pid == ws.pid
        a = fake.replace_container(a)
        await wd.wait(
            lambda: (
                True
                if wd.w.instance("inst-a").container_id == a.containers["workspace"]
                and wd.w.instance("inst-a").running
                else None
            )
        )
        await wd.reconnected()  # a dropped stream
        before_sync = wd.synced.value
        fake.kill()  # containerd gone, a dead socket left
        with trio.fail_after(PATIENCE):
            await wd.w.wait_ready(False)
        fake.start()
        await wd.resync_after(before_sync)
        relists = sum(c.method == Rpc.TASKS_LIST for c in fake.calls())
        with trio.fail_after(PATIENCE):  # a safety relist or two
            await fake.wait_until(
                lambda f: sum(c.method == Rpc.TASKS_LIST for c in f.calls()) >= relists + 2
            )
        fake.remove_pod(a)
        fake.remove_pod(before)
        await wd.wait(gone(wd.w, "inst-a"))
        await wd.wait(gone(wd.w, "inst-before"))
    calls = fake.calls()
    methods = {c.method for c in calls}
    assert methods <= READ_ONLY_RPCS, methods - READ_ONLY_RPCS
    assert {Rpc.CONTAINERS_GET, Rpc.EVENTS_SUBSCRIBE, Rpc.SNAPSHOTS_MOUNTS} <= methods
    namespaced = [c for c in calls if c.method != Rpc.VERSION]
    assert {c.namespace for c in namespaced} == {NAMESPACE}


# --- the safety relist ---------------------------------------------------------------------


@pytest.mark.parametrize("withhold", [True, False], ids=["one-withheld", "none-withheld"])
async def test_safety_relist_counts_exactly_the_missed_event(
    fake: FakeContainerd, caplog_warnings: pytest.LogCaptureFixture, withhold: bool
) -> None:
    async with watching(fake, relist_interval=RELIST, relist_grace=GRACE) as wd:
        a = workspace_pod(fake, "inst-a")
        b = workspace_pod(fake, "inst-b")
        await wd.wait(running(wd.w, "inst-a"))
        await wd.wait(running(wd.w, "inst-b"))
        cid = a.containers["workspace"]
        fake.delete_task(cid)
        if withhold:
            fake.withhold_next()  # the /containers/delete
        fake.delete_container(cid)
        fake.remove_pod(b)
        await wd.wait(gone(wd.w, "inst-b"))
        await wd.wait(container_gone(wd.w, cid))
        # enough relists that any suspicion is past its grace and reported
        await relists_done(fake, int(GRACE / RELIST) + 3)
        assert wd.w.corrections == (1 if withhold else 0)
        assert_consistent(wd.w, fake, {"inst-a": a, "inst-b": b})
        assert wd.kinds(cid).count(ChangeKind.REMOVED) == 1
        assert wd.disconnected.value == 0
    corrected = [m for m in warnings_of(caplog_warnings) if "relist corrected" in m]
    if withhold:
        assert len(corrected) == 1 and cid in corrected[0] and "inst-a" in corrected[0]
        assert fake.withheld()[0].topic == "/containers/delete"
    else:
        assert corrected == []
    assert warnings_of(caplog_warnings) == corrected


async def test_first_relist_comes_soon_after_connecting(
    fake: FakeContainerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What slipped between a subscription and its registration is found within seconds,
    not after a whole `relist_interval`."""
    monkeypatch.setattr(loop_module, "SETTLE_RELIST", RELIST)
    async with watching(fake, relist_interval=3600, relist_grace=GRACE) as wd:
        fake.withhold_next(100)  # as if published before containerd registered us
        workspace_pod(fake, "inst-early")
        await wd.wait(running(wd.w, "inst-early"))  # the first relist found it
        with trio.fail_after(PATIENCE):
            await wd.w.wait_until(lambda: wd.w.corrections or None)  # counted after the grace
        assert wd.w.corrections == 1
