"""The shell's loop: connect, subscribe, list, answer the index's needs, relist, reconnect.

The index decides everything; this module ferries. Per connection:

1. open a client, **subscribe first**, then list containers and tasks and apply the listing
   (the stream waits in its buffer meanwhile, so nothing published during the listing is
   lost), answer what the listing left the index missing (one read of the mount table),
   publish `Synced`;
2. then, side by side in one nursery:
   * **the stream**: each event is applied *as it arrives*; the needs it raises (the record
     of a new container, where a task's files are) go to workers, at most `LOOKUPS` round
     trips in flight, whose answers are applied as ordinary inputs whenever they come. No
     event waits for another container's round trip: the index is order-independent, and
     per container it still reports created → running → exited → removed, each once;
   * **safety relists**, beside the stream: a listing is reconciled with what arrived while
     it ran (`Index.mark()`); one that fails or misses its deadline is logged and retried
     with back-off. A busy containerd is not a lost one;
   * **a health check**: a stream quiet for `HEALTH_CHECK_INTERVAL` is checked with Version;
3. containerd is lost only when the stream breaks or Version fails: publish `Disconnected`
   (once per outage), wait with capped exponential back-off, start over at 1.

All applying runs on the trio thread without awaiting in between, so the index needs no lock.

Cancellation: everything is cancellable at any await; cancelling the loop cancels the calls
and waits for the stream's pump thread. Error handling: before the first sync, the first
failure propagates (a wrong address is a mistake to report, not to retry); after it,
`ConnectError`/`ContainerdError` of the stream or the health check mean "reconnect", and
failures of lookups and relists are logged and retried, never fatal.

Rejected: applying the stream strictly in order, each step awaiting its prefetched Get
(one slow round trip held back every other pod: head-of-line blocking, p99s of hundreds of
ms in a burst); relisting inline between events (a relist held the whole stream for the
length of Containers.List + Tasks.List, seconds at 200 pods); taking a relist's deadline for
a lost containerd (a busy one answers Tasks.List late; reconnecting made it worse).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio
from trio_util import AsyncValue

from . import decode
from ._nursery import errors_of, single_errors
from .changes import ChangeHub
from .client import Client, Events, open_client
from .containerd_records import ContainerId
from .corrections import Corrections
from .errors import ConnectError, ContainerdError, NotFound, UsageError
from .index import Index
from .inputs import ContainerSeen, Envelope, Event, LogChecked, LookupFailed, Relisted, TaskCreated
from .metrics import Metrics, Readings
from .needs import Need, NeedLocation, NeedLogCheck, NeedRecord, NeedRelist
from .published import ChangeKind, Disconnected, Synced, WorkspaceChange
from .resolve import Resolver, locate
from .settings import (
    GET_TRIES,
    HEALTH_CHECK_INTERVAL,
    LOOKUPS,
    MAX_OUTAGE_CAUSES,
    MAX_UNKNOWN_TYPES,
    RELIST_RETRY,
    SETTLE_RELIST,
    Settings,
)

if TYPE_CHECKING:  # the plugin's modules load only when NRI is asked for
    from .nri.plugin import NriPlugin

__all__ = ["Loop"]

log = logging.getLogger(__name__)


class Loop:
    """The state the shell keeps beside the index, and the loop that feeds it.

    `index`, `hub`, `generation` (bumped after every change, for waiters), `ready` and
    `client` are read by the facade (`watcher.Watcher`); only the loop writes them.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.index = Index(settings.schemes, start_grace=settings.start_grace)
        self.metrics = Metrics(self.readings)
        self.hub = ChangeHub(settings.change_buffer, self.metrics)
        self.generation = AsyncValue(0)
        self.ready = AsyncValue(False)
        #: a (re)connection's listing is in flight (`_Session.sync`)
        self.syncing = AsyncValue(False)
        self.client: Client | None = None
        self.session: _Session | None = None  # while connected to containerd
        self.nri: NriPlugin | None = None  # the NRI plugin followed (`follow_nri`)
        self._updates = 0  # `index.updates` the waiters were last woken for
        self.corrections = Corrections(settings.relist_grace)
        self.resolver = Resolver(settings.namespace, settings.proc_root)
        self.wake = trio.Event()
        self._outage = False
        self._causes: set[str] = set()  # of the current outage, warned about
        self._unknown_types: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; `started()` once the first sync is done."""
        settings = self.settings
        backoff = settings.backoff_initial
        started = False
        while True:
            try:
                async with (
                    open_client(
                        settings.address, settings.namespace, call_timeout=settings.call_timeout
                    ) as client,
                    client.subscribe() as events,
                ):
                    self.client = client
                    if not started:
                        await self._check_namespace(client)
                    with single_errors():
                        async with trio.open_nursery() as nursery:
                            session = self.session = _Session(self, client, nursery)
                            await session.sync(initial=not started)
                            if not started:
                                task_status.started()
                                started = True
                            backoff = settings.backoff_initial
                            nursery.start_soon(session.follow, events)
                            nursery.start_soon(session.relists)
                            nursery.start_soon(session.health)
            except (ConnectError, ContainerdError) as exc:
                if not started:
                    raise
                self._lost(exc)
            except BaseExceptionGroup as group:
                # containerd gone breaks the stream and a call in flight at once: one loss
                errors = errors_of(group)
                lost = [e for e in errors if isinstance(e, ConnectError | ContainerdError)]
                if not lost or len(lost) < len(errors):
                    raise
                if not started:
                    raise lost[0] from group
                self._lost(lost[0])
            finally:
                self.client = None
                self.session = None
            with trio.move_on_after(backoff):
                await self.wake.wait()
            self.wake = trio.Event()
            backoff = min(backoff * 2, settings.backoff_max)

    async def _check_namespace(self, client: Client) -> None:
        """containerd serves any namespace, an unknown one as empty: a typo would watch
        nothing, silently. So the first connection insists that the namespace exists."""
        known = await client.namespaces()
        if self.settings.namespace not in known:
            raise UsageError(
                f"containerd has no namespace {self.settings.namespace!r} "
                f"(it has: {', '.join(sorted(known)) or 'none'})"
            )

    def _lost(self, exc: Exception) -> None:
        """One warning (and one `Disconnected`) per outage, plus one per new cause within it
        (containerd gone, then something else on its socket), at most `MAX_OUTAGE_CAUSES`."""
        self.ready.value = False
        cause = str(exc)
        if not self._outage:
            self._outage = True
            self.metrics.disconnected()
            self._causes = {cause}
            log.warning("lost containerd: %s; reconnecting", exc)
            self.hub.publish(Disconnected(ts=time.time(), error=cause))
        elif cause not in self._causes and len(self._causes) < MAX_OUTAGE_CAUSES:
            self._causes.add(cause)
            log.warning("still no containerd: %s; reconnecting", exc)
        else:
            log.debug("still no containerd: %s", exc)

    def synced(self, initial: bool) -> None:
        self._outage = False
        self.metrics.reconnected()
        count = len(self.index.workspaces())
        self.hub.publish(Synced(ts=time.time(), workspaces=count, initial=initial))
        log.info("synced: %d workspaces", count)
        self.ready.value = True

    def publish(self, changes: Sequence[WorkspaceChange]) -> None:
        """Hand changes to the followers, and wake the waiters when anything they can read
        changed (a snapshot's details too, not only lifecycle steps)."""
        for change in changes:
            if change.kind is ChangeKind.RUNNING:
                self.resolver.check_cgroup(change.workspace)
            self.hub.publish(change)
        updates = self.index.updates
        if changes or updates != self._updates:
            self._updates = updates
            self.generation.value += 1

    async def follow_nri(self, plugin: NriPlugin) -> None:
        """Apply what NRI tells (`watcher.nri_source`) beside the event stream, until
        cancelled. Connected to containerd, its needs are answered as the stream's are; while
        not, the index takes NRI's word alone and the next sync's listing answers the rest.

        While a (re)connection's listing is in flight, NRI's records wait, as the stream's
        events do: that listing is taken as of its start and is authoritative (it has no
        `since`), so what NRI told meanwhile — a pod made after it was taken — would be undone
        by it (its sandbox dropped: the workspace `removed`, then `created` again once
        containerd's record came).
        """
        from .nri_source import NRI_TOPIC, inputs_of  # NRI's code is loaded only when asked for

        self.nri = plugin  # its counters are scraped with the watcher's (`readings`)
        count = self.metrics.event
        async for item in plugin.events:
            if self.syncing.value:
                await self.syncing.wait_value(False)
            for event in inputs_of(item):
                count(NRI_TOPIC, event.ts)
                session = self.session
                if session is not None:
                    session.apply(event)
                else:
                    self.publish(self.index.apply(event))
                    self.index.take_needs()  # no containerd to ask: the listing will tell

    def readings(self) -> Readings:
        """The state a scrape of `metrics` reports, read then rather than kept up to date."""
        states = Counter(ws.state.value for ws in self.index.workspaces().values())
        return Readings(
            workspaces=states,
            followers=self.hub.followers,
            ready=bool(self.ready.value),
            corrections=self.corrections.count,
            nri=None if self.nri is None else self.nri.stats,
        )

    def unknown_type(self, envelope: Envelope) -> None:
        """Warn once per event type that containerd's API does not know (undecodable
        payloads of known types were warned about by `decode`)."""
        name = envelope.type_name
        if name in decode.KNOWN_EVENT_TYPES or name in self._unknown_types:
            return
        if len(self._unknown_types) >= MAX_UNKNOWN_TYPES:
            return
        self._unknown_types.add(name)
        log.warning(
            "event of unknown type %r on %s ignored (a newer containerd?); not repeated",
            name,
            envelope.topic,
        )


class _Session:
    """One connection's work: the stream, the lookups, the relists, the health check."""

    def __init__(self, loop: Loop, client: Client, nursery: trio.Nursery) -> None:
        self.loop = loop
        self.index = loop.index
        self.client = client
        self.nursery = nursery
        self.lookups = trio.CapacityLimiter(LOOKUPS)
        self.last_event = trio.current_time()
        self.relist_soon = trio.Event()
        # a listing asked for by the index (`NeedRelist`): when, and the wait it shortens
        self.relist_at: float | None = None
        self._waiting: trio.CancelScope | None = None
        # containers the stream announced whose record is still being fetched: a relist
        # that lists them first tells nothing the stream missed
        self.fetching: set[ContainerId] = set()

    # --- applying ----------------------------------------------------------------------

    def apply(self, event: Event) -> list[WorkspaceChange]:
        """Apply one input, publish its changes, and set its needs going; synchronous."""
        pending = [event]
        out: list[WorkspaceChange] = []
        while pending:
            changes = self.index.apply(pending.pop())
            self.publish(changes)
            out += changes
            for need in self.index.take_needs():
                answer = self.dispatch(need)
                if answer is not None:
                    pending.append(answer)
        return out

    def publish(self, changes: Sequence[WorkspaceChange]) -> None:
        self.loop.publish(changes)

    def dispatch(self, need: Need) -> Event | None:
        """Answer a need at once where no round trip is needed, else start its worker."""
        if isinstance(need, NeedLogCheck):
            return self.log_checked(need)
        if isinstance(need, NeedRelist):
            self.relist_by(need.at)
            return None
        if isinstance(need, NeedRecord):
            self.fetching.add(need.container_id)
            self.nursery.start_soon(self.fetch_record, need.container_id)
        else:
            self.nursery.start_soon(self.locate, need)
        return None

    def log_checked(self, need: NeedLogCheck) -> LogChecked:
        path = self.loop.settings.path_map.map(need.log_path)
        # a stat of a local file: cheap enough for the trio thread, like /proc reads
        exists = os.path.exists(path)
        return LogChecked(ts=time.time(), container_id=need.container_id, exists=exists)

    async def fetch_record(self, cid: ContainerId) -> None:
        """A Get for a new container; its answer is applied whenever it comes."""
        try:
            await self._fetch_record(cid)
        finally:
            self.fetching.discard(cid)

    async def _fetch_record(self, cid: ContainerId) -> None:
        retry = 0.1
        async with self.lookups:
            for attempt in range(1, GET_TRIES + 1):
                try:
                    with self.loop.metrics.lookup("container"):
                        record = await self.client.get_container(cid)
                    break
                except NotFound:
                    # deleted right after it was created (its delete event follows); if not,
                    # the next relist finds it. Known from a listing already: nothing missed.
                    known = self.index.container_record(cid) is not None
                    (log.debug if known else log.warning)(
                        "container %s: announced, but containerd has no such container; skipped",
                        cid,
                    )
                    return
                except (ConnectError, ContainerdError) as exc:
                    if attempt == GET_TRIES:
                        log.warning("container %s: %s; a relist will look again", cid, exc)
                        self.relist_soon.set()
                        return
                    await trio.sleep(retry)
                    retry *= 4
        self.apply(ContainerSeen(ts=time.time(), container=record, mono=trio.current_time()))

    async def locate(self, need: NeedLocation) -> None:
        answers: Sequence[Event] = ()
        retry = 0.1
        async with self.lookups:
            for attempt in range(1, GET_TRIES + 1):
                try:
                    with self.loop.metrics.lookup("location"):
                        answers = await self.loop.resolver.answer(self.client, [need], time.time())
                    break
                except ConnectError as exc:
                    if attempt < GET_TRIES:
                        await trio.sleep(retry)
                        retry *= 4
                        continue
                    # the stream or the health check tells whether containerd is gone; the
                    # index asks again with the next listing, which comes soon
                    log.warning("container %s: cannot locate its files: %s", need.container_id, exc)
                    answers = [LookupFailed(ts=time.time(), container_id=need.container_id)]
                    self.relist_soon.set()
        for answer in answers:
            self.apply(answer)

    # --- the stream --------------------------------------------------------------------

    async def follow(self, events: Events) -> None:
        """Apply the stream as it arrives, until it breaks (which raises)."""
        corrections = self.loop.corrections
        count = self.loop.metrics.event
        async for envelope in events:
            self.last_event = trio.current_time()
            event = envelope.event
            if event is None:
                self.loop.unknown_type(envelope)
                continue
            count(envelope.topic, event.ts)
            corrections.confirm(getattr(event, "container_id", None))
            if isinstance(event, TaskCreated):
                event = locate(event)
            self.apply(event)
        raise ConnectError(f"containerd at {self.client.path} closed the event stream")

    async def health(self) -> None:
        """A quiet stream is asked whether anybody is there; a failure means lost."""
        while True:
            due = self.last_event + HEALTH_CHECK_INTERVAL
            if trio.current_time() < due:
                await trio.sleep_until(due)
                continue
            await self.client.version()
            self.last_event = trio.current_time()

    # --- listings ----------------------------------------------------------------------

    async def sync(self, *, initial: bool) -> None:
        """The listing after a (re)connection, with the stream held in its buffer (and NRI's
        records: `Loop.follow_nri`); `Synced` once it and what it left the index missing are
        applied."""
        self.loop.syncing.value = True
        try:
            await self.listing(beside_stream=False)
        finally:
            self.loop.syncing.value = False
        self.loop.synced(initial)

    async def listing(self, *, beside_stream: bool = True) -> list[WorkspaceChange]:
        """List, reconcile with what arrived meanwhile, answer the needs it raised.

        After a (re)connection nothing arrives meanwhile (the stream waits), and no answer
        to an earlier connection's needs will come: the listing is newer than everything.
        """
        since = self.index.mark() if beside_stream else None
        containers = await self.client.list_containers()
        tasks = await self.client.list_tasks(deadline=self.loop.settings.listing_timeout)
        candidates = tuple(c for c in containers if self.index.is_candidate(c.labels))
        listing = Relisted(
            ts=time.time(),
            containers=candidates,
            tasks=tuple(tasks),
            since=since,
            mono=trio.current_time(),
        )
        changes = self.index.apply(listing)
        self.publish(changes)
        located: list[NeedLocation] = []
        answers: list[Event] = []
        for need in self.index.take_needs():
            if isinstance(need, NeedLocation):
                located.append(need)  # one read of the mount table answers them all
            elif (answer := self.dispatch(need)) is not None:
                answers.append(answer)
        if located:
            answers += await self.loop.resolver.answer(self.client, located, time.time())
        for answer in answers:
            changes += self.apply(answer)
        return changes

    def relist_by(self, at: float) -> None:
        """A listing at `at` (monotonic) at the latest, whatever the interval (`NeedRelist`):
        the safety relists' wait is shortened, or the next one started sooner."""
        self.relist_at = at if self.relist_at is None else min(self.relist_at, at)
        if self._waiting is not None:
            self._waiting.deadline = min(self._waiting.deadline, at)

    async def relists(self) -> None:
        """Safety relists beside the stream: whatever one changes, the stream did not say.

        Also the listings the index asks for (`NeedRelist`), even with relists turned off:
        those answer what only a listing can, not what the stream may have missed."""
        settings = self.loop.settings
        interval = settings.relist_interval
        due = trio.current_time() + (min(interval, SETTLE_RELIST) if interval else 0)
        retry = RELIST_RETRY[0]
        while True:
            deadline = due if interval else math.inf
            if self.relist_at is not None:
                deadline = min(deadline, self.relist_at)
            with trio.move_on_at(deadline) as self._waiting:
                await self.relist_soon.wait()
            self._waiting = None
            self.relist_soon = trio.Event()
            asked = self.relist_at is not None and self.relist_at <= trio.current_time()
            if asked:
                self.relist_at = None  # the listing below is taken after it: it answers it
            try:
                changes = await self.listing()
            except (ConnectError, ContainerdError) as exc:
                self.loop.metrics.relist_failed()
                log.warning("relist failed: %s; trying again in %gs", exc, retry)
                due = trio.current_time() + retry
                retry = min(retry * 2, RELIST_RETRY[1])
                if asked:
                    self.relist_by(due)  # still owed, with relists off too
                continue
            self.loop.metrics.relisted(changes)
            retry = RELIST_RETRY[0]
            due = trio.current_time() + interval
            expired = self.index.expired_announcements
            missed = [
                c
                for c in changes
                if c.workspace.container_id not in self.fetching
                and c.workspace.container_id not in expired
            ]
            if missed:
                self.note_corrections(missed)

    def note_corrections(self, changes: Sequence[WorkspaceChange]) -> None:
        corrections = self.loop.corrections
        now = trio.current_time()
        for change in changes:
            corrections.add(change, now)
        self.nursery.start_soon(self._report_corrections, corrections.grace)

    async def _report_corrections(self, after: float) -> None:
        await trio.sleep(after)
        if self.loop.corrections.report_due(trio.current_time()):
            self.loop.generation.value += 1  # `corrections` changed: wake `wait_until`
