"""The watcher's Prometheus metrics: one `Metrics` per watcher, in a registry of its own.

Synopsis::

    async with open_watcher(address) as w:
        body, content_type = render(w.metrics)            # what `/metrics` answers
        w.metrics.registry                                 # for anything else that scrapes

The shell counts in plain ints, dicts and bucket lists (`Histogram`), and they become
Prometheus metrics only when scraped. prometheus_client's own metric objects take a lock and
a few checks per update (`event()` cost 1.5 µs through a labelled `Counter`, 0.14 µs as a
dict increment; a lookup's timing 14 000 instructions through its `Histogram`), and importing
prometheus_client costs ~50 ms of start-up, which every CLI command would pay: it is imported
when a registry is first asked for. What is *state* rather than an event — the workspaces
tracked, the followers, readiness — is read when scraped (`Readings`), so it costs nothing
between scrapes.

Each watcher has its own `CollectorRegistry`, never prometheus_client's global one: two
watchers in one process (tests, a program watching two containerds) would otherwise collide
on the metric names. Process metrics (CPU, RSS) belong to the process, not to a watcher, and
are left to whoever serves the registry.

Everything here is called on the watcher's trio thread, and so is `render` (the loop mutates
what a scrape reads).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from .published import Change, ChangeKind, Disconnected, Synced, WorkspaceChange

# `Metric` is re-exported: the type of what a collector's `collect` returns (the service's
# too), so that only this module names prometheus_client
if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric as Metric
    from prometheus_client.registry import Collector

    from .nri.plugin import NriStats  # loaded only when NRI is asked for

__all__ = [
    "PREFIX",
    "Histogram",
    "Metrics",
    "Readings",
    "counter",
    "gauge",
    "histogram",
    "labelled",
    "render",
]

PREFIX = "ws_watcher_"
#: a containerd round trip: a millisecond idle, seconds when hundreds of pods start at once
LOOKUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: a wait lasts as long as a pod takes to start (seconds, minutes with a slow image pull)
WAIT_BUCKETS = (0.005, 0.05, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: the lookups the loop makes for the stream: a new container's record (Containers.Get),
#: where a task's files are (the mount table, Snapshots.Mounts)
LOOKUPS = ("container", "location")
#: the waits of the facade, and how they end: returned, or given up by the caller
WAITS = ("running", "stop", "until")
OUTCOMES = ("done", "cancelled")
#: the `kind` of changes (the `event` of `watch` lines): lifecycle changes' own, the others'
#: by their type
LIFECYCLE = tuple(kind.value for kind in ChangeKind)
_OTHER: dict[type, str] = {Synced: "synced", Disconnected: "disconnected"}
CHANGE_KINDS = (*LIFECYCLE, *_OTHER.values())
STATES = ("created", "running", "exited")


@dataclass(frozen=True, slots=True, kw_only=True)
class Readings:
    """The watcher's state as a scrape reads it (the loop builds one per scrape)."""

    #: workspaces tracked, by state (`created`, `running`, `exited`)
    workspaces: Mapping[str, int] = field(default_factory=dict)
    followers: int = 0
    ready: bool = False
    #: changes of safety relists whose events never came (`Corrections.count`)
    corrections: int = 0
    #: the NRI plugin's counters; None when NRI is off (then no NRI metric is reported)
    nri: NriStats | None = None


class Histogram:
    """One histogram series: how many observations fell in each bucket, and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # a bound's bucket holds `<= bound`
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations up to it), as Prometheus' `le` buckets, `+Inf` last."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


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
    """Times one wait; its outcome is whether it returned or its caller gave up on it."""

    __slots__ = ("_metrics", "_start", "_what")

    def __init__(self, metrics: Metrics, what: str) -> None:
        self._metrics = metrics
        self._what = what
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        outcome = "done" if kind is None else "cancelled"
        self._metrics.wait_seconds[self._what, outcome].observe(time.perf_counter() - self._start)


class Metrics:
    """One watcher's counts, and the calls by which its shell counts.

    The loop calls `event`, `relisted`, `relist_failed`, `lookup`, `disconnected` and
    `reconnected`; the change hub calls `published` and `lost`; the facade calls `waiting`.
    `read` (the loop's) tells the state at scrape time. `registry` makes them metrics.
    """

    def __init__(self, read: Callable[[], Readings] | None = None) -> None:
        self.read = read or Readings
        #: events applied, by topic: those of modelled events only (the loop skips the
        #: others), a dozen topics at most
        self.events: dict[str, int] = {}
        #: when the last event arrived (seconds since the epoch, as stamped by the client)
        self.last_event: float | None = None
        #: changes published, by kind
        self.changes: dict[str, int] = dict.fromkeys(CHANGE_KINDS, 0)
        self.changes_lost = 0
        self.relists = 0
        self.relist_failures = 0
        self.relist_changes: dict[str, int] = dict.fromkeys(LIFECYCLE, 0)
        self.reconnects = 0
        self.lookups_in_flight = 0
        self.lookup_seconds = {what: Histogram(LOOKUP_BUCKETS) for what in LOOKUPS}
        self.wait_seconds = {(w, o): Histogram(WAIT_BUCKETS) for w in WAITS for o in OUTCOMES}
        self._down_since: float | None = None  # monotonic
        self._down_seconds = 0.0
        self._registry: CollectorRegistry | None = None
        #: more collectors scraped with this watcher's (`include`)
        self._included: list[Collector] = []

    @property
    def registry(self) -> CollectorRegistry:
        """This watcher's registry, made (and prometheus_client imported) when first asked."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry()
            for collector in (_Collector(self), *self._included):
                self._registry.register(collector)
        return self._registry

    def include(self, collector: Collector) -> None:
        """Scrape `collector` with this watcher's metrics, in its registry: what serves the
        watcher adds its own (`ws-watcher serve`'s). Registered now if the registry exists,
        else when it is made (so that prometheus_client is still imported by a scrape only)."""
        self._included.append(collector)
        if self._registry is not None:
            self._registry.register(collector)

    # --- the loop ----------------------------------------------------------------------

    def event(self, topic: str, ts: float) -> None:
        """One event of the stream is applied (the hot path: a dict increment)."""
        self.last_event = ts
        events = self.events
        events[topic] = events.get(topic, 0) + 1

    def relisted(self, changes: Sequence[WorkspaceChange]) -> None:
        self.relists += 1
        for change in changes:
            self.relist_changes[change.kind._value_] += 1

    def relist_failed(self) -> None:
        self.relists += 1
        self.relist_failures += 1

    def lookup(self, what: str) -> _Timed:
        """`with metrics.lookup("container"): await ...` — one round trip, timed."""
        return _Timed(self.lookup_seconds[what], self)

    def disconnected(self) -> None:
        """An outage begins (called once per outage)."""
        if self._down_since is None:
            self._down_since = time.monotonic()

    def reconnected(self) -> None:
        """The watcher is synced again after an outage (a no-op after the first sync)."""
        if self._down_since is not None:
            self._down_seconds += time.monotonic() - self._down_since
            self._down_since = None
            self.reconnects += 1

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
        return _Waiting(self, what)


class _Collector:
    """Makes `Metrics` into metric families, when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        # imported only by a scrape: see the module's doc (start-up)
        from prometheus_client.core import GaugeMetricFamily

        m, now = self._metrics, self._metrics.read()
        last = m.last_event
        stamp = GaugeMetricFamily(
            f"{PREFIX}last_event_timestamp_seconds",
            "When the last event of containerd's stream arrived (Unix time).",
        )
        age = GaugeMetricFamily(
            f"{PREFIX}last_event_age_seconds", "Seconds since the last event of the stream."
        )
        if last is not None:  # no event yet: no sample (an age of 0, or since 1970, would lie)
            stamp.add_metric([], last)
            age.add_metric([], max(0.0, time.time() - last))
        return [
            labelled(
                "gauge",
                "workspaces",
                "Workspaces tracked (each instance's newest container), by state.",
                "state",
                {state: now.workspaces.get(state, 0) for state in STATES},
            ),
            gauge(
                "ready",
                "1 when connected to containerd and synced, else 0.",
                1 if now.ready else 0,
            ),
            labelled(
                "counter",
                "events",
                "Events of containerd's stream applied to the index, by topic.",
                "topic",
                dict(sorted(m.events.items())),
            ),
            stamp,
            age,
            labelled(
                "counter",
                "changes",
                "Changes published to followers, by kind (the `event` of `watch` lines).",
                "kind",
                m.changes,
            ),
            gauge(
                "followers",
                "Followers of changes() (watch, the library's; the service's feed is one).",
                now.followers,
            ),
            counter(
                "changes_lost",
                "Changes dropped from lagging followers' buffers (each follower counts its own).",
                m.changes_lost,
            ),
            counter(
                "relists",
                "Safety relists beside the stream, failed ones included.",
                m.relists,
            ),
            counter(
                "relist_failures",
                "Safety relists that failed or missed their deadline.",
                m.relist_failures,
            ),
            labelled(
                "counter",
                "relist_changes",
                "Lifecycle changes made by safety relists, by kind: what the stream had not said "
                "(yet: corrections are those it never said).",
                "kind",
                m.relist_changes,
            ),
            counter(
                "relist_corrections",
                "Changes of safety relists whose events never came within the grace: "
                "events the stream missed.",
                now.corrections,
            ),
            counter(
                "reconnects",
                "Resyncs with containerd after losing it.",
                m.reconnects,
            ),
            counter(
                "disconnected_seconds",
                "Seconds spent disconnected from containerd, the current outage included.",
                m.disconnected_seconds(),
            ),
            gauge(
                "lookups_in_flight",
                "Round trips to containerd in flight for the stream's needs.",
                m.lookups_in_flight,
            ),
            histogram(
                "lookup_seconds",
                "Duration of the stream's lookups (each attempt), by what they look up.",
                ["lookup"],
                [((what,), h) for what, h in m.lookup_seconds.items()],
            ),
            histogram(
                "wait_seconds",
                "Duration of waits, by wait (running: wait_for_container, stop: "
                "wait_for_container_stop, until: wait_until) and outcome (done, or cancelled by "
                "the caller).",
                ["wait", "outcome"],
                m.wait_seconds.items(),
            ),
            *([] if now.nri is None else _nri(now.nri)),
        ]


def _nri(stats: NriStats) -> list[Metric]:
    """The NRI plugin's families: only with NRI on (a watcher without NRI has none, rather
    than zeros that would read as "NRI on, never connected")."""
    return [
        gauge(
            "nri_connected",
            "1 while registered with containerd's NRI (containerd >= 1.7), else 0.",
            1 if stats.registered else 0,
        ),
        counter(
            "nri_registrations",
            "Registrations with containerd's NRI: the first, then one after each loss "
            "(a containerd restart).",
            stats.registrations,
        ),
        counter(
            "nri_events_delivered",
            "NRI calls (pod and container events, and the listing at each registration) "
            "handed to the index.",
            stats.delivered,
        ),
        counter(
            "nri_events_dropped",
            "NRI calls not handed to the index: it fell behind (the event stream and relists "
            "make up for them).",
            stats.dropped,
        ),
    ]


# --- metric families, made at scrape time ----------------------------------------------
# For `_Collector` and for collectors that `include` adds (the service's): prometheus_client
# is imported here only, and only by a scrape.


def gauge(name: str, doc: str, value: float) -> Metric:
    """The gauge `PREFIX + name` with one sample."""
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(f"{PREFIX}{name}", doc, value=value)


def counter(name: str, doc: str, value: float) -> Metric:
    """The counter `PREFIX + name` (`_total` in the text format) with one sample."""
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(f"{PREFIX}{name}", doc, value=value)


def labelled(
    kind: Literal["counter", "gauge"],
    name: str,
    doc: str,
    by: str | Sequence[str],
    values: Mapping[str, float] | Mapping[tuple[str, ...], float],
) -> Metric:
    """A counter or gauge with a sample per label value (`by` one label name; or several,
    then each key of `values` is a tuple of their values, in `by`'s order)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    make = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    family = make(f"{PREFIX}{name}", doc, labels=[by] if isinstance(by, str) else by)
    for key, value in values.items():
        family.add_metric([key] if isinstance(key, str) else key, value)
    return family


def histogram(
    name: str, doc: str, by: Sequence[str], series: Iterable[tuple[Sequence[str], Histogram]]
) -> Metric:
    """A histogram with a series per tuple of label values (in `by`'s order)."""
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(f"{PREFIX}{name}", doc, labels=by)
    for labels, h in series:
        buckets = [("+Inf" if le == math.inf else repr(le), n) for le, n in h.cumulative()]
        family.add_metric(labels, buckets, sum_value=h.sum)
    return family


def render(metrics: Metrics, accept: str | None = None) -> tuple[bytes, str]:
    """The body and content type of a scrape of `metrics`: Prometheus' text format, or
    OpenMetrics when the scraper's `Accept` header (`accept`) asks for it."""
    # imported only by a scrape: see the module's doc (start-up)
    from prometheus_client.exposition import (
        CONTENT_TYPE_LATEST,
        choose_encoder,
        generate_latest,
    )

    if accept is None:
        return generate_latest(metrics.registry), CONTENT_TYPE_LATEST
    encoder, content_type = choose_encoder(accept)
    return encoder(metrics.registry), content_type
