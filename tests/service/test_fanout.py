"""The feed's pump and its followers, without containerd: a follower that does not read
never holds up the pump, and one that fell behind is told so (a `resync_required` line),
never silently short; a pump that lagged itself leaves a gap nobody steps over.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import trio
import trio.testing
from record_builders import workspace

from watcher.changes import ChangeHub
from watcher.containerd_records import ContainerId
from watcher.published import ChangeKind, InstanceId, Workspace, WorkspaceChange
from watcher.service.fanout import Fanout
from watcher.service.feed import Cause, Feed
from watcher.wire import change_json, dumps


def encode(change: Any, seq: int | None) -> bytes:
    obj = change_json(change)
    return (dumps(obj if seq is None else {"seq": seq, **obj}) + "\n").encode()


def change(n: int) -> WorkspaceChange:
    ws = workspace(instance_id=InstanceId(f"inst-{n}"), container_id=ContainerId(f"c{n:063d}"))
    return WorkspaceChange(kind=ChangeKind.RUNNING, ts=float(n), workspace=ws)


class Watcher:
    """What the fan-out asks of a watcher: its workspaces now (after a gap)."""

    def __init__(self, workspaces: Mapping[InstanceId, Workspace]) -> None:
        self._workspaces = workspaces

    def workspaces(self) -> Mapping[InstanceId, Workspace]:
        return self._workspaces


@contextmanager
def fanout(hub: ChangeHub, history: int, batch: int = 100, **watcher: Any) -> Iterator[Fanout]:
    with hub.subscribe() as stream:
        yield Fanout(
            Watcher(watcher.get("workspaces", {})),  # type: ignore[arg-type]
            stream,
            history=history,
            batch=batch,
            encode=encode,
            epoch="e",
        )


def parsed(lines: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


async def test_a_follower_that_does_not_read_holds_up_nothing_and_is_told_it_fell_behind() -> None:
    hub = ChangeHub(buffer=10_000)
    with fanout(hub, history=4) as pump:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump.run)
            await trio.testing.wait_all_tasks_blocked()
            cursor = pump.feed.head  # a follower that starts now, then stops reading
            for n in range(1, 11):
                hub.publish(change(n))
            await trio.testing.wait_all_tasks_blocked()
            # the pump took them all, whatever the follower does
            assert pump.feed.head == 10
            step = await pump.next(cursor)
            assert step is not None
            cursor, lines = step
            (marker,) = parsed(lines)
            assert marker["event"] == "resync_required" and marker["seq"] == 10 == cursor
            assert marker["since"] == 0
            assert pump.feed.resyncs[Cause.BEHIND] == 1  # what the service's metrics read
            # and from there it is served as any other
            hub.publish(change(11))
            step = await pump.next(cursor)
            assert step is not None
            assert [obj["seq"] for obj in parsed(step[1])] == [11]
            nursery.cancel_scope.cancel()


async def test_followers_get_what_came_in_batches_and_wait_for_more() -> None:
    hub = ChangeHub(buffer=100)
    got: list[int] = []
    with fanout(hub, history=100, batch=3) as pump:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump.run)

            async def follow() -> None:
                cursor = 0
                while (step := await pump.next(cursor)) is not None:
                    cursor, lines = step
                    assert len(lines) <= 3
                    got.extend(obj["seq"] for obj in parsed(lines))

            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            for n in range(1, 8):
                hub.publish(change(n))
            await trio.testing.wait_all_tasks_blocked()
            assert got == list(range(1, 8))
            hub.close()  # the watcher shuts down: the pump ends, and so do the followers
    assert pump.closed


async def test_a_pump_that_lagged_leaves_a_gap_that_every_follower_is_told_of() -> None:
    hub = ChangeHub(buffer=2)  # the pump's own subscription overflows below
    now = {InstanceId("inst-9"): workspace(instance_id=InstanceId("inst-9"))}
    with fanout(hub, history=10, workspaces=now) as pump:
        for n in range(1, 6):  # before the pump runs: three are dropped, a `Lagged` instead
            hub.publish(change(n))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump.run)
            await trio.testing.wait_all_tasks_blocked()
            # the gap took a number of its own: 1, then the two newest changes
            assert pump.feed.head == 3
            step = await pump.next(0)
            assert step is not None
            assert parsed(step[1])[0]["event"] == "resync_required"
            assert pump.feed.resyncs[Cause.GAP] == 1
            # the state starts again from the watcher's (plus what came after the gap)
            assert next(c.workspace.instance_id for c in pump.feed.state()) == "inst-9"
            nursery.cancel_scope.cancel()


def test_the_feed_module_is_pure() -> None:
    import watcher.service.feed as module

    with open(module.__file__) as f:
        source = f.read()
    assert "import trio" not in source and "time." not in source
    assert Feed  # what the module exports
