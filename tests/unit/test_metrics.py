"""The watcher's metrics: names, types, labels and help as a scraper parses them, each counter
fed through the calls the shell makes, and one registry per watcher."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio
import trio.testing
from prometheus_client import REGISTRY
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from record_builders import workspace

from watcher import metrics as metrics_module
from watcher.changes import ChangeHub, Lagged
from watcher.metrics import Histogram, Metrics, Readings, gauge, render
from watcher.nri import NriPlugin, NriStats, Synchronized
from watcher.published import ChangeKind, Disconnected, Synced, WorkspaceChange
from watcher.settings import NriSettings
from watcher.watcher import Settings, Watcher

#: family name (as the parser gives it: counters without `_total`) → type and label names
EXPECTED = {
    "ws_watcher_workspaces": ("gauge", {"state"}),
    "ws_watcher_ready": ("gauge", set()),
    "ws_watcher_events": ("counter", {"topic"}),
    "ws_watcher_last_event_timestamp_seconds": ("gauge", set()),
    "ws_watcher_last_event_age_seconds": ("gauge", set()),
    "ws_watcher_changes": ("counter", {"kind"}),
    "ws_watcher_followers": ("gauge", set()),
    "ws_watcher_changes_lost": ("counter", set()),
    "ws_watcher_relists": ("counter", set()),
    "ws_watcher_relist_failures": ("counter", set()),
    "ws_watcher_relist_changes": ("counter", {"kind"}),
    "ws_watcher_relist_corrections": ("counter", set()),
    "ws_watcher_reconnects": ("counter", set()),
    "ws_watcher_disconnected_seconds": ("counter", set()),
    "ws_watcher_lookups_in_flight": ("gauge", set()),
    "ws_watcher_lookup_seconds": ("histogram", {"lookup"}),
    "ws_watcher_wait_seconds": ("histogram", {"wait", "outcome"}),
}


def scrape(metrics: Metrics) -> dict[str, list[Sample]]:
    """Every sample of a scrape, by family name, parsed as a scraper would."""
    body, content_type = render(metrics)
    assert content_type.startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


def value(metrics: Metrics, sample: str, **labels: str) -> float:
    """One sample's value (0 when the scrape does not have it)."""
    for samples in scrape(metrics).values():
        for s in samples:
            if s.name == sample and s.labels == labels:
                return s.value
    return 0.0


def change(kind: ChangeKind) -> WorkspaceChange:
    return WorkspaceChange(kind=kind, ts=1.0, workspace=workspace())


def test_names_types_labels_and_help() -> None:
    metrics = Metrics()
    metrics.event("/tasks/start", 1.0)  # the last-event gauges have a sample once there is one
    body, _ = render(metrics)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert set(families) == set(EXPECTED)
    for name, family in families.items():
        kind, labels = EXPECTED[name]
        assert family.type == kind, name
        assert family.documentation, name
        assert family.samples, name
        for s in family.samples:
            assert set(s.labels) - {"le"} == labels, (name, s)
    # base units and counters' `_total` as the text format says them
    assert "# TYPE ws_watcher_events_total counter" in body.decode()
    assert "# TYPE ws_watcher_disconnected_seconds_total counter" in body.decode()
    # no `_created` gauges beside every counter and histogram series
    assert "_created" not in body.decode()


def test_every_series_is_there_from_the_start() -> None:
    samples = scrape(Metrics())
    kinds = {s.labels["kind"] for s in samples["ws_watcher_changes"]}
    assert kinds == {kind.value for kind in ChangeKind} | {"synced", "disconnected"}
    waits = {(s.labels["wait"], s.labels["outcome"]) for s in samples["ws_watcher_wait_seconds"]}
    assert waits == {(w, o) for w in ("running", "stop", "until") for o in ("done", "cancelled")}
    lookups = {s.labels["lookup"] for s in samples["ws_watcher_lookup_seconds"]}
    assert lookups == {"container", "location"}
    # no event yet: no age (neither 0 nor "since 1970")
    assert samples["ws_watcher_last_event_age_seconds"] == []


def test_each_watcher_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.event("/tasks/exit", 1.0)
    assert value(a, "ws_watcher_events_total", topic="/tasks/exit") == 1
    assert value(b, "ws_watcher_events_total", topic="/tasks/exit") == 0
    assert not [n for n in REGISTRY._names_to_collectors if n.startswith("ws_watcher_")]
    # two facades in one process, as two watchers in a test or a program
    assert Watcher(Settings()).metrics.registry is not Watcher(Settings()).metrics.registry


def test_events_by_topic_and_the_last_one(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics()
    for topic in ("/containers/create", "/tasks/create", "/tasks/start", "/tasks/start"):
        metrics.event(topic, 1000.0)
    monkeypatch.setattr(metrics_module.time, "time", lambda: 1002.5)
    assert value(metrics, "ws_watcher_events_total", topic="/tasks/start") == 2
    assert value(metrics, "ws_watcher_events_total", topic="/containers/create") == 1
    assert value(metrics, "ws_watcher_last_event_timestamp_seconds") == 1000.0
    assert value(metrics, "ws_watcher_last_event_age_seconds") == 2.5


def test_changes_by_kind_through_the_hub() -> None:
    metrics = Metrics()
    hub = ChangeHub(metrics=metrics)
    for kind in (ChangeKind.CREATED, ChangeKind.RUNNING, ChangeKind.RUNNING, ChangeKind.REMOVED):
        hub.publish(change(kind))
    hub.publish(Synced(ts=1.0, workspaces=0, initial=True))
    hub.publish(Disconnected(ts=2.0, error="gone"))
    counted = {
        s.labels["kind"]: s.value
        for s in scrape(metrics)["ws_watcher_changes"]
        if s.name.endswith("_total")
    }
    nonzero = {kind: n for kind, n in counted.items() if n}
    assert nonzero == {"created": 1, "running": 2, "removed": 1, "synced": 1, "disconnected": 1}
    assert counted["exited"] == 0  # there from the start, at 0


async def test_changes_lost_are_what_lagged_says() -> None:
    metrics = Metrics()
    hub = ChangeHub(buffer=3, metrics=metrics)
    with hub.subscribe() as slow, hub.subscribe() as fast:
        for n in range(10):
            hub.publish(Synced(ts=float(n), workspaces=n, initial=False))
            fast.take_ready()
        lagged = await slow.__anext__()
    assert isinstance(lagged, Lagged) and lagged.missed == 7
    assert value(metrics, "ws_watcher_changes_lost_total") == 7


def test_relists_and_what_they_changed() -> None:
    metrics = Metrics()
    metrics.relisted([change(ChangeKind.REMOVED), change(ChangeKind.REMOVED)])
    metrics.relisted([])
    metrics.relist_failed()
    assert value(metrics, "ws_watcher_relists_total") == 3
    assert value(metrics, "ws_watcher_relist_failures_total") == 1
    assert value(metrics, "ws_watcher_relist_changes_total", kind="removed") == 2
    assert value(metrics, "ws_watcher_relist_changes_total", kind="created") == 0


def test_the_state_is_read_at_scrape_time() -> None:
    now = Readings(workspaces={"running": 3, "exited": 1}, followers=2, ready=True, corrections=4)
    metrics = Metrics(lambda: now)
    assert value(metrics, "ws_watcher_workspaces", state="running") == 3
    assert value(metrics, "ws_watcher_workspaces", state="exited") == 1
    assert value(metrics, "ws_watcher_workspaces", state="created") == 0
    assert value(metrics, "ws_watcher_followers") == 2
    assert value(metrics, "ws_watcher_ready") == 1
    assert value(metrics, "ws_watcher_relist_corrections_total") == 4


def test_an_outage_counts_a_reconnect_and_its_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(metrics_module.time, "monotonic", lambda: clock[0])
    metrics = Metrics()
    metrics.reconnected()  # the initial sync is no reconnect
    assert value(metrics, "ws_watcher_reconnects_total") == 0
    metrics.disconnected()
    clock[0] = 103.0
    assert value(metrics, "ws_watcher_disconnected_seconds_total") == 3.0  # while it lasts
    metrics.disconnected()  # a second cause of the same outage starts nothing
    clock[0] = 104.0
    metrics.reconnected()
    clock[0] = 200.0
    assert value(metrics, "ws_watcher_disconnected_seconds_total") == 4.0
    assert value(metrics, "ws_watcher_reconnects_total") == 1


async def test_lookups_in_flight_and_their_latency() -> None:
    metrics = Metrics()
    entered = trio.Event()
    release = trio.Event()

    async def lookup() -> None:
        with metrics.lookup("container"):
            entered.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lookup)
        await entered.wait()
        assert value(metrics, "ws_watcher_lookups_in_flight") == 1
        release.set()
    assert value(metrics, "ws_watcher_lookups_in_flight") == 0
    assert value(metrics, "ws_watcher_lookup_seconds_count", lookup="container") == 1
    assert value(metrics, "ws_watcher_lookup_seconds_count", lookup="location") == 0


async def test_waits_of_the_facade_by_outcome() -> None:
    w = Watcher(Settings())  # not served: an empty index, enough for the waits' bookkeeping
    await w.wait_for_container_stop("nobody")  # none left: returns at once
    with trio.move_on_after(0.01):
        await w.wait_for_container("never")
    with trio.move_on_after(0.01):
        await w.wait_until(lambda: None)
    m = w.metrics
    assert value(m, "ws_watcher_wait_seconds_count", wait="stop", outcome="done") == 1
    assert value(m, "ws_watcher_wait_seconds_count", wait="running", outcome="cancelled") == 1
    assert value(m, "ws_watcher_wait_seconds_count", wait="until", outcome="cancelled") == 1
    assert value(m, "ws_watcher_wait_seconds_count", wait="running", outcome="done") == 0
    assert value(m, "ws_watcher_wait_seconds_sum", wait="running", outcome="cancelled") >= 0.01


def test_the_facade_reads_its_own_state() -> None:
    w = Watcher(Settings())
    with w.changes(), w.changes():
        assert value(w.metrics, "ws_watcher_followers") == 2
    assert value(w.metrics, "ws_watcher_followers") == 0
    assert value(w.metrics, "ws_watcher_ready") == 0
    assert value(w.metrics, "ws_watcher_workspaces", state="running") == 0


NRI_FAMILIES = {
    "ws_watcher_nri_connected": "gauge",
    "ws_watcher_nri_registrations": "counter",
    "ws_watcher_nri_events_delivered": "counter",
    "ws_watcher_nri_events_dropped": "counter",
}


def nri_stats(**counts: int | bool) -> NriStats:
    fields: dict[str, int | bool] = {
        "registrations": 0, "registered": False, "delivered": 0, "dropped": 0,
        "protocol_errors": 0, "bad_messages": 0, "late_replies": 0,
    }  # fmt: skip
    return NriStats(**(fields | counts))  # type: ignore[arg-type]


def test_nri_metrics_only_with_nri_on() -> None:
    assert not set(NRI_FAMILIES) & set(scrape(Metrics()))  # off: no zeros that read as "on"
    now = Readings(nri=nri_stats(registrations=3, registered=True, delivered=41, dropped=2))
    metrics = Metrics(lambda: now)
    body, _ = render(metrics)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name, kind in NRI_FAMILIES.items():
        assert families[name].type == kind and families[name].documentation, name
        assert [set(s.labels) for s in families[name].samples] == [set()], name
    assert value(metrics, "ws_watcher_nri_connected") == 1
    assert value(metrics, "ws_watcher_nri_registrations_total") == 3
    assert value(metrics, "ws_watcher_nri_events_delivered_total") == 41
    assert value(metrics, "ws_watcher_nri_events_dropped_total") == 2
    now = Readings(nri=nri_stats(registrations=3))  # containerd gone: not connected
    assert value(metrics, "ws_watcher_nri_connected") == 0


async def test_the_loop_reports_the_plugin_it_follows(sockdir: str) -> None:
    """The watcher's metrics read the NRI plugin's counters once it follows one."""
    w = Watcher(Settings())
    assert w._loop.readings().nri is None
    plugin = NriPlugin(NriSettings(socket=f"{sockdir}/nri.sock"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w._loop.follow_nri, plugin)
        await trio.testing.wait_all_tasks_blocked()
        plugin._deliver(Synchronized(pods=(), containers=(), ts=1.0, mono=1.0))
        await trio.testing.wait_all_tasks_blocked()
        assert w._loop.readings().nri == plugin.stats
        assert value(w.metrics, "ws_watcher_nri_events_delivered_total") == 1
        assert value(w.metrics, "ws_watcher_nri_connected") == 0
        nursery.cancel_scope.cancel()


class _Constant:
    """A collector of one gauge, as a program that serves the watcher adds its own."""

    def __init__(self, name: str) -> None:
        self.name = name

    def collect(self) -> list[Metric]:
        return [gauge(self.name, "A test's own gauge.", 1)]


def test_collectors_included_are_scraped_with_the_watchers_own() -> None:
    metrics = Metrics()
    metrics.include(_Constant("early"))  # before the registry is made (no scrape yet)
    assert value(metrics, "ws_watcher_early") == 1
    metrics.include(_Constant("late"))  # after
    assert value(metrics, "ws_watcher_late") == 1
    assert value(metrics, "ws_watcher_early") == 1


def test_openmetrics_when_the_scraper_asks() -> None:
    metrics = Metrics()
    body, content_type = render(metrics, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    body, content_type = render(metrics, "text/plain")
    assert content_type.startswith("text/plain") and b"# EOF" not in body


def test_histogram_buckets_hold_values_up_to_their_bound() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(value)
    assert h.cumulative() == [(0.1, 2), (1.0, 4), (float("inf"), 5)]
    assert h.count == 5 and h.sum == pytest.approx(8.65)


def test_prometheus_client_is_loaded_by_a_scrape_only() -> None:
    """Every CLI command makes a watcher; only a scrape pays for prometheus_client's import."""
    code = (
        "import sys, watcher.cli\n"
        "from watcher.watcher import Settings, Watcher\n"
        "w = Watcher(Settings())\n"
        "w.metrics.event('/tasks/start', 1.0)\n"
        "print('prometheus_client' in sys.modules)\n"
        "from watcher.metrics import render\n"
        "render(w.metrics)\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "True"], done.stderr
