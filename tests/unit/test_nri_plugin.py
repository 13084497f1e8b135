"""The NRI plugin (`watcher.nri.plugin`) against a fake NRI runtime (`watcher.testing.fake_nri`)
on a real unix socket: registration, the subscription, every reply empty, events decoded and
queued, and what goes wrong — bad frames, a full queue, no socket, a lost connection, a late
reply, a refused registration — handled by closing one connection and coming back.

Waits are on the plugin's own values (`registrations`), on the fake's answers, or on log
records, each under `trio.fail_after`; nothing sleeps to synchronise.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from containerd_protos.nri.pkg.api import api_pb2
from watcher.errors import Code
from watcher.nri import (
    ContainerEvent,
    ContainerState,
    EventKind,
    Mount,
    NriPlugin,
    PodSandboxEvent,
    Synchronized,
    open_nri_plugin,
    serve_nri_plugin,
    ttrpc,
)
from watcher.nri import mux as muxing
from watcher.settings import NriSettings
from watcher.testing.fake_nri import FakeNriRuntime, FakeRuntimeConnection, open_fake_nri_runtime

WAIT = 10.0
#: every kind the plugin subscribes to; UpdateContainer (8) and PostUpdateContainer (9) not
MASK = 0b110_0111_1111


class LogRecords(logging.Handler):
    """The plugin's log records, with a wait for those that match."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def matching(self, level: int, needle: str) -> list[str]:
        return [
            r.getMessage() for r in self.records
            if r.levelno == level and needle in r.getMessage()
        ]  # fmt: skip

    async def wait_for(self, level: int, needle: str, count: int = 1) -> None:
        with trio.fail_after(WAIT):
            while len(self.matching(level, needle)) < count:
                await self._changed.wait()


@pytest.fixture
def logs() -> Iterator[LogRecords]:
    handler = LogRecords()
    logger = logging.getLogger("watcher.nri")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def settings(path: str, **overrides: Any) -> NriSettings:
    fast = {"backoff_initial": 0.01, "backoff_max": 0.05, "unavailable_retry": 0.05}
    return NriSettings(socket=path, **{**fast, **overrides})


@asynccontextmanager
async def nri(
    sockdir: str, *, listen: bool = True, **overrides: Any
) -> AsyncIterator[tuple[NriPlugin, FakeNriRuntime]]:
    path = f"{sockdir}/nri.sock"
    async with (
        open_fake_nri_runtime(path, listen=listen) as runtime,
        open_nri_plugin(settings(path, **overrides)) as plugin,
    ):
        yield plugin, runtime


async def registered(
    runtime: FakeNriRuntime, plugin: NriPlugin, count: int = 1
) -> FakeRuntimeConnection:
    conn = await runtime.accept()
    await conn.register()
    with trio.fail_after(WAIT):
        await plugin.registrations.wait_value(lambda n: n >= count)
        assert isinstance(await plugin.events.receive(), Synchronized)
    return conn


async def next_item(plugin: NriPlugin) -> Any:
    with trio.fail_after(WAIT):
        return await plugin.events.receive()


def pod_pb(n: int = 1) -> api_pb2.PodSandbox:
    return api_pb2.PodSandbox(
        id=f"sandbox{n}", name=f"ws-{n}", namespace="default", uid=f"uid-{n}",
        labels={"workspaceID": f"i{n}"}, annotations={"gitpod/ownerToken": "secret"},
        runtime_handler="runc", pid=100 + n,
        linux=api_pb2.LinuxPodSandbox(cgroup_parent=f"/kubepods/besteffort/poduid-{n}"),
    )  # fmt: skip


def container_pb(n: int = 1, pid: int = 0) -> api_pb2.Container:
    return api_pb2.Container(
        id=f"container{n}", pod_sandbox_id=f"sandbox{n}", name="workspace",
        state=api_pb2.CONTAINER_CREATED, labels={"io.kubernetes.container.name": "workspace"},
        annotations={"io.kubernetes.container.restartCount": "0"},
        mounts=[api_pb2.Mount(destination="/workspace", type="bind", source="/w", options=["ro"])],
        linux=api_pb2.LinuxContainer(cgroups_path=f"/kubepods/besteffort/poduid-{n}/container{n}"),
        pid=pid, env=["SECRET=1"],
    )  # fmt: skip


def state_change(kind: int, n: int = 1, pid: int = 0) -> api_pb2.StateChangeEvent:
    container = container_pb(n, pid) if kind > EventKind.REMOVE_POD_SANDBOX.value else None
    return api_pb2.StateChangeEvent(event=kind, pod=pod_pb(n), container=container)


async def send_event(
    conn: FakeRuntimeConnection, kind: EventKind, n: int = 1, pid: int = 0
) -> ttrpc.Response:
    """The call containerd makes for `kind` (NRI v0.8.0 adaptation: CreateContainer and
    StopContainer have methods of their own, the rest go through StateChange)."""
    if kind is EventKind.CREATE_CONTAINER:
        request: Any = api_pb2.CreateContainerRequest(pod=pod_pb(n), container=container_pb(n))
        return await conn.call("CreateContainer", request)
    if kind is EventKind.STOP_CONTAINER:
        request = api_pb2.StopContainerRequest(pod=pod_pb(n), container=container_pb(n, pid))
        return await conn.call("StopContainer", request)
    return await conn.call("StateChange", state_change(kind.value, n, pid))


# --- registration and subscription ---------------------------------------------------------


async def test_it_registers_and_subscribes_to_the_lifecycle_events(sockdir: str) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await runtime.accept()
        # containerd calls Configure once RegisterPlugin is handled, before the plugin has read
        # the answer: here Configure comes first, the answer after
        mask = await conn.configure()
        assert await conn.registration() == ("ws-watcher", "99")
        with trio.fail_after(WAIT):
            await plugin.registrations.wait_value(1)
        assert plugin.stats.registered
        assert mask == MASK  # explicit: a mask of 0 would mean *every* event to containerd
        assert {k for k in EventKind if mask & k.mask_bit} == set(EventKind)
        assert plugin.name == "99-ws-watcher"


async def test_synchronize_is_one_listing_and_no_update(sockdir: str) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await runtime.accept()
        await conn.registration()
        await conn.configure()
        first = await conn.synchronize([pod_pb(1)], [container_pb(1, pid=42)], more=True)
        last = await conn.synchronize([pod_pb(2)], [container_pb(2)])
        # NRI v0.8's split Synchronize: the plugin echoes `more`, and asks no update
        assert (first.more, list(first.update)) == (True, [])
        assert (last.more, list(last.update)) == (False, [])
        listing = await next_item(plugin)
        assert isinstance(listing, Synchronized)
        assert [p.id for p in listing.pods] == ["sandbox1", "sandbox2"]
        assert [c.id for c in listing.containers] == ["container1", "container2"]
        pod, container = listing.pods[0], listing.containers[0]
        assert (pod.name, pod.namespace, pod.uid, pod.pid) == ("ws-1", "default", "uid-1", 101)
        assert pod.labels == {"workspaceID": "i1"}
        assert pod.cgroup_parent == "/kubepods/besteffort/poduid-1"
        assert "secret" not in repr(pod)  # annotations are kept, out of repr
        assert pod.annotations["gitpod/ownerToken"] == "secret"
        assert (container.sandbox_id, container.name, container.pid) == (
            "sandbox1",
            "workspace",
            42,
        )
        assert container.state is ContainerState.CREATED
        assert container.mounts == (
            Mount(destination="/workspace", type="bind", source="/w", options=("ro",)),
        )
        assert container.cgroups_path == "/kubepods/besteffort/poduid-1/container1"
        assert not hasattr(container, "env")


# --- events --------------------------------------------------------------------------------


async def test_every_event_is_answered_empty_then_queued(sockdir: str) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await registered(runtime, plugin)
        for kind in EventKind:
            reply = await send_event(conn, kind, pid=7 if kind is EventKind.START_CONTAINER else 0)
            # observe only: OK and zero bytes, the empty message of the call's response type
            assert reply.status.code is Code.OK
            assert reply.payload == b""
            item = await next_item(plugin)
            assert item.kind is kind
            assert item.pod.id == "sandbox1"
            if kind.about_pod:
                assert isinstance(item, PodSandboxEvent)
            else:
                assert isinstance(item, ContainerEvent)
                assert (item.container.id, item.container.sandbox_id) == ("container1", "sandbox1")
                assert item.container.labels == {"io.kubernetes.container.name": "workspace"}
            if kind is EventKind.START_CONTAINER:
                assert item.container.pid == 7
        assert plugin.stats.delivered == 1 + len(EventKind)


async def test_what_it_does_not_serve_is_unimplemented(sockdir: str) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await registered(runtime, plugin)
        unserved = [
            await conn.call("UpdateContainer", api_pb2.UpdateContainerRequest()),
            # NRI >= 0.10 calls each event by its own method first, StateChange if Unimplemented
            await conn.call("RunPodSandbox", b""),
            await conn.call("Configure", b"", service="nri.pkg.api.v1alpha1.Runtime"),
        ]
        assert {r.status.code for r in unserved} == {Code.UNIMPLEMENTED}
        # an update it did not subscribe to is answered, and not queued
        update = await conn.call("StateChange", state_change(8))
        shutdown = await conn.call("Shutdown", api_pb2.Empty())
        assert [(r.status.code, r.payload) for r in (update, shutdown)] == [(Code.OK, b"")] * 2
        await send_event(conn, EventKind.REMOVE_POD_SANDBOX)
        assert (await next_item(plugin)).kind is EventKind.REMOVE_POD_SANDBOX


# --- bad input -----------------------------------------------------------------------------


def ttrpc_header(length: int, kind: int = 1) -> bytes:
    return struct.pack(">IIBB", length, 101, kind, 0)


BAD_FRAMES = {
    "oversized multiplexed frame": struct.pack(">II", 1, muxing.MAX_PAYLOAD + 1),
    "oversized ttrpc frame": muxing.encode(1, ttrpc_header(ttrpc.MAX_DATA + 1)),
    "oversized ttrpc frame of an unknown type": muxing.encode(
        1, ttrpc_header(ttrpc.MAX_DATA + 1, kind=9)
    ),
    "garbage": b"\xde\xad\xbe\xef" * 4,
}


@pytest.mark.parametrize("bad", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
async def test_a_bad_frame_closes_the_connection_and_the_plugin_comes_back(
    sockdir: str, logs: LogRecords, bad: bytes
) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await registered(runtime, plugin)
        await conn.send_raw(bad)
        await conn.wait_closed()
        await logs.wait_for(logging.WARNING, "closing the connection")
        await registered(runtime, plugin, count=2)
        assert plugin.stats.protocol_errors == 1


async def test_a_frame_of_an_unknown_ttrpc_type_is_skipped_and_the_connection_kept(
    sockdir: str, logs: LogRecords
) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await registered(runtime, plugin)
        for _ in range(3):
            await conn.send_raw(muxing.encode(1, ttrpc_header(5, kind=9) + b"12345"))
        await send_event(conn, EventKind.RUN_POD_SANDBOX)  # the framing held
        assert (await next_item(plugin)).kind is EventKind.RUN_POD_SANDBOX
        # said once, not per frame: a newer runtime may send them on every call
        assert len(logs.matching(logging.WARNING, "unknown message type 0x09")) == 1
        assert not conn.closed.is_set()
        assert plugin.stats.protocol_errors == 0


CUT_FRAMES = {
    "ttrpc frame": muxing.encode(1, ttrpc_header(100) + b"cut short"),
    "multiplexed frame": struct.pack(">II", 1, 50) + b"cut short",
}


@pytest.mark.parametrize("cut", CUT_FRAMES.values(), ids=CUT_FRAMES.keys())
async def test_containerd_killed_mid_frame_is_a_lost_connection_not_a_protocol_error(
    sockdir: str, logs: LogRecords, cut: bytes
) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await registered(runtime, plugin)
        await conn.send_raw(cut)
        await conn.aclose()  # the runtime's end goes away mid-frame
        await logs.wait_for(logging.WARNING, "connection to containerd lost")
        [lost] = logs.matching(logging.WARNING, "connection to containerd lost")
        assert "closed by containerd" in lost
        await logs.wait_for(logging.DEBUG, "bytes into a")
        await registered(runtime, plugin, count=2)
        assert not logs.matching(logging.WARNING, "closing the connection")
        assert plugin.stats.protocol_errors == 0


async def test_a_bad_request_is_refused_and_a_bad_payload_answered_on_the_same_connection(
    sockdir: str, logs: LogRecords
) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await registered(runtime, plugin)
        refused = await conn.call_with_envelope(b"\xff\xff")  # no ttrpc.Request
        assert refused.status.code is Code.INVALID_ARGUMENT
        # an event that is no event is answered as any other: an observer never fails a pod
        answered = await conn.call("CreateContainer", b"\xff\xff")
        assert (answered.status.code, answered.payload) == (Code.OK, b"")
        await logs.wait_for(logging.WARNING, "answered all the same")
        await send_event(conn, EventKind.RUN_POD_SANDBOX)
        assert (await next_item(plugin)).kind is EventKind.RUN_POD_SANDBOX
        assert not conn.closed.is_set()
        stats = plugin.stats
        assert (stats.registrations, stats.bad_messages, stats.protocol_errors) == (1, 1, 0)


# --- never holding the runtime up ------------------------------------------------------------


async def test_a_full_queue_drops_and_counts_and_every_call_is_answered(
    sockdir: str, logs: LogRecords
) -> None:
    async with nri(sockdir, event_buffer=2) as (plugin, runtime):
        conn = await registered(runtime, plugin)  # its Synchronized read: the queue is empty
        replies = [await send_event(conn, EventKind.RUN_POD_SANDBOX, n) for n in range(5)]
        assert {(r.status.code, r.payload) for r in replies} == {(Code.OK, b"")}
        assert (plugin.stats.delivered, plugin.stats.dropped) == (3, 3)
        assert len(logs.matching(logging.WARNING, "not read fast enough")) == 1
        assert [(await next_item(plugin)).pod.id for _ in range(2)] == ["sandbox0", "sandbox1"]
        await send_event(conn, EventKind.RUN_POD_SANDBOX, 9)
        assert (await next_item(plugin)).pod.id == "sandbox9"
        await logs.wait_for(logging.INFO, "read again")


async def test_a_consumer_that_went_away_costs_the_runtime_nothing(sockdir: str) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await registered(runtime, plugin)
        await plugin.events.aclose()
        reply = await send_event(conn, EventKind.CREATE_CONTAINER)
        assert (reply.status.code, reply.payload) == (Code.OK, b"")
        assert plugin.stats.dropped == 1


async def test_a_late_reply_renews_the_registration(sockdir: str, logs: LogRecords) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await runtime.accept()
        await conn.registration()
        await conn.configure()
        # a deadline of 1 ns: the answer is late whatever it does; containerd would have
        # logged "failed to synchronize plugin" and never sent another event
        await conn.synchronize(timeout_nano=1)
        await conn.wait_closed()
        await logs.wait_for(logging.WARNING, "after fake-runtime 0.8.0's deadline")
        await registered(runtime, plugin, count=2)
        assert plugin.stats.late_replies == 1


# --- registration failures, unavailability, losses --------------------------------------------


async def test_a_refused_registration_is_tried_again(sockdir: str, logs: LogRecords) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await runtime.accept()
        await conn.registration(refuse="invalid plugin index")
        await conn.wait_closed()
        await logs.wait_for(logging.WARNING, "refused to register 99-ws-watcher")
        await registered(runtime, plugin)
        assert plugin.stats.registrations == 1


async def test_a_runtime_that_keeps_refusing_is_warned_of_once(
    sockdir: str, logs: LogRecords
) -> None:
    async with nri(sockdir) as (plugin, runtime):
        for _ in range(3):
            conn = await runtime.accept()
            await conn.registration(refuse="no")
            await conn.wait_closed()
        await logs.wait_for(logging.DEBUG, "refused to register", count=2)
        assert len(logs.matching(logging.WARNING, "refused to register")) == 1
        await registered(runtime, plugin)


async def test_a_runtime_that_shuts_down_is_said_at_info(sockdir: str, logs: LogRecords) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await registered(runtime, plugin)
        reply = await conn.call("Shutdown", api_pb2.Empty())
        assert (reply.status.code, reply.payload) == (Code.OK, b"")
        await runtime.stop_listening()
        await conn.aclose()
        await logs.wait_for(logging.INFO, "fake-runtime 0.8.0 shut down")
        assert not logs.matching(logging.WARNING, "lost")


async def test_a_registration_never_configured_times_out(sockdir: str, logs: LogRecords) -> None:
    async with nri(sockdir, registration_timeout=0.2) as (plugin, runtime):
        conn = await runtime.accept()
        await conn.registration()  # answered, but no Configure follows
        await conn.wait_closed()
        await logs.wait_for(logging.WARNING, "did not register the plugin within 0.2 s")
        await runtime.accept()  # and tries again (not registered here: 0.2 s is too short
        # for a loaded machine to be sure of)
        assert plugin.stats.registrations == 0


async def test_no_nri_is_said_once_and_the_plugin_registers_when_it_appears(
    sockdir: str, logs: LogRecords
) -> None:
    async with nri(sockdir, listen=False) as (plugin, runtime):
        await logs.wait_for(logging.DEBUG, "there is no socket", count=3)  # tried 4 times
        [said] = logs.matching(logging.INFO, "NRI is not available")
        assert "there is no socket at" in said
        assert not plugin.stats.registered
        await runtime.listen()
        await registered(runtime, plugin)
        await logs.wait_for(logging.INFO, "registered with fake-runtime 0.8.0")
        assert len(logs.matching(logging.INFO, "NRI is not available")) == 1


async def test_a_lost_connection_is_said_once_and_the_plugin_registers_again(
    sockdir: str, logs: LogRecords
) -> None:
    async with nri(sockdir) as (plugin, runtime):
        conn = await registered(runtime, plugin)
        await runtime.stop_listening()  # containerd gone: its socket with it
        await conn.aclose()
        await logs.wait_for(logging.DEBUG, "there is no socket", count=3)
        lost = logs.matching(logging.WARNING, "connection to containerd lost")
        assert len(lost) == 1 and "closed by containerd" in lost[0]
        assert not plugin.stats.registered
        assert not logs.matching(logging.INFO, "NRI is not available")  # it was, and will be
        await runtime.listen()
        await registered(runtime, plugin, count=2)
        await logs.wait_for(logging.INFO, "registered again")


async def test_leaving_closes_the_socket(sockdir: str) -> None:
    path = f"{sockdir}/nri.sock"
    async with open_fake_nri_runtime(path) as runtime:
        async with open_nri_plugin(settings(path)) as plugin:
            conn = await registered(runtime, plugin)
        await conn.wait_closed()


async def test_serving_in_a_nursery_starts_with_the_plugin(sockdir: str) -> None:
    path = f"{sockdir}/nri.sock"
    async with open_fake_nri_runtime(path) as runtime, trio.open_nursery() as nursery:
        plugin = await nursery.start(serve_nri_plugin, settings(path))
        assert isinstance(plugin, NriPlugin)
        conn = await registered(runtime, plugin)
        nursery.cancel_scope.cancel()
    await conn.wait_closed()


async def test_the_settings_refuse_what_containerd_refuses() -> None:
    from watcher.errors import UsageError

    for bad in ({"plugin_index": "9"}, {"plugin_index": "1a"}, {"plugin_name": ""},
                {"socket": "relative.sock"}, {"event_buffer": 0}):  # fmt: skip
        with pytest.raises(UsageError):
            NriSettings(**bad)  # type: ignore[arg-type]
