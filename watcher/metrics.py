"""The watcher's Prometheus metrics: one `Metrics` per watcher, in a registry of its own.

Synopsis::

    async with open_watcher(address) as w:
        body, content_type = render(w.metrics)            # what `/metrics` answers
        w.metrics.registry                                 # for anything else that scrapes

What happens per event, change or lookup (events by topic, changes by kind, changes lost,
the last event's time, lookups in flight) is counted in plain ints and dicts and made into
metrics when scraped: a prometheus_client counter takes a lock and a few checks per `inc()`,
ten times a dict increment (`event()` cost 1.5 µs through a labelled counter, 0.14 µs now).
prometheus_client's own metric objects count only what is rarer (relists, reconnects, the
durations of lookups and waits). What is *state* rather than an event — the workspaces
tracked, the followers, readiness, the time spent disconnected so far — is read when scraped
(`Readings`), so it costs nothing between scrapes.

Each watcher has its own `CollectorRegistry`, never prometheus_client's global one: two
watchers in one process (tests, a program watching two containerds) would otherwise collide
on the metric names. Process metrics (CPU, RSS) belong to the process, not to a watcher, and
are left to whoever serves the registry.

Everything here is called on the watcher's trio thread, and so is `render` (the loop mutates
what the scrape reads).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from .published import Change, ChangeKind, Disconnected, Synced, WorkspaceChange

__all__ = ["PREFIX", "Metrics", "Readings", "render"]

PREFIX = "ws_watcher_"
#: a containerd round trip: a millisecond idle, seconds when hundreds of pods start at once
LOOKUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: a wait lasts as long as a pod takes to start (seconds, minutes with a slow image pull)
WAIT_BUCKETS = (0.005, 0.05, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: the lookups the loop makes for the stream: a new container's record (Containers.Get),
#: where a task's files are (the mount table, Snapshots.Mounts)
LOOKUPS = ("container", "location")
#: the waits of the facade
WAITS = ("running", "stop", "until")
#: the `kind` of changes: that of lifecycle changes, and the others' by their type
_OTHER: dict[type, str] = {Synced: "synced", Disconnected: "disconnected"}
CHANGE_KINDS = (*(kind.value for kind in ChangeKind), *_OTHER.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class Readings:
    """The watcher's state as a scrape reads it (the loop builds one per scrape)."""

    #: workspaces tracked, by state (`created`, `running`, `exited`)
    workspaces: Mapping[str, int] = field(default_factory=dict)
    followers: int = 0
    ready: bool = False
    #: changes of safety relists whose events never came (`Corrections.count`)
    corrections: int = 0


class _Timed:
    """Times one lookup and counts it in flight; a fresh one per lookup (they overlap)."""

    __slots__ = ("_histogram", "_metrics", "_start")

    def __init__(self, histogram: Histogram, metrics: Metrics) -> None:
        self._histogram = histogram
        self._metrics = metrics
        self._start = 0.0

    def __enter__(self) -> None:
        self._metrics.lookups_in_flight += 1
        self._start = time.perf_counter()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._metrics.lookups_in_flight -= 1
        self._histogram.observe(time.perf_counter() - self._start)


class _Waiting:
    """Times one wait; `outcome` says whether it returned or its caller gave up on it."""

    __slots__ = ("_histogram", "_start", "_what")

    def __init__(self, histogram: Histogram, what: str) -> None:
        self._histogram = histogram
        self._what = what
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        outcome = "done" if kind is None else "cancelled"
        self._histogram.labels(wait=self._what, outcome=outcome).observe(
            time.perf_counter() - self._start
        )


class Metrics:
    """One watcher's metrics, and the calls by which its shell counts.

    `registry` holds them all. The loop calls `event`, `relisted`, `relist_failed`,
    `lookup`, `disconnected` and `reconnected`; the change hub calls `published` and `lost`;
    the facade calls `waiting`. `read` (set by the loop) tells the state at scrape time.
    """

    def __init__(self, read: Callable[[], Readings] | None = None) -> None:
        self.read = read or Readings
        self.registry = CollectorRegistry()
        self.relists = Counter(
            f"{PREFIX}relists",
            "Safety relists beside the stream, failed ones included.",
            registry=None,
        )
        self.relist_failures = Counter(
            f"{PREFIX}relist_failures",
            "Safety relists that failed or missed their deadline.",
            registry=None,
        )
        self.relist_changes = Counter(
            f"{PREFIX}relist_changes",
            "Lifecycle changes made by safety relists, by kind: what the stream had not said "
            "(yet: corrections are those it never said).",
            ["kind"],
            registry=None,
        )
        self.reconnects = Counter(
            f"{PREFIX}reconnects", "Resyncs with containerd after losing it.", registry=None
        )
        self.lookup_seconds = Histogram(
            f"{PREFIX}lookup_seconds",
            "Duration of the stream's lookups (each attempt), by what they look up.",
            ["lookup"],
            buckets=LOOKUP_BUCKETS,
            registry=None,
        )
        self.wait_seconds = Histogram(
            f"{PREFIX}wait_seconds",
            "Duration of waits, by wait (running: wait_for_container, stop: "
            "wait_for_container_stop, until: wait_until) and outcome (done, or cancelled by "
            "the caller).",
            ["wait", "outcome"],
            buckets=WAIT_BUCKETS,
            registry=None,
        )
        # labelled children made up front: each series is there (at 0) from the start
        self._relist_changes = {k: self.relist_changes.labels(kind=k.value) for k in ChangeKind}
        self._lookups = {what: self.lookup_seconds.labels(lookup=what) for what in LOOKUPS}
        for what in WAITS:
            for outcome in ("done", "cancelled"):
                self.wait_seconds.labels(wait=what, outcome=outcome)
        # --- counted per event or change, exported by `_Scraped` (see the module's doc)
        #: events applied, by topic: those of modelled events only (the loop skips the
        #: others), a dozen topics at most
        self.events: dict[str, int] = {}
        #: changes published, by kind (the `event` of `watch` lines)
        self.changes: dict[str, int] = dict.fromkeys(CHANGE_KINDS, 0)
        self.changes_lost = 0
        self.lookups_in_flight = 0
        #: when the last event arrived (seconds since the epoch, as stamped by the client)
        self.last_event: float | None = None
        self._down_since: float | None = None  # monotonic
        self._down_seconds = 0.0
        pushed = (
            self.relists, self.relist_failures, self.relist_changes, self.reconnects,
            self.lookup_seconds, self.wait_seconds,
        )  # fmt: skip
        self.registry.register(_Pushed(pushed))
        self.registry.register(_Scraped(self))

    # --- the loop ----------------------------------------------------------------------

    def event(self, topic: str, ts: float) -> None:
        """One event of the stream is applied (the hot path: a dict increment)."""
        self.last_event = ts
        events = self.events
        events[topic] = events.get(topic, 0) + 1

    def relisted(self, changes: Sequence[WorkspaceChange]) -> None:
        self.relists.inc()
        for change in changes:
            self._relist_changes[change.kind].inc()

    def relist_failed(self) -> None:
        self.relists.inc()
        self.relist_failures.inc()

    def lookup(self, what: str) -> _Timed:
        """`with metrics.lookup("container"): await ...` — one round trip, timed."""
        return _Timed(self._lookups[what], self)

    def disconnected(self) -> None:
        """An outage begins (called once per outage)."""
        if self._down_since is None:
            self._down_since = time.monotonic()

    def reconnected(self) -> None:
        """The watcher is synced again after an outage."""
        if self._down_since is not None:
            self._down_seconds += time.monotonic() - self._down_since
            self._down_since = None
            self.reconnects.inc()

    def disconnected_seconds(self) -> float:
        """Seconds spent disconnected, the current outage included."""
        since = self._down_since
        return self._down_seconds + (0.0 if since is None else time.monotonic() - since)

    # --- the change hub ----------------------------------------------------------------

    def published(self, change: Change) -> None:
        """One change is published (the hot path: a dict increment)."""
        if isinstance(change, WorkspaceChange):
            # `_value_`, not `value` (a property) nor the member as a key (Enum's `__hash__`
            # is Python code): a third of the cost of this call
            self.changes[change.kind._value_] += 1
        else:
            self.changes[_OTHER[type(change)]] += 1

    def lost(self, count: int = 1) -> None:
        """A follower's buffer dropped `count` changes (as many as its `Lagged` will say)."""
        self.changes_lost += count

    # --- the facade --------------------------------------------------------------------

    def waiting(self, what: str) -> _Waiting:
        """`with metrics.waiting("running"): await ...` — one wait, timed."""
        return _Waiting(self.wait_seconds, what)


class _Pushed(Collector):
    """The metrics the shell counts into, without their `_created` series.

    prometheus_client adds to every counter and histogram (and each of their labelled
    children) a `_created` timestamp, which the text format exposes as one more gauge per
    series: twice the series for nothing an operator asks here. Turning it off is a process-
    wide switch (`disable_created_metrics`) that a library must not flip for its host
    program, so the samples are left out here instead.
    """

    def __init__(self, metrics: Sequence[MetricWrapperBase]) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        for metric in self._metrics:
            yield from metric.describe()

    def collect(self) -> Iterable[Metric]:
        for metric in self._metrics:
            for family in metric.collect():
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                yield family


class _Scraped(Collector):
    """What is counted in plain ints, and what is state: made into metrics when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # names only: the registry checks them for clashes when registering, before the
        # loop that `read` asks exists
        return self._families(Readings(), describe=True)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._metrics.read(), describe=False)

    def _families(self, now: Readings, *, describe: bool) -> list[Metric]:
        m = self._metrics
        workspaces = GaugeMetricFamily(
            f"{PREFIX}workspaces",
            "Workspaces tracked (each instance's newest container), by state.",
            labels=["state"],
        )
        for state in ("created", "running", "exited"):
            workspaces.add_metric([state], now.workspaces.get(state, 0))
        events = CounterMetricFamily(
            f"{PREFIX}events",
            "Events of containerd's stream applied to the index, by topic.",
            labels=["topic"],
        )
        for topic, count in sorted(m.events.items()):
            events.add_metric([topic], count)
        changes = CounterMetricFamily(
            f"{PREFIX}changes",
            "Changes published to followers, by kind (the `event` of `watch` lines).",
            labels=["kind"],
        )
        for kind, count in m.changes.items():
            changes.add_metric([kind], count)
        families: list[Metric] = [
            events,
            changes,
            GaugeMetricFamily(
                f"{PREFIX}lookups_in_flight",
                "Round trips to containerd in flight for the stream's needs.",
                value=m.lookups_in_flight,
            ),
            CounterMetricFamily(
                f"{PREFIX}changes_lost",
                "Changes dropped from lagging followers' buffers (each follower counts its own).",
                value=m.changes_lost,
            ),
            workspaces,
            GaugeMetricFamily(
                f"{PREFIX}followers",
                "Followers of changes() (watch, API clients).",
                value=now.followers,
            ),
            GaugeMetricFamily(
                f"{PREFIX}ready",
                "1 when connected to containerd and synced, else 0.",
                value=1 if now.ready else 0,
            ),
            CounterMetricFamily(
                f"{PREFIX}relist_corrections",
                "Changes of safety relists whose events never came within the grace: "
                "events the stream missed.",
                value=now.corrections,
            ),
            CounterMetricFamily(
                f"{PREFIX}disconnected_seconds",
                "Seconds spent disconnected from containerd, the current outage included.",
                value=0.0 if describe else m.disconnected_seconds(),
            ),
        ]
        last = m.last_event
        stamp = GaugeMetricFamily(
            f"{PREFIX}last_event_timestamp_seconds",
            "When the last event of containerd's stream arrived (Unix time).",
        )
        age = GaugeMetricFamily(
            f"{PREFIX}last_event_age_seconds", "Seconds since the last event of the stream."
        )
        # no event yet: no sample (an age of 0 or of the epoch would be a lie)
        if last is not None and not describe:
            stamp.add_metric([], last)
            age.add_metric([], max(0.0, time.time() - last))
        return [*families, stamp, age]


def render(metrics: Metrics, accept: str | None = None) -> tuple[bytes, str]:
    """The body and content type of a scrape of `metrics`: Prometheus' text format, or
    OpenMetrics when the scraper's `Accept` header (`accept`) asks for it."""
    if accept is None:
        return generate_latest(metrics.registry), CONTENT_TYPE_LATEST
    encoder, content_type = choose_encoder(accept)
    return encoder(metrics.registry), content_type
