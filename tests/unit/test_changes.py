"""Change fan-out: every follower sees every change, a slow one cannot stall the publisher."""

from __future__ import annotations

import trio
import trio.testing

from watcher.changes import ChangeHub, Lagged
from watcher.published import Disconnected, Synced


def _synced(n: int) -> Synced:
    return Synced(ts=float(n), workspaces=n, initial=False)


async def test_every_follower_gets_every_change_in_order() -> None:
    hub = ChangeHub(buffer=10)
    with hub.subscribe() as a, hub.subscribe() as b:
        for n in range(3):
            hub.publish(_synced(n))
        assert [await a.__anext__() for _ in range(3)] == [_synced(n) for n in range(3)]
        assert [await b.__anext__() for _ in range(3)] == [_synced(n) for n in range(3)]
    assert hub.followers == 0


async def test_subscribing_registers_at_once() -> None:
    hub = ChangeHub()
    with hub.subscribe() as changes:
        hub.publish(Disconnected(ts=1.0, error="x"))  # before the first __anext__
        assert await changes.__anext__() == Disconnected(ts=1.0, error="x")


async def test_a_waiting_follower_is_woken() -> None:
    hub = ChangeHub()
    got: list[object] = []
    with hub.subscribe() as changes:
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                got.append(await changes.__anext__())

            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            hub.publish(_synced(1))
    assert got == [_synced(1)]


async def test_slow_follower_gets_lagged_then_the_newest() -> None:
    hub = ChangeHub(buffer=3)
    with hub.subscribe() as changes:
        for n in range(10):
            hub.publish(_synced(n))  # never blocks
        first = await changes.__anext__()
        assert isinstance(first, Lagged) and first.missed == 7
        assert [await changes.__anext__() for _ in range(3)] == [_synced(n) for n in (7, 8, 9)]


async def test_close_ends_iteration() -> None:
    hub = ChangeHub()
    with hub.subscribe() as changes:
        hub.publish(_synced(1))
        hub.close()
        assert [c async for c in changes] == [_synced(1)]
