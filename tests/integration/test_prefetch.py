"""Gets for /containers/create run side by side; their events are still applied in order."""

from __future__ import annotations

import math
from pathlib import Path

import trio

from watcher.records import ChangeKind, WorkspaceChange
from watcher.testing.fake import FakeContainerd, Rpc
from watcher.testing.labels import mk2_labels
from watcher.watcher import Settings, open_watcher


async def test_a_slow_get_does_not_hold_the_next_ones_but_order_holds(tmp_path: Path) -> None:
    with FakeContainerd(tmp_path) as fake:
        async with open_watcher(settings=Settings(address=fake.address)) as w:
            with w.changes() as changes:
                fake.clear_calls()
                fake.delay(Rpc.CONTAINERS_GET, math.inf, times=1)  # the first Get hangs
                first = fake.add_pod("ws-1", labels=mk2_labels("inst-1", "w", "o"))
                second = fake.add_pod("ws-2", labels=mk2_labels("inst-2", "w", "o"))
                with trio.fail_after(10):
                    # the Gets of both pods' containers are sent while the first still hangs
                    await fake.wait_until(
                        lambda f: sum(c.method == Rpc.CONTAINERS_GET for c in f.calls()) >= 4
                    )
                assert w.workspaces() == {}  # nothing applied past the hanging Get
                fake.clear_faults(Rpc.CONTAINERS_GET)
                with trio.fail_after(10):
                    await w.wait_for_container("inst-2")
                    await w.wait_for_container("inst-1")
                created = []
                while len(created) < 2:
                    change = await changes.__anext__()
                    if isinstance(change, WorkspaceChange) and change.kind is ChangeKind.CREATED:
                        created.append(change.workspace.container_id)
    assert created == [first.containers["workspace"], second.containers["workspace"]]
