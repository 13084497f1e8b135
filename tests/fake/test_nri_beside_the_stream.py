"""The watcher with NRI beside the event stream, on the fake containerd and a fake NRI runtime.

NRI tells a workspace before containerd holds it: the watcher publishes `created` (and
`starting`) from NRI alone, then `running` from the stream, each once; a container whose
creation NRI announced and then withdrew is `created`, then `removed`; one NRI announced and
containerd never made (killed in between: no withdrawal comes) is `removed` by a listing the
index asks for once its start grace is over, with safety relists off; what NRI tells while a
resync's listing is in flight is not undone by that listing. The plugin's counters are
scraped with the watcher's metrics. Against real containerd 1.7 and 2.1 with NRI on:
`tests/integration/test_nri.py` (the plugin) and `test_watcher_nri.py` (the watcher).
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from containerd_protos.nri.pkg.api import api_pb2
from watcher.metrics import Metrics, render
from watcher.published import Change, ChangeKind, Lagged, WorkspaceChange
from watcher.settings import NriSettings
from watcher.testing.fake import FakeContainerd, Rpc, pod_ids
from watcher.testing.fake_nri import FakeRuntimeConnection, open_fake_nri_runtime
from watcher.testing.labels import kubelet_labels, mk2_labels
from watcher.watcher import Settings, Watcher, open_watcher

PATIENCE = 10.0


@asynccontextmanager
async def nri_watcher(
    fake: FakeContainerd, sockdir: str, **overrides: Any
) -> AsyncIterator[tuple[Watcher, FakeRuntimeConnection, list[Change]]]:
    """A watcher on `fake` with NRI from a fake runtime, registered; its changes collected.
    No safety relists (`overrides` may set other settings)."""
    path = os.path.join(sockdir, "nri.sock")
    nri = NriSettings(socket=path, backoff_initial=0.01, backoff_max=0.1)
    seen: list[Change] = []
    async with open_fake_nri_runtime(path) as runtime:
        settings = Settings(address=fake.address, relist_interval=0, nri=nri, **overrides)
        async with open_watcher(settings=settings) as w, trio.open_nursery() as nursery:
            with w.changes() as stream:

                async def collect() -> None:
                    async for change in stream:
                        assert not isinstance(change, Lagged)
                        seen.append(change)

                nursery.start_soon(collect)
                conn = await runtime.accept()
                await conn.register()
                try:
                    yield w, conn, seen
                finally:
                    nursery.cancel_scope.cancel()


def pod_and_container(name: str, iid: str) -> tuple[api_pb2.PodSandbox, api_pb2.Container]:
    """The pod and its workspace container as NRI describes them, with the ids the fake
    containerd will give them."""
    uid, sid, cids = pod_ids(name)
    pod = api_pb2.PodSandbox(
        id=sid, name=name, uid=uid, namespace="default",
        labels={**mk2_labels(iid, f"ws-{iid}", "owner"), **kubelet_labels(name, "default", uid)},
    )  # fmt: skip
    container = api_pb2.Container(
        id=cids["workspace"], pod_sandbox_id=sid, name="workspace",
        labels={"io.kubernetes.container.name": "workspace",
                **kubelet_labels(name, "default", uid)},
        annotations={"io.kubernetes.cri.image-name": "docker.io/gitpod/workspace-full:latest"},
        env=["GITPOD_TOKEN=secret"],
        linux=api_pb2.LinuxContainer(cgroups_path=f"/kubepods/besteffort/pod{uid}/{cids['workspace']}"),
    )  # fmt: skip
    return pod, container


async def state_change(
    conn: FakeRuntimeConnection,
    event: int,
    pod: api_pb2.PodSandbox,
    container: api_pb2.Container | None = None,
) -> None:
    request = api_pb2.StateChangeEvent(event=event, pod=pod, container=container)  # type: ignore[arg-type]
    reply = await conn.call("StateChange", request)
    assert reply.payload == b""  # observe only: nothing but the empty message


def scrape(metrics: Metrics) -> dict[str, float]:
    """Every unlabelled sample of a scrape, by name, as a scraper parses them."""
    body, _ = render(metrics)
    return {
        s.name: s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if not s.labels
    }


def kinds(seen: list[Change], cid: str) -> list[ChangeKind]:
    return [
        c.kind for c in seen if isinstance(c, WorkspaceChange) and c.workspace.container_id == cid
    ]


async def test_nri_tells_a_workspace_before_containerd_holds_it(
    fake: FakeContainerd, sockdir: str
) -> None:
    async with nri_watcher(fake, sockdir) as (w, conn, seen):
        pod, container = pod_and_container("ws-a", "inst-a")
        await state_change(conn, api_pb2.RUN_POD_SANDBOX, pod)
        reply = await conn.call(
            "CreateContainer", api_pb2.CreateContainerRequest(pod=pod, container=container)
        )
        assert reply.payload == b""
        with trio.fail_after(PATIENCE):
            ws = await w.wait_until(lambda: w.workspaces().get("inst-a"))  # type: ignore[call-overload]
        assert container.id not in fake.container_ids()  # containerd has not made it yet
        assert (ws.container_id, ws.sandbox_id, ws.pod_name) == (container.id, pod.id, "ws-a")
        assert ws.image == "docker.io/gitpod/workspace-full:latest"
        assert ws.cgroup_path == container.linux.cgroups_path
        assert not ws.running and ws.scheme == "gitpod-mk2"

        await state_change(conn, api_pb2.START_CONTAINER, pod, container)
        with trio.fail_after(PATIENCE):
            while kinds(seen, container.id) != [ChangeKind.CREATED, ChangeKind.STARTING]:
                await trio.testing.wait_all_tasks_blocked()

        fake.add_pod("ws-a", labels=mk2_labels("inst-a", "ws-inst-a", "owner"))  # the stream
        with trio.fail_after(PATIENCE):
            running = await w.wait_for_container("inst-a")
        await trio.testing.wait_all_tasks_blocked()
        assert running.container_id == container.id and running.pid is not None
        # what only containerd keeps comes with its record (a Get beside the stream): not
        # waited for by `running`, in the index soon after
        with trio.fail_after(PATIENCE):
            full = await w.wait_until(
                lambda: ws if (ws := w.container(container.id)).created_at is not None else None
            )
        assert full.log_path is not None and full.pid == running.pid
        assert kinds(seen, container.id) == [
            ChangeKind.CREATED, ChangeKind.STARTING, ChangeKind.RUNNING,
        ]  # fmt: skip
        # the plugin's counters, scraped with the watcher's: registered once, every call it
        # answered handed on (the listing at registration, RunPodSandbox, Create, Start)
        scraped = scrape(w.metrics)
        assert scraped["ws_watcher_nri_connected"] == 1
        assert scraped["ws_watcher_nri_registrations_total"] == 1
        assert scraped["ws_watcher_nri_events_delivered_total"] == 4
        assert scraped["ws_watcher_nri_events_dropped_total"] == 0


async def test_a_creation_nri_announced_and_withdrew_is_created_then_removed(
    fake: FakeContainerd, sockdir: str
) -> None:
    async with nri_watcher(fake, sockdir) as (w, conn, seen):
        pod, container = pod_and_container("ws-b", "inst-b")
        await state_change(conn, api_pb2.RUN_POD_SANDBOX, pod)
        await conn.call(
            "CreateContainer", api_pb2.CreateContainerRequest(pod=pod, container=container)
        )
        with trio.fail_after(PATIENCE):
            await w.wait_until(lambda: w.workspaces().get("inst-b"))  # type: ignore[call-overload]
        await state_change(conn, api_pb2.REMOVE_CONTAINER, pod, container)
        with trio.fail_after(PATIENCE):
            await w.wait_for_container_stop("inst-b")
        await trio.testing.wait_all_tasks_blocked()
        assert kinds(seen, container.id) == [ChangeKind.CREATED, ChangeKind.REMOVED]


async def test_nri_synchronize_and_the_stream_agree_on_a_running_workspace(
    fake: FakeContainerd, sockdir: str
) -> None:
    """A workspace running before the plugin registered: the stream's sync shows it first,
    NRI's Synchronize then adds nothing (containerd's record wins), no change twice."""
    fake.add_pod("ws-c", labels=mk2_labels("inst-c", "ws-inst-c", "owner"))
    async with nri_watcher(fake, sockdir) as (w, conn, seen):
        before = w.workspaces()["inst-c"]  # type: ignore[index]
        pod, container = pod_and_container("ws-c", "inst-c")
        await conn.synchronize(pods=[pod], containers=[container])
        await trio.testing.wait_all_tasks_blocked()
        assert w.workspaces()["inst-c"] == before  # type: ignore[index]
        assert kinds(seen, container.id) == []  # the initial sync published nothing new


async def test_a_creation_containerd_never_made_is_removed_after_the_start_grace(
    fake: FakeContainerd, sockdir: str
) -> None:
    """containerd lost between NRI's CreateContainer and its own creation: no event, no
    withdrawal will ever tell. The resync's listing keeps the container (it may still come),
    and asks for a listing after its start grace, which drops it: no safety relists here.
    Nothing was missed, so nothing is reported corrected (a relist grace of 0 would report
    a correction as soon as the listing made it)."""
    grace = 0.5
    async with nri_watcher(fake, sockdir, start_grace=grace, relist_grace=0) as (w, conn, seen):
        uid, _, _ = pod_ids("ws-d")
        fake.add_pod("ws-d", uid=uid, labels=mk2_labels("inst-d", "ws-inst-d", "o"),
                     containers=())  # fmt: skip  # the sandbox only: containerd has it
        pod, container = pod_and_container("ws-d", "inst-d")
        await conn.call(
            "CreateContainer", api_pb2.CreateContainerRequest(pod=pod, container=container)
        )
        with trio.fail_after(PATIENCE):
            await w.wait_until(lambda: w.workspaces().get("inst-d"))  # type: ignore[call-overload]
        fake.drop_streams()  # the watcher resyncs: its listing does not show the container
        with trio.fail_after(PATIENCE):
            await w.wait_ready(False)
            await w.wait_ready()
        assert w.workspaces().get("inst-d") is not None  # type: ignore[call-overload]
        with trio.fail_after(PATIENCE + grace):
            await w.wait_for_container_stop("inst-d")
        await trio.testing.wait_all_tasks_blocked()
        assert kinds(seen, container.id) == [ChangeKind.CREATED, ChangeKind.REMOVED]
        assert w.corrections == 0


async def test_what_nri_tells_while_a_resync_lists_is_not_undone_by_the_listing(
    fake: FakeContainerd, sockdir: str
) -> None:
    """A resync's listing is taken as of its start, and is authoritative: NRI's word given
    while it is in flight (a pod containerd made after the listing was taken) must not be
    undone by it. Here the listing's tasks are held while NRI tells a new workspace."""
    async with nri_watcher(fake, sockdir) as (w, conn, seen):
        fake.delay(Rpc.TASKS_LIST, math.inf)  # the resync's containers listed, then held
        fake.clear_calls()
        fake.drop_streams()
        with trio.fail_after(PATIENCE):
            await w.wait_ready(False)
        listed = await trio.to_thread.run_sync(
            lambda: fake.wait_for(
                lambda f: any(c.method == Rpc.TASKS_LIST for c in f.calls()), PATIENCE
            )
        )
        assert listed  # the listing is in flight, its containers taken
        pod, container = pod_and_container("ws-e", "inst-e")
        await state_change(conn, api_pb2.RUN_POD_SANDBOX, pod)
        await conn.call(
            "CreateContainer", api_pb2.CreateContainerRequest(pod=pod, container=container)
        )
        await trio.testing.wait_all_tasks_blocked()
        fake.clear_faults(Rpc.TASKS_LIST)  # the listing completes: the pod is not in it
        with trio.fail_after(PATIENCE):
            await w.wait_ready()
        fake.add_pod("ws-e", labels=mk2_labels("inst-e", "ws-inst-e", "owner"))  # containerd's
        with trio.fail_after(PATIENCE):
            await w.wait_for_container("inst-e")
        await trio.testing.wait_all_tasks_blocked()
        assert kinds(seen, container.id) == [ChangeKind.CREATED, ChangeKind.RUNNING]
