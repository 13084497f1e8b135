"""The service's own metrics, scraped with its watcher's on `/metrics`: the API's followers of
`/v1/watch` and what they lost, its long polls and how long they took by outcome, its
requests by route and status.

Synopsis::

    metrics = ServiceMetrics(fanout.feed)
    watcher.metrics.include(metrics.collector())   # scraped with the watcher's own
    with metrics.following():                       # a /v1/watch stream being served
        ...
    with metrics.waiting(WaitFor.RUNNING) as wait:  # a long poll; `cancelled` unless told
        ...
        wait.outcome = Outcome.DONE
    metrics.answered("/v1/watch", 200)              # a request, as its answer starts

As in `watcher.metrics`, nothing here is a prometheus_client object until a scrape: a request
costs a dict increment, a wait a histogram's bucket, and what is state — waits in flight,
followers — is read when scraped. What followers lost is the feed's own count of the
`resync_required` lines it made (`Feed.resyncs`), read then too.

Not here: the followers of the watcher itself (`ws_watcher_followers`, where the feed is one
whatever its clients) and the watcher's waits (`ws_watcher_wait_seconds`, where a long poll
that timed out counts as cancelled: the timeout is the service's, not the watcher's).
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio_util

from watcher.metrics import WAIT_BUCKETS, Histogram, gauge, histogram, labelled

from .feed import Feed
from .protocol import WaitFor

if TYPE_CHECKING:
    from watcher.metrics import Metric

__all__ = ["UNANSWERED", "UNROUTED", "Outcome", "ServiceMetrics", "Waiting"]

#: the `route` of a request that matched none (a 404 `not_found`, or a path not even UTF-8):
#: its path is not a label value, which would let any client add series
UNROUTED = "other"
#: the `status` of a request that was never answered: its client went away first (a wait or
#: an inspect cut short), or the server stopped
UNANSWERED = "none"


class Outcome(enum.Enum):
    """How a long poll ended."""

    #: answered: the workspace runs, or is gone
    DONE = "done"
    #: its `timeout` passed first (a 504)
    TIMEOUT = "timeout"
    #: its client went away, or the server stopped: nobody was answered
    CANCELLED = "cancelled"


@dataclass(slots=True)
class Waiting:
    """One long poll being timed: the handler says how it ended."""

    outcome: Outcome = Outcome.CANCELLED


class ServiceMetrics:
    """The counts of one service (its API and its probes-only listener share them)."""

    def __init__(self, feed: Feed) -> None:
        self._feed = feed
        #: long polls in flight, and streams being served (tests and operators await these)
        self.waits = trio_util.AsyncValue(0)
        self.followers = trio_util.AsyncValue(0)
        #: duration of each long poll, by what it waited for and how it ended
        self.wait_seconds = {
            (what.value, outcome.value): Histogram(WAIT_BUCKETS)
            for what in WaitFor
            for outcome in Outcome
        }
        #: requests ended, by (route, status)
        self.requests: dict[tuple[str, ...], int] = {}

    @contextlib.contextmanager
    def following(self) -> Iterator[None]:
        """A `/v1/watch` stream served for as long as the block lasts."""
        self.followers.value += 1
        try:
            yield
        finally:
            self.followers.value -= 1

    @contextlib.contextmanager
    def waiting(self, what: WaitFor) -> Iterator[Waiting]:
        """A long poll in flight for as long as the block lasts, timed; its outcome is what
        the block set on the `Waiting` it was given (`cancelled` when it did not get that far)."""
        wait = Waiting()
        self.waits.value += 1
        start = time.perf_counter()
        try:
            yield wait
        finally:
            # observed before the count drops: whoever awaits `waits` then finds it counted
            self.wait_seconds[what.value, wait.outcome.value].observe(time.perf_counter() - start)
            self.waits.value -= 1

    def answered(self, route: str, status: int | None) -> None:
        """A request is answered: `route` its pattern (`/v1/workspaces/{id}`, or `UNROUTED`),
        `status` its answer's, counted as the answer starts (so before its client can read
        it); None for one that ended unanswered."""
        key = (route, UNANSWERED if status is None else str(status))
        self.requests[key] = self.requests.get(key, 0) + 1

    def collector(self) -> _Collector:
        """For `watcher.metrics.Metrics.include`."""
        return _Collector(self, self._feed)


class _Collector:
    """Makes `ServiceMetrics` into metric families, when scraped."""

    def __init__(self, metrics: ServiceMetrics, feed: Feed) -> None:
        self._metrics = metrics
        self._feed = feed

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        return [
            gauge(
                "api_followers",
                "Streams of /v1/watch being served.",
                m.followers.value,
            ),
            labelled(
                "counter",
                "api_resyncs",
                "resync_required lines sent to followers of /v1/watch, by cause: they missed "
                "changes and must re-list (behind: read too slowly; expired: came back too late; "
                "gap: the feed itself missed changes; restarted: another feed's numbers; ahead: "
                "a number this feed has not reached).",
                "cause",
                {cause.value: n for cause, n in self._feed.resyncs.items()},
            ),
            gauge(
                "api_waits_in_flight",
                "Long polls of /v1/workspaces/{id}/wait in flight.",
                m.waits.value,
            ),
            histogram(
                "api_wait_seconds",
                "Duration of the API's long polls, by what they waited for (running, gone) and "
                "outcome (done; timeout: their timeout passed first; cancelled: the client left "
                "or the server stopped).",
                ["wait", "outcome"],
                m.wait_seconds.items(),
            ),
            labelled(
                "counter",
                "api_requests",
                "Requests to the API and probes, by route (its pattern; other: none matched) and "
                "status, as their answers start (none: ended unanswered, the client left first).",
                ("route", "status"),
                dict(sorted(m.requests.items())),
            ),
        ]
