"""The watcher's metrics against a real containerd: they count the events of real pods, and a
SIGKILLed containerd's outage.

Nothing here sleeps to let the watcher catch up. A sandbox's events change nothing anybody
can await on the watcher, so a barrier stands in: a spy subscription (as the watcher's, to
the same exchange) sees the last events of the pods under test; a sentinel pod made after that
publishes only later events, and containerd delivers to each subscriber in the order it
published, so once the watcher says the sentinel runs, it has applied every event the spy saw
and all that came before them. The spy is needed because a shim's events reach the exchange
asynchronously: a task's delete may come after its container's. And one may not come at all:
containerd 2.1 at times delivers no `/tasks/delete` for a sandbox's task (not within a minute,
to the spy or the watcher), so nothing here counts on it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import trio
from prometheus_client.parser import text_string_to_metric_families

from watcher.client import open_client
from watcher.metrics import Metrics, render
from watcher.testing import labels
from watcher.testing.containerd import PrivateContainerd
from watcher.testing.pods import Pod, Pods
from watcher.testing.watching import run, watching

WAIT = 60.0  # only reached when something is broken
#: what containerd publishes of each container of a pod (sandbox and app containers alike)
LIFE = ("/containers/create", "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete",
        "/containers/delete")  # fmt: skip
#: the last of them, which a shim may forward late
ENDS = LIFE[3:]

Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: Metrics) -> Scrape:
    """Every sample, parsed from the text a scraper gets: (name, labels) → value."""
    body, _ = render(metrics)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def get(scraped: Scrape, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def grew(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return get(after, name, **labels) - get(before, name, **labels)


class Spy:
    """Another subscriber to containerd's events: says when it has seen lives end."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()  # (topic, container id)
        self._changed = trio.Event()

    async def follow(
        self, address: str, namespace: str, task_status: trio.TaskStatus[None]
    ) -> None:
        async with open_client(address, namespace) as client, client.subscribe() as events:
            task_status.started()
            async for envelope in events:
                cid = getattr(envelope.event, "container_id", None)
                if cid is not None:
                    self.seen[envelope.topic, cid] += 1
                    self._changed.set()
                    self._changed = trio.Event()

    async def wait_ends(self, pods: Iterable[Pod]) -> None:
        """Until every container of `pods` ended and was deleted (but for the sandboxes' task
        deletes, see above)."""
        expected = [
            (topic, cid)
            for pod in pods
            for cid in (pod.sandbox_id, *pod.containers.values())
            for topic in ENDS
            if (topic, cid) != ("/tasks/delete", pod.sandbox_id)
        ]
        with trio.move_on_after(WAIT):
            while any(not self.seen[e] for e in expected):
                await self._changed.wait()
        assert [e for e in expected if not self.seen[e]] == []


async def test_counters_count_the_events_of_real_pods(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    spy = Spy()
    # no safety relist: the sentinel's `running` must come from its events (see below)
    async with watching(containerd, relist_interval=0) as (w, _), trio.open_nursery() as nursery:
        await nursery.start(spy.follow, containerd.address, w.settings.namespace)
        before = scrape(w.metrics)
        made = []
        for i in (1, 2):
            iid = f"inst-metrics-{i}"
            made.append(
                await run(pods.run_pod, f"ws-m{i}", labels=labels.mk2_labels(iid, "w", "o"))
            )
            with trio.fail_after(WAIT):
                await w.wait_for_container(iid)
        during = scrape(w.metrics)
        assert get(during, "ws_watcher_workspaces", state="running") == 2
        assert get(during, "ws_watcher_followers") == 1  # `watching` collects the changes
        assert get(during, "ws_watcher_ready") == 1
        for i, pod in enumerate(made, 1):
            await run(pods.remove_pod, pod)
            with trio.fail_after(WAIT):
                await w.wait_for_container_stop(f"inst-metrics-{i}")
        await spy.wait_ends(made)
        await run(pods.run_pod, "ws-m-sentinel", labels=labels.mk2_labels("sentinel", "w", "o"))
        with trio.fail_after(WAIT):
            await w.wait_for_container("sentinel")
        after = scrape(w.metrics)
        nursery.cancel_scope.cancel()

    def changes(kind: str) -> float:
        return grew(before, after, "ws_watcher_changes_total", kind=kind)

    def events(topic: str) -> float:
        return grew(before, after, "ws_watcher_events_total", topic=topic)

    # two whole lifecycles, and the sentinel's start
    assert [changes(k) for k in ("created", "running", "exited", "removed")] == [3, 3, 2, 2]
    assert changes("synced") == changes("disconnected") == 0
    # starts: the three pods' sandboxes and workspace containers (the sentinel's workspace
    # task may start a moment after it is `running`); ends: the two removed pods'
    counted = {topic: events(topic) for topic in LIFE}
    assert counted["/containers/create"] == 6, counted
    assert counted["/tasks/create"] == 6, counted
    assert counted["/tasks/start"] in (5, 6), counted
    assert counted["/tasks/exit"] == counted["/containers/delete"] == 4, counted
    assert 2 <= counted["/tasks/delete"] <= 4, counted  # the sandboxes': see above
    assert get(after, "ws_watcher_workspaces", state="running") == 1
    assert get(after, "ws_watcher_last_event_age_seconds") >= 0
    assert get(after, "ws_watcher_last_event_timestamp_seconds") > 0
    # a Get per new container (sandboxes and workspace containers), none left in flight
    assert grew(before, after, "ws_watcher_lookup_seconds_count", lookup="container") >= 6
    assert get(after, "ws_watcher_lookups_in_flight") == 0
    waited = {
        (wait, outcome): grew(
            before, after, "ws_watcher_wait_seconds_count", wait=wait, outcome=outcome
        )
        for wait in ("running", "stop")
        for outcome in ("done", "cancelled")
    }
    assert waited == {
        ("running", "done"): 3, ("running", "cancelled"): 0,
        ("stop", "done"): 2, ("stop", "cancelled"): 0,
    }  # fmt: skip
    assert get(after, "ws_watcher_reconnects_total") == 0
    assert get(after, "ws_watcher_disconnected_seconds_total") == 0


async def test_a_sigkilled_containerd_counts_a_reconnect_and_its_outage(
    containerd: PrivateContainerd, pods: Pods
) -> None:
    await run(pods.run_pod, "ws-m-kill", labels=labels.mk2_labels("inst-m-kill", "w", "o"))
    async with watching(containerd) as (w, _):
        with trio.fail_after(WAIT):
            await w.wait_for_container("inst-m-kill")
        assert get(scrape(w.metrics), "ws_watcher_reconnects_total") == 0
        await run(containerd.kill9)
        with trio.fail_after(WAIT):
            await w.wait_ready(False)
        down = scrape(w.metrics)
        assert get(down, "ws_watcher_ready") == 0
        assert get(down, "ws_watcher_changes_total", kind="disconnected") == 1
        assert get(down, "ws_watcher_reconnects_total") == 0  # not yet
        await run(containerd.start)
        with trio.fail_after(WAIT):
            await w.wait_ready()
        up = scrape(w.metrics)
    assert get(up, "ws_watcher_ready") == 1
    assert get(up, "ws_watcher_reconnects_total") == 1
    # at least as long as it took to start containerd again, which is not instant
    outage = get(up, "ws_watcher_disconnected_seconds_total")
    assert outage > get(down, "ws_watcher_disconnected_seconds_total") > 0
    assert get(up, "ws_watcher_changes_total", kind="synced") == 2  # the first sync, the resync
    assert get(up, "ws_watcher_changes_total", kind="disconnected") == 1
    # the resync found the workspace as it was: nothing new said of it
    assert get(up, "ws_watcher_changes_total", kind="running") == 1
    assert get(up, "ws_watcher_workspaces", state="running") == 1
