"""The watcher with its NRI source on, against a real containerd with NRI on: the rig's own when
it has NRI (`$WS_WATCHER_CONTAINERD_BIN` naming 1.7 or later), else Debian's 1.7 and 2.1,
fetched once and cached (`python -m watcher.testing.versions fetch 1.7|2.1`), as
`test_nri.py` gets them. The plugin alone is `test_nri.py`'s; here it feeds the index beside
the event stream (`watcher.nri_source`, `Loop.follow_nri`).

Covered:

* NRI first, without timing: the watcher's event stream passes through a wiretap
  (`tests/rpc_wiretap.py`) that *holds* it while N workspace pods start at once. Every
  workspace is `created` and `starting` from NRI alone (no stream event, no Containers.Get
  reached the watcher meanwhile), then, once the stream is let through, `running`, and once
  the pods are removed, `exited` and `removed`: exactly once each, in that order; containerd's
  own record (created_at, log path, image id) fills in what NRI does not tell;
* containerd SIGKILLed 3 times while pods are created and removed: the plugin registers again
  after each kill; no workspace change is lost or doubled; the index agrees with a fresh
  listing (containerd is the oracle: under load a restarted containerd may lose a kept pod);
* NRI unavailable (no socket; NRI turned off in a 1.7's config; the system's 1.6 when that
  is the rig's): the watcher runs on the stream alone and says so once.

The rig's blocking calls (CRI, containerd's start) run in threads; every wait is under
`trio.fail_after`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from kill_churn import KillChurn
from rpc_wiretap import CONTAINERS_GET, EVENTS_SUBSCRIBE, Wiretap

from containerd_protos.events import container_pb2
from containerd_protos.types import event_pb2
from watcher.errors import UnknownId
from watcher.published import (
    Change,
    ChangeKind,
    Disconnected,
    InstanceId,
    Workspace,
    WorkspaceChange,
)
from watcher.settings import NriSettings
from watcher.testing import labels, versions
from watcher.testing.config import NRI_SINCE
from watcher.testing.containerd import PrivateContainerd
from watcher.testing.errors import RigError
from watcher.testing.fixtures import nri_rig, pods_on
from watcher.testing.pods import Pod, Pods
from watcher.testing.watching import kinds_of, run, watching
from watcher.watcher import Settings, Watcher, open_watcher

SERIES = versions.nri_series()
#: bound on every wait: only reached when something is broken (CI machines are loaded)
WAIT = 60.0
#: workspace pods started at once while the stream is held
AT_ONCE = 8
#: the steps of a workspace that NRI told first and that ran, was stopped and removed
WHOLE_LIFE = [
    ChangeKind.CREATED,
    ChangeKind.STARTING,
    ChangeKind.RUNNING,
    ChangeKind.EXITED,
    ChangeKind.REMOVED,
]
#: the churn with kills: pods made by that many threads at once, odd ones removed again
CHURN = 24
KILLS = 3
#: how long a container NRI told of is kept without containerd showing it (30 s by default)
START_GRACE = 10.0


@pytest.fixture(scope="module", params=SERIES, ids=lambda s: s or "rig")
def nri_containerd(request: pytest.FixtureRequest) -> Iterator[PrivateContainerd]:
    """A private containerd of the series (None: the rig's), NRI on (containerd's default
    2 s request timeout), its socket under the rig's base dir."""
    with nri_rig(request.param) as ctrd:
        yield ctrd


@pytest.fixture
def nri_pods(nri_containerd: PrivateContainerd) -> Iterator[Pods]:
    with pods_on(nri_containerd) as made:
        yield made


def nri_settings(socket: str | Path, **overrides: Any) -> NriSettings:
    return NriSettings(socket=str(socket), backoff_max=0.5, **overrides)


def changes_of(seen: list[Change], container_id: str) -> list[WorkspaceChange]:
    return [
        c for c in seen
        if isinstance(c, WorkspaceChange) and c.workspace.container_id == container_id
    ]  # fmt: skip


def workspace_pod(pods: Pods, name: str, **kwargs: Any) -> Pod:
    return pods.run_pod(name, labels=labels.mk2_labels(name, f"ws-{name}", "owner"), **kwargs)


def in_threads(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """`fn` on every item at once, a thread each (the kubelet starts pods concurrently)."""
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = fn(items[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def containers_created(messages: list[bytes]) -> list[str]:
    """The ids of containerd's `/containers/create` events among raw stream messages (decoded
    here with the protos alone, not by the watcher's code)."""
    out = []
    for raw in messages:
        envelope = event_pb2.Envelope.FromString(raw)
        if envelope.topic == "/containers/create":
            out.append(container_pb2.ContainerCreate.FromString(envelope.event.value).id)
    return out


async def wait_for(
    w: Watcher, done: Callable[[], bool], state: Callable[[], object] | None = None
) -> None:
    """Until `done()` holds, re-checked after every change of the index; on a timeout, the
    failure says what `state()` was then."""
    try:
        with trio.fail_after(WAIT):
            await w.wait_until(lambda: True if done() else None)
    except trio.TooSlowError:
        if state is None:
            raise
        raise AssertionError(f"not within {WAIT:g} s; now: {state()}") from None


# --- NRI first --------------------------------------------------------------------------------


async def test_nri_tells_each_workspace_before_containerd_publishes_it(
    nri_containerd: PrivateContainerd, nri_pods: Pods, sockdir: str
) -> None:
    names = [f"nri-first-{i}" for i in range(AT_ONCE)]
    with Wiretap(nri_containerd.address, sockdir, holdable={EVENTS_SUBSCRIBE}) as tap:
        async with watching(tap.address, nri=nri_settings(nri_containerd.nri_socket)) as (w, seen):
            assert w.nri is not None
            with trio.fail_after(WAIT):
                await w.nri.registrations.wait_value(1)
            # nothing containerd publishes from here on reaches the watcher until released
            tap.hold(EVENTS_SUBSCRIBE)
            gets_before = tap.count(CONTAINERS_GET)
            made: list[Pod] = await run(
                in_threads, lambda name: workspace_pod(nri_pods, name), names
            )
            cids = [pod.containers["workspace"] for pod in made]
            told = [ChangeKind.CREATED, ChangeKind.STARTING]
            await wait_for(w, lambda: all(kinds_of(seen, cid) == told for cid in cids))
            # containerd had published each workspace container's /containers/create by
            # then (its CRI call returned): held in the tap, it had not reached the watcher
            assert set(cids) <= set(containers_created(tap.held_messages(EVENTS_SUBSCRIBE)))
            assert tap.count(CONTAINERS_GET) == gets_before  # and no round trip on the way
            for pod, cid in zip(made, cids, strict=True):
                created = changes_of(seen, cid)[0].workspace
                assert (created.instance_id, created.sandbox_id) == (pod.name, pod.sandbox_id)
                assert created.cgroup_path == f"{pod.cgroup_parent}/{cid}"
                assert created.pid is None and not created.running
                # NRI's word alone: what only containerd keeps is not known yet
                assert created.created_at is None and created.log_path is None

            tap.release(EVENTS_SUBSCRIBE)
            pids = await run(lambda: [nri_pods.cri.container_pid(cid) for cid in cids])
            expected = dict(zip(cids, pids, strict=True))
            # running from the stream; containerd's record (a Get beside it) fills in the rest
            await wait_for(
                w,
                lambda: all(
                    (ws := w.workspaces().get(name)) is not None  # type: ignore[call-overload]
                    and ws.running
                    and ws.pid == expected[ws.container_id]
                    and ws.created_at is not None
                    and ws.log_path is not None
                    and ws.image_ref is not None
                    for name in names
                ),
            )
            await run(in_threads, nri_pods.remove_pod, made)
            await wait_for(w, lambda: not set(names) & set(w.workspaces()))
            await trio.testing.wait_all_tasks_blocked()
            for cid in cids:
                assert kinds_of(seen, cid) == WHOLE_LIFE, cid
            assert not [c for c in seen if isinstance(c, Disconnected)]
            assert w.nri.stats.registrations == 1 and w.nri.stats.dropped == 0
            # containerd's records came by a Get each (sandbox, workspace container), beside
            assert tap.count(CONTAINERS_GET) - gets_before <= 2 * AT_ONCE


# --- containerd SIGKILLed during churn ----------------------------------------------------------


def in_order_once(kinds: list[ChangeKind]) -> bool:
    """Each step at most once, in lifecycle order (a step may be skipped: one said while the
    watcher was away from containerd is reported by the resync, as its end state)."""
    positions = [WHOLE_LIFE.index(k) for k in kinds]
    return positions == sorted(set(positions))


def published(seen: list[Change]) -> set[str]:
    """Every container a change was published of."""
    return {c.workspace.container_id for c in seen if isinstance(c, WorkspaceChange)}


def known(w: Watcher, container_id: str) -> bool:
    try:
        w.container(container_id)
    except UnknownId:
        return False
    return True


def summary(workspaces: Mapping[InstanceId, Workspace]) -> dict[str, tuple[str, int | None, bool]]:
    """What a listing can tell of each instance: its newest container, running or not, and
    the PID while it runs (an exited one's PID is history a listing no longer has)."""
    return {
        iid: (ws.container_id, ws.pid if ws.running else None, ws.running)
        for iid, ws in workspaces.items()
    }


async def fresh_listing(address: str) -> dict[InstanceId, Workspace]:
    """What containerd holds now, through a new watcher's initial listing (no NRI)."""
    async with open_watcher(settings=Settings(address=address)) as fresh:
        return dict(fresh.workspaces())


async def test_sigkill_three_times_during_churn_loses_and_doubles_nothing(
    nri_containerd: PrivateContainerd, nri_pods: Pods
) -> None:
    """The oracle is containerd, not the script: a kept pod's container is expected to run,
    but a containerd restarted under load may lose one (its task gone, or killed: seen on 1.7
    under a load of 25, an `exited` with containerd's exit status 137 twenty seconds after the
    last kill). The watcher must then say so too: its state is compared with a fresh
    listing's, taken once the churn is over."""
    nri = nri_settings(nri_containerd.nri_socket)
    # a container NRI told of just before a kill may never be made: the resync keeps it for
    # the start grace (it might still come), then a listing drops it; shortened from 30 s
    async with watching(nri_containerd.address, nri=nri, start_grace=START_GRACE) as (w, seen):
        plugin = w.nri
        assert plugin is not None
        token = trio.lowlevel.current_trio_token()

        async def registrations(n: int) -> None:
            with trio.fail_after(WAIT):
                await plugin.registrations.wait_value(lambda count: count >= n)

        def registered(n: int) -> None:  # from the killer's thread
            trio.from_thread.run(registrations, n, trio_token=token)

        churn = KillChurn(
            nri_containerd, nri_pods, prefix="churn", count=CHURN, kills=KILLS,
            before_kill=registered,  # NRI is back from the kill before: each kill is one
        )  # fmt: skip
        await run(churn.run)
        assert churn.kills_done == KILLS
        await registrations(KILLS + 1)  # after the last kill too
        kept = {pod.containers["workspace"] for pod in churn.kept.values()}

        def no_leftover() -> bool:
            """No container but the kept pods' is left in the index: none of a removed pod,
            nor one NRI told of and containerd never made."""
            return not [cid for cid in published(seen) - kept if known(w, cid)]

        async def settle_on(expected: dict[str, tuple[str, int | None, bool]]) -> None:
            await wait_for(
                w,
                lambda: no_leftover() and summary(w.workspaces()) == expected,
                lambda: (expected, summary(w.workspaces()), shim_log(nri_containerd)),
            )

        # the watcher settles on what containerd holds: retaken if containerd changed since
        # (a listing is a moment; a container may die after it)
        for _ in range(3):
            fresh = await fresh_listing(nri_containerd.address)
            try:
                await settle_on(summary(fresh))
                break
            except AssertionError:
                if summary(await fresh_listing(nri_containerd.address)) == summary(fresh):
                    raise  # containerd did not change: the watcher disagrees with it
        await trio.testing.wait_all_tasks_blocked()
        assert summary(w.workspaces()) == summary(fresh)
        stats = plugin.stats

    # one registration per containerd, no other (a late reply would have added one); a
    # containerd killed while it wrote a frame cut the connection: no protocol error
    assert stats.registrations == KILLS + 1, stats
    assert (stats.late_replies, stats.dropped, stats.protocol_errors) == (0, 0, 0), stats
    assert sum(isinstance(c, Disconnected) for c in seen) == KILLS
    assert set(fresh) <= set(churn.kept)  # no instance of a removed pod is left
    for iid, pod in churn.kept.items():
        cid = pod.containers["workspace"]
        kinds = kinds_of(seen, cid)
        assert in_order_once(kinds), (cid, kinds)
        assert kinds[0] is ChangeKind.CREATED, (cid, kinds)
        ws = fresh.get(InstanceId(iid))
        if ws is not None and ws.container_id == cid and ws.running:  # as it should be
            assert kinds[-1] is ChangeKind.RUNNING, (cid, kinds)
            assert ws.pid is not None and os.path.exists(f"/proc/{ws.pid}")
    for pod in [*churn.removed.values(), *churn.abandoned]:
        for cid in pod.containers.values():
            kinds = kinds_of(seen, cid)
            assert in_order_once(kinds), (cid, kinds)
            # seen at some point, unless it came and went while the watcher was away from
            # containerd and NRI alike; once seen, its end is said
            assert not kinds or kinds[-1] is ChangeKind.REMOVED, (cid, kinds)
    # what containerd never made, NRI announced and withdrew (or a listing found gone): every
    # container the watcher published but no pod holds ended with `removed` too
    made = {cid for pod in [*churn.kept.values(), *churn.removed.values(), *churn.abandoned]
            for cid in pod.containers.values()}  # fmt: skip
    for change in seen:
        if isinstance(change, WorkspaceChange) and change.workspace.container_id not in made:
            kinds = kinds_of(seen, change.workspace.container_id)
            assert in_order_once(kinds) and kinds[-1] is ChangeKind.REMOVED, (change, kinds)
    assert len(churn.removed) == CHURN // 2


def shim_log(ctrd: PrivateContainerd) -> list[str]:
    """containerd's log lines about shims and tasks it could not read (a restarted containerd
    that cannot load a shim cleans its task up: that container is gone for real)."""
    words = ("shim disconnected", "dead shim", "converting task", "failed to load")
    return [line for line in ctrd.log_tail(5000).splitlines() if any(w in line for w in words)][
        -20:
    ]


# --- NRI unavailable ---------------------------------------------------------------------------


def _without_nri() -> list[str]:
    """How NRI can be missing here: no socket at the path given (any containerd); NRI off in
    a 1.7's config; and, when the rig's own containerd is one, a 1.6 (which has no NRI)."""
    cases = ["no-socket", "nri-off"]
    try:
        if versions.version_of(versions.bin_dir()) < NRI_SINCE:
            cases.append("1.6")
    except RigError:
        pass  # no usable containerd of the rig's own: the other cases need none of it
    return cases


@pytest.fixture(params=_without_nri())
def without_nri(
    request: pytest.FixtureRequest, containerd: PrivateContainerd, sockdir: str
) -> Iterator[tuple[PrivateContainerd, str]]:
    """A containerd, and an NRI socket path where nothing serves NRI."""
    case = request.param
    if case == "no-socket":
        yield containerd, os.path.join(sockdir, "nowhere", "nri.sock")
    elif case == "1.6":
        yield containerd, str(containerd.nri_socket)  # where 1.7 and later would serve it
    else:  # a 1.7 as it comes, NRI off in its config: the rig's own if it is one
        with PrivateContainerd(binaries=_a_1_7(), nri=False) as ctrd:
            assert not ctrd.nri_socket.exists()
            yield ctrd, str(ctrd.nri_socket)


def _a_1_7() -> Path | None:
    """The binaries of a containerd 1.7: the rig's own when it is one, else fetched."""
    own = versions.bin_dir()
    with suppress(RigError):
        version = versions.version_of(own)
        if (version.major, version.minor) == (1, 7):
            return own
    return versions.fetch("1.7")


class LogWaker(logging.Handler):
    """Keeps the records of one logger (DEBUG and up) and wakes a trio waiter on each."""

    def __init__(self, logger: str) -> None:
        super().__init__(logging.DEBUG)
        self.logger = logging.getLogger(logger)
        self.records: list[logging.LogRecord] = []
        self._token = trio.lowlevel.current_trio_token()
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._changed.set)

    async def wait_for(self, done: Callable[[list[logging.LogRecord]], bool]) -> None:
        with trio.fail_after(WAIT):
            while not done(self.records):
                await self._changed.wait()
                self._changed = trio.Event()

    def __enter__(self) -> LogWaker:
        self._level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)


def looked_again(records: list[logging.LogRecord]) -> int:
    """The plugin's looks for NRI after the first (debug-logged, not said again)."""
    return sum(r.levelno == logging.DEBUG and "NRI: " in r.getMessage() for r in records)


async def test_without_nri_the_watcher_runs_on_the_stream_alone_and_says_so_once(
    without_nri: tuple[PrivateContainerd, str],
) -> None:
    ctrd, socket = without_nri
    nri = NriSettings(socket=socket, backoff_initial=0.01, backoff_max=0.05,
                      unavailable_retry=0.05)  # fmt: skip  # looked for often: said once?
    with LogWaker("watcher.nri") as log, Pods(ctrd) as pods:
        async with watching(ctrd.address, nri=nri) as (w, seen):
            assert w.nri is not None
            await log.wait_for(lambda records: looked_again(records) >= 3)
            pod = await run(workspace_pod, pods, "no-nri")
            cid = pod.containers["workspace"]
            with trio.fail_after(WAIT):
                ws = await w.wait_for_container("no-nri")
            assert ws.container_id == cid and ws.pid is not None
            await run(pods.remove_pod, pod)
            with trio.fail_after(WAIT):
                await w.wait_for_container_stop("no-nri")
            looks = looked_again(log.records)
            await log.wait_for(lambda records: looked_again(records) >= looks + 3)  # still looking
            await trio.testing.wait_all_tasks_blocked()
            stats = w.nri.stats
    assert kinds_of(seen, cid) == [
        ChangeKind.CREATED, ChangeKind.RUNNING, ChangeKind.EXITED, ChangeKind.REMOVED
    ]  # fmt: skip  # no `starting`: only NRI tells it
    said = [r for r in log.records if r.levelno >= logging.INFO]
    assert [r.levelno for r in said] == [logging.INFO], [r.getMessage() for r in said]
    message = said[0].getMessage()
    assert message.startswith("NRI is not available:") and socket in message, message
    assert "going on without it" in message
    assert (stats.registrations, stats.registered, stats.delivered) == (0, False, 0)
