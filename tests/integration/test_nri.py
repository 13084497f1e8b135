"""The NRI plugin (`watcher.nri`) against a real containerd with NRI on: the rig's own when it
has NRI (`$WS_WATCHER_CONTAINERD_BIN` naming 1.7 or later), else 1.7 (which speaks NRI
v0.6.1) and 2.1 (v0.8.0), Debian's, fetched once and cached
(`python -m watcher.testing.versions fetch 1.7|2.1`, `~/.cache/ws-watcher/containerd`): the
system's 1.6 has no NRI.

Covered: registration; every lifecycle event of a workspace pod with the ids, labels,
cgroups path and PID containerd has; the listing at registration; every reply observe-only,
read off the socket by a wiretap that decodes without `watcher.nri` (`tests/nri_wiretap.py`);
re-registration after containerd is SIGKILLed and restarted; a plugin killed while
containerd waits for its answer, which must not hold the pod's start up.

The rig's blocking calls (CRI, containerd's start) run in threads; every wait is under
`trio.fail_after`. containerd here waits `REQUEST_TIMEOUT` for a plugin's reply (not 2 s):
a pod start held up by the plugin would take that long, unmistakably.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from nri_wiretap import open_nri_wiretap, wire_fields

from containerd_protos.nri.pkg.api import api_pb2
from watcher.nri import (
    ContainerEvent,
    EventKind,
    NriItem,
    NriPlugin,
    PodSandboxEvent,
    Synchronized,
    open_nri_plugin,
)
from watcher.settings import NriSettings
from watcher.testing import labels, versions
from watcher.testing.containerd import PrivateContainerd
from watcher.testing.fixtures import nri_rig, pods_on
from watcher.testing.pods import Pod, Pods

SERIES = versions.nri_series()
#: bound on every wait: only reached when something is broken (CI machines are loaded)
WAIT = 60.0
#: containerd's plugin request timeout here (its default is 2 s)
REQUEST_TIMEOUT = 30.0
#: every event the plugin subscribes to: NRI's event numbers 1-7, 10, 11 as bits (n - 1)
MASK = 0b110_0111_1111
REPO = Path(__file__).resolve().parents[2]

_T = TypeVar("_T")


@pytest.fixture(scope="module", params=SERIES, ids=lambda s: s or "rig")
def nri_containerd(request: pytest.FixtureRequest) -> Iterator[PrivateContainerd]:
    """A private containerd of the series (None: the rig's), NRI on, its socket under the
    rig's base dir."""
    with nri_rig(request.param, nri_request_timeout=REQUEST_TIMEOUT) as ctrd:
        yield ctrd


@pytest.fixture
def nri_pods(nri_containerd: PrivateContainerd) -> Iterator[Pods]:
    with pods_on(nri_containerd) as made:
        yield made


async def run(fn: Callable[..., _T], *args: Any) -> _T:
    return await trio.to_thread.run_sync(lambda: fn(*args))


def plugin_settings(socket: str | Path) -> NriSettings:
    return NriSettings(socket=str(socket), backoff_max=0.5)


def workspace(pods: Pods, name: str) -> Pod:
    return pods.run_pod(name, labels=labels.mk2_labels(f"inst-{name}", f"ws-{name}", "owner"))


class Items:
    """What the plugin delivered, and a wait for what a predicate picks out of it."""

    def __init__(self, plugin: NriPlugin) -> None:
        self.plugin = plugin
        self.seen: list[NriItem] = []

    async def until(self, done: Callable[[list[NriItem]], bool]) -> list[NriItem]:
        with trio.fail_after(WAIT):
            while not done(self.seen):
                self.seen.append(await self.plugin.events.receive())
        return self.seen

    def of_container(self, container_id: str) -> list[ContainerEvent]:
        return [
            i for i in self.seen
            if isinstance(i, ContainerEvent) and i.container.id == container_id
        ]  # fmt: skip

    def of_pod(self, sandbox_id: str) -> list[PodSandboxEvent]:
        return [i for i in self.seen if isinstance(i, PodSandboxEvent) and i.pod.id == sandbox_id]

    def listings(self) -> list[Synchronized]:
        return [i for i in self.seen if isinstance(i, Synchronized)]


CONTAINER_START = [
    EventKind.CREATE_CONTAINER,
    EventKind.POST_CREATE_CONTAINER,
    EventKind.START_CONTAINER,
    EventKind.POST_START_CONTAINER,
]
CONTAINER_END = [EventKind.STOP_CONTAINER, EventKind.REMOVE_CONTAINER]
POD_END = [EventKind.STOP_POD_SANDBOX, EventKind.REMOVE_POD_SANDBOX]


async def test_the_plugin_sees_a_workspace_pods_life_and_only_ever_answers_empty(
    nri_containerd: PrivateContainerd, nri_pods: Pods, sockdir: str
) -> None:
    before = await run(workspace, nri_pods, "nri-before")
    async with (
        open_nri_wiretap(nri_containerd.nri_socket, sockdir) as tap,
        open_nri_plugin(plugin_settings(tap.address)) as plugin,
    ):
        items = Items(plugin)
        with trio.fail_after(WAIT):
            await plugin.registrations.wait_value(1)
        # the listing at registration holds what ran before
        [listing] = await items.until(lambda seen: bool(seen))
        assert isinstance(listing, Synchronized)
        assert before.sandbox_id in {p.id for p in listing.pods}
        [listed] = [c for c in listing.containers if c.id == before.containers["workspace"]]
        assert listed.pid == await run(nri_pods.cri.container_pid, listed.id)

        pod = await run(workspace, nri_pods, "nri-life")
        cid = pod.containers["workspace"]
        await items.until(lambda _: [e.kind for e in items.of_container(cid)] == CONTAINER_START)
        [ran] = items.of_pod(pod.sandbox_id)
        assert ran.kind is EventKind.RUN_POD_SANDBOX
        assert (ran.pod.name, ran.pod.namespace, ran.pod.uid) == (pod.name, "default", pod.uid)
        assert dict(ran.pod.labels).items() >= dict(pod.labels).items()
        assert ran.pod.labels["io.kubernetes.pod.uid"] == pod.uid
        assert ran.pod.cgroup_parent == pod.cgroup_parent
        for event in items.of_container(cid):
            container = event.container
            assert (container.sandbox_id, container.name) == (pod.sandbox_id, "workspace")
            assert container.labels["io.kubernetes.container.name"] == "workspace"
            assert container.labels["io.kubernetes.pod.uid"] == pod.uid
            assert container.annotations["io.kubernetes.container.restartCount"] == "0"
            assert container.cgroups_path == f"{pod.cgroup_parent}/{cid}"
            assert event.pod is not None and event.pod.id == pod.sandbox_id
        created, _, started, post_started = items.of_container(cid)
        assert created.container.pid is None  # no process yet: told before it runs
        pid = await run(nri_pods.cri.container_pid, cid)
        assert started.container.pid == post_started.container.pid == pid
        assert any(m.destination == "/etc/hosts" for m in started.container.mounts)

        await run(nri_pods.remove_pod, pod)
        await items.until(lambda _: [e.kind for e in items.of_pod(pod.sandbox_id)][1:] == POD_END)
        assert [e.kind for e in items.of_container(cid)] == CONTAINER_START + CONTAINER_END

        # read off the socket, independently of the plugin's codec: every reply OK, and empty
        # but for the subscription mask and Synchronize's `more` echo
        # Configure, Synchronize, the pod's 5 calls up to its start, its 4 to its removal
        with trio.fail_after(WAIT):
            await tap.wait_for(lambda: len(tap.replies) >= 2 + 5 + 4)
        assert {r.code for r in tap.replies} == {0}
        assert tap.methods() >= {"Configure", "Synchronize", "StateChange", "CreateContainer",
                                 "StopContainer"}  # fmt: skip
        for reply in tap.replies:
            if reply.method == "Configure":
                assert wire_fields(reply.payload) == {2: [MASK]}  # ConfigureResponse.events
            elif reply.method == "Synchronize":
                assert 1 not in wire_fields(reply.payload)  # no SynchronizeResponse.update
            else:
                assert reply.payload == b"", reply
        configure = next(r for r in tap.replies if r.method == "Configure")
        mask = api_pb2.ConfigureResponse.FromString(configure.payload).events
        assert mask == MASK


async def test_it_registers_again_after_containerd_is_killed(
    nri_containerd: PrivateContainerd, nri_pods: Pods
) -> None:
    survivor = await run(workspace, nri_pods, "nri-survivor")
    async with open_nri_plugin(plugin_settings(nri_containerd.nri_socket)) as plugin:
        items = Items(plugin)
        with trio.fail_after(WAIT):
            await plugin.registrations.wait_value(1)
        await items.until(lambda seen: len(items.listings()) == 1)
        await run(nri_containerd.kill9)
        with trio.fail_after(WAIT):
            await plugin.registered.wait_value(False)
        await run(nri_containerd.start)
        with trio.fail_after(WAIT):
            await plugin.registrations.wait_value(2)
        # a full listing again: the pod that lived through the crash is in it
        await items.until(lambda seen: len(items.listings()) == 2)
        assert survivor.sandbox_id in {p.id for p in items.listings()[1].pods}
        # and the events come again
        pod = await run(workspace, nri_pods, "nri-after-crash")
        cid = pod.containers["workspace"]
        await items.until(lambda _: [e.kind for e in items.of_container(cid)] == CONTAINER_START)
        assert plugin.stats.registrations == 2


PLUGIN_PROCESS = """
import sys, trio
from watcher.nri import open_nri_plugin
from watcher.settings import NriSettings

async def main() -> None:
    async with open_nri_plugin(NriSettings(socket=sys.argv[1])) as plugin:
        async for _ in plugin.events:
            pass

trio.run(main)
"""


async def test_a_plugin_killed_mid_call_holds_no_pod_start_up(
    nri_containerd: PrivateContainerd, nri_pods: Pods, sockdir: str
) -> None:
    # the plugin in a process of its own, behind a tap that withholds containerd's
    # CreateContainer from it: containerd waits for an answer when the plugin is SIGKILLed
    def hold(method: str) -> bool:
        return method == "CreateContainer"

    async with (
        open_nri_wiretap(nri_containerd.nri_socket, sockdir, hold=hold) as tap,
        trio.open_nursery() as nursery,
    ):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", PLUGIN_PROCESS, tap.address], cwd=REPO
        )
        try:
            with trio.fail_after(WAIT):
                await tap.wait_for(lambda: "Synchronize" in tap.methods())  # registered
            started: list[float] = []

            async def start_pod() -> None:
                begun = time.monotonic()
                await run(workspace, nri_pods, "nri-killed")
                started.append(time.monotonic() - begun)

            nursery.start_soon(start_pod)
            with trio.fail_after(WAIT):
                await tap.held.wait()  # containerd is waiting for the plugin's answer now
            process.kill()
            with trio.fail_after(WAIT):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    [took] = started
    assert took < REQUEST_TIMEOUT / 2, f"the pod took {took:.1f} s to start"
    # the call was in flight when the plugin died: containerd saw the connection close, not
    # a deadline pass
    log = nri_containerd.log_tail(200)
    assert "failed to handle CreateContainer request: ttrpc: closed" in log
    [pod] = nri_pods.pods
    assert await run(nri_pods.cri.container_pid, pod.containers["workspace"]) > 0
