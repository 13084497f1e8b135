"""A watcher for integration tests: running against a rig, every change it published kept.

Synopsis::

    async with watching(ctrd) as (w, seen):
        pod = await run(pods.run_pod, "ws-1", labels=mk2_labels("inst", "ws", "owner"))
        ws = await w.wait_for_container("inst")
        assert kinds_of(seen, ws.container_id) == [ChangeKind.CREATED, ChangeKind.RUNNING]
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from ..published import Change, ChangeKind, Lagged, WorkspaceChange
from ..watcher import Settings, Watcher, open_watcher
from .containerd import PrivateContainerd

T = TypeVar("T")


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking rig call (CRI, ctr), off the trio thread."""
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


@asynccontextmanager
async def watching(
    ctrd: PrivateContainerd | str,
    *,
    backoff: float = 0.05,
    backoff_max: float | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[Watcher, list[Change]]]:
    """A watcher on `ctrd` (or an address: a wiretap's) plus the list of every change it
    published, in order; it reconnects after `backoff` seconds, doubling up to `backoff_max`
    (ten times `backoff`).

    A follower that lags would make the list lie, so a `Lagged` fails the test.
    """
    seen: list[Change] = []
    config = Settings(
        address=ctrd if isinstance(ctrd, str) else ctrd.address,
        backoff_initial=backoff,
        backoff_max=backoff * 10 if backoff_max is None else backoff_max,
        **settings,
    )
    async with open_watcher(settings=config) as w, trio.open_nursery() as nursery:
        with w.changes() as stream:

            async def collect() -> None:
                async for change in stream:
                    assert not isinstance(change, Lagged), change
                    seen.append(change)

            nursery.start_soon(collect)
            try:
                yield w, seen
            finally:
                nursery.cancel_scope.cancel()


def kinds_of(seen: list[Change], container_id: str) -> list[ChangeKind]:
    """The lifecycle changes published for one container, in order."""
    return [
        c.kind
        for c in seen
        if isinstance(c, WorkspaceChange) and c.workspace.container_id == container_id
    ]
