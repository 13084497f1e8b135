"""Randomized fault injection against the fake containerd: seeded scenarios.

Each scenario drives one watcher through a random walk of pod lifecycles (workspaces of
both schemes, other pods, crashes and replacements, removals) interleaved with faults:
events withheld and released late, duplicated, streams dropped and stalled, Gets and
listings that fail or lag, containerd stopped, killed and restarted, and relists all along.

Invariants, checked on every change as it is published and at the end:
* per container: at most one `created`, `running`, `exited`, `removed`, in that order, the
  first one `created`;
* `removed` only once containerd deleted the container (the fake no longer holds it);
* after quiescence (faults cleared, withheld events released), the index equals the fake's
  state: the same workspace containers, each with the fake's PID and task state.

`WS_WATCHER_FAULT_SEEDS` (default 24) scenarios of `WS_WATCHER_FAULT_STEPS` (default 120)
steps run in CI — a few thousand steps; `python -m benchmarks.hunt faults` hunts longer.
A failure names its seed: rerun it alone with `WS_WATCHER_FAULT_SEED=N`.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import trio
import trio.testing

from containerd_protos.types.task import task_pb2 as task_types
from watcher.published import ChangeKind, Lagged, WorkspaceChange, WorkspaceState
from watcher.testing.fake import FakeContainerd, FakePod, Rpc
from watcher.testing.labels import mk1_labels, mk2_labels
from watcher.watcher import Settings, Watcher, open_watcher

SEEDS = int(os.environ.get("WS_WATCHER_FAULT_SEEDS", "24"))
STEPS = int(os.environ.get("WS_WATCHER_FAULT_STEPS", "120"))
ONLY = os.environ.get("WS_WATCHER_FAULT_SEED")
#: quiescence: faults cleared, the watcher must agree with the fake within this long
PATIENCE = 20.0
ORDER = [ChangeKind.CREATED, ChangeKind.RUNNING, ChangeKind.EXITED, ChangeKind.REMOVED]


class Scenario:
    """One random walk; `workspaces` maps instance ids to the fake's pods."""

    def __init__(self, fake: FakeContainerd, rnd: random.Random) -> None:
        self.fake = fake
        self.rnd = rnd
        self.workspaces: dict[str, FakePod] = {}
        self.others: list[FakePod] = []
        self.made = 0
        self.down = False

    def step(self) -> None:
        actions: list[tuple[int, Callable[[], None]]] = [
            (6, self.add_workspace),
            (2, self.add_other),
            (2, self.crash),
            (3, self.remove),
            (2, lambda: self.fake.withhold_next(self.rnd.randint(1, 4))),
            (2, self.fake.release_withheld),
            (2, lambda: self.fake.duplicate_next(self.rnd.randint(1, 4))),
            (1, self.drop),
            (1, self.stall),
            (1, self.fake.resume_streams),
            (1, lambda: self.fake.delay(Rpc.CONTAINERS_GET, self.rnd.choice([0.01, 0.2]))),
            (1, lambda: self.fake.fail(Rpc.CONTAINERS_GET, grpc.StatusCode.UNAVAILABLE)),
            (1, lambda: self.fake.fail(Rpc.TASKS_LIST, grpc.StatusCode.DEADLINE_EXCEEDED)),
            (1, self.outage),
        ]
        weights = [w for w, _ in actions]
        self.rnd.choices([a for _, a in actions], weights)[0]()

    def add_workspace(self) -> None:
        self.made += 1
        iid = f"inst-{self.made}"
        make = self.rnd.choice([mk1_labels, mk2_labels])
        sidecar = ("workspace", "sidecar") if self.rnd.random() < 0.2 else ("workspace",)
        self.workspaces[iid] = self.fake.add_pod(
            f"ws-{self.made}", labels=make(iid, f"ws-{self.made}", "owner"), containers=sidecar
        )

    def add_other(self) -> None:
        self.made += 1
        self.others.append(self.fake.add_pod(f"web-{self.made}", labels={"app": "web"}))

    def crash(self) -> None:
        if self.workspaces:
            iid = self.rnd.choice(sorted(self.workspaces))
            self.workspaces[iid] = self.fake.replace_container(self.workspaces[iid])

    def remove(self) -> None:
        pools = [p for p in (sorted(self.workspaces), self.others) if p]
        if not pools:
            return
        pool = self.rnd.choice(pools)
        if pool is self.others:
            self.fake.remove_pod(self.others.pop(self.rnd.randrange(len(self.others))))
        else:
            iid = self.rnd.choice(pool)
            self.fake.remove_pod(self.workspaces.pop(iid))

    def drop(self) -> None:
        self.fake.drop_streams()

    def stall(self) -> None:
        self.fake.stall_streams()

    def outage(self) -> None:
        # stopped or SIGKILLed; up again at once or at a later step's outage
        if self.down:
            self.fake.start()
            self.down = False
        elif self.rnd.random() < 0.5:
            self.fake.restart()
        else:
            self.fake.kill() if self.rnd.random() < 0.5 else self.fake.stop()
            self.down = True

    def quiesce(self) -> None:
        if self.down:
            self.fake.start()
            self.down = False
        self.fake.clear_faults()
        self.fake.resume_streams()
        self.fake.release_withheld()


def check_stream(kinds: list[ChangeKind], cid: str) -> None:
    positions = [ORDER.index(k) for k in kinds]
    assert positions == sorted(set(positions)), (cid, kinds)
    assert kinds[0] is ChangeKind.CREATED, (cid, kinds)


def expected(fake: FakeContainerd, scenario: Scenario) -> set[str]:
    """The workspace containers (old attempts too) the fake still holds."""
    held = fake.container_ids()
    return {
        cid
        for pod in scenario.workspaces.values()
        for cid in (pod.containers["workspace"], *pod.exited)
        if cid in held
    }


def agrees(w: Watcher, fake: FakeContainerd, scenario: Scenario) -> bool | None:
    """The index holds exactly the fake's workspace containers, with its PIDs and states."""
    known = w._index.containers()  # every visible workspace container (old attempts too)
    if set(known) != expected(fake, scenario):
        return None
    for cid, ws in known.items():
        task = fake.task(cid)
        alive = task is not None and task.status == task_types.RUNNING
        if alive != (ws.state is WorkspaceState.RUNNING) or (alive and ws.pid != task.pid):
            return None
    return True


def disagreement(w: Watcher, fake: FakeContainerd, scenario: Scenario) -> str:
    want = expected(fake, scenario)
    known = w._index.containers()
    lines = [f"missing {sorted(want - set(known))}", f"extra {sorted(set(known) - want)}"]
    for cid, ws in known.items():
        task = fake.task(cid)
        lines.append(f"{cid[:8]}: index {ws.state.value} pid {ws.pid}; fake {task}")
    return "\n".join(lines)


def seeds() -> list[int]:
    return [int(ONLY)] if ONLY else list(range(SEEDS))


@pytest.mark.parametrize("seed", seeds())
async def test_random_faults(seed: int, tmp_path: Path) -> None:
    rnd = random.Random(seed)
    kinds: dict[str, list[ChangeKind]] = defaultdict(list)
    with FakeContainerd(tmp_path) as fake:
        scenario = Scenario(fake, rnd)
        config = Settings(
            address=fake.address,
            backoff_initial=0.01,
            backoff_max=0.1,
            call_timeout=1.0,
            listing_timeout=1.0,
            relist_interval=0.3,
            relist_grace=0.5,
        )
        async with open_watcher(settings=config) as w, trio.open_nursery() as nursery:
            with w.changes() as changes:

                async def collect() -> None:
                    async for change in changes:
                        assert not isinstance(change, Lagged)
                        if not isinstance(change, WorkspaceChange):
                            continue
                        cid = change.workspace.container_id
                        if change.kind is ChangeKind.REMOVED:
                            assert cid not in fake.container_ids(), f"seed {seed}: {cid} early"
                        kinds[cid].append(change.kind)
                        check_stream(kinds[cid], cid)

                nursery.start_soon(collect)
                for _ in range(STEPS):
                    scenario.step()
                    await trio.sleep(rnd.choice([0, 0, 0, 0.001, 0.005, 0.02]))
                scenario.quiesce()
                with trio.move_on_after(PATIENCE):
                    await w.wait_until(lambda: agrees(w, fake, scenario))
                assert agrees(w, fake, scenario), f"seed {seed}: {disagreement(w, fake, scenario)}"
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
    for cid, seen in kinds.items():
        check_stream(seen, cid)
