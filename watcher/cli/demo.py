"""`ws-watcher demo`: the watcher live against a private containerd, with nothing but root.

The story, told on stdout as it happens (the watcher's changes in the human form of what
`watch` prints, between short narration lines):

1. install containerd/runc with apt when missing; start a private containerd (the test rig,
   `watcher.testing`) under a fresh /tmp/wsw-* dir;
2. start a watcher on it; create two mk1 and two mk2 workspace pods (one with a sidecar) and
   one unrelated pod: `created` and `running` for each workspace, nothing for the rest;
3. SIGKILL containerd and start it again: `disconnected`, then `synced` — the watcher rides
   through, the workspaces are still there;
4. delete the pods: `exited` and `removed` for each;
5. clean up everything the rig made — also on Ctrl-C/SIGTERM (then the demo exits 0 too).

Blocking rig calls run in worker threads; the whole story has a deadline, so a wedged step
fails loudly instead of hanging.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import trio
from trio_util import AsyncValue

from watcher.errors import UsageError
from watcher.records import Change, Disconnected, Synced, WorkspaceChange
from watcher.testing import (
    NAMESPACE,
    ContainerSpec,
    Pod,
    Pods,
    PrivateContainerd,
    ensure_installed,
    mk1_labels,
    mk2_labels,
)
from watcher.watcher import Settings, Watcher

from . import output
from .args import Options
from .commands import Emit, Write, follow_changes, line_printer
from .signals import Interrupt, cancelled_on_signal

__all__ = ["WORKSPACE_PODS", "demo"]

log = logging.getLogger("watcher.cli.demo")
T = TypeVar("T")

#: the whole story normally takes a few seconds; past this something is wedged
DEADLINE = 50.0
#: one step (a pod running, containerd back) normally takes well under a second
STEP_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoPod:
    name: str
    labels: dict[str, str]
    sidecar: bool = False
    instance_id: str | None = None  # None: not a workspace


WORKSPACE_PODS: tuple[DemoPod, ...] = (
    DemoPod(
        name="ws-mk1-a",
        instance_id="mk1-a",
        labels=mk1_labels("mk1-a", "ws-olive-otter", "alice"),
    ),
    DemoPod(
        name="ws-mk1-b",
        instance_id="mk1-b",
        labels=mk1_labels("mk1-b", "ws-brave-badger", "bob"),
    ),
    DemoPod(
        name="ws-mk2-c",
        instance_id="mk2-c",
        labels=mk2_labels("mk2-c", "ws-calm-crane", "carol"),
        sidecar=True,
    ),
    DemoPod(
        name="ws-mk2-d",
        instance_id="mk2-d",
        labels=mk2_labels("mk2-d", "ws-daring-dingo", "dave"),
    ),
)
INSTANCES = tuple(p.instance_id for p in WORKSPACE_PODS if p.instance_id is not None)
UNRELATED_POD = DemoPod(name="web-0", labels={"app": "web", "tier": "frontend"})


class _Milestones:
    """What the demo waits for, learnt from the lines as they are printed (so a narration
    line never overtakes the changes it follows)."""

    def __init__(self) -> None:
        self.synced = trio.Event()
        self.disconnected = trio.Event()
        self.resynced = trio.Event()
        self._seen: AsyncValue = AsyncValue(frozenset())  # {(event, instance id)}

    def see(self, change: Change) -> None:
        if isinstance(change, Disconnected):
            self.disconnected.set()
        elif isinstance(change, Synced):
            self.synced.set()
            if self.disconnected.is_set():
                self.resynced.set()
        elif isinstance(change, WorkspaceChange):
            step = (change.kind.value, change.workspace.instance_id)
            self._seen.value = self._seen.value | {step}

    async def printed(self, event: str, instances: Iterable[str]) -> None:
        """Return once `event` was printed for each of `instances`."""
        want = {(event, iid) for iid in instances}
        await self._seen.wait_value(lambda seen: want <= seen)


async def _in_thread(fn: Callable[..., T], *args: object) -> T:
    return await trio.to_thread.run_sync(fn, *args)


def _run_pod(pods: Pods, spec: DemoPod) -> Pod:
    containers = [ContainerSpec()]
    if spec.sidecar:
        containers.append(ContainerSpec(name="sidecar"))
    return pods.run_pod(spec.name, labels=spec.labels, containers=containers)


def _clean_up(ctrd: PrivateContainerd | None, pods: Pods | None) -> None:
    try:
        if pods is not None:
            if ctrd is not None and ctrd.running:
                pods.remove_all()
            pods.close()
    finally:
        if ctrd is not None:
            ctrd.cleanup()


async def demo(opts: Options, emit: Emit | None = None) -> int:
    """Run the story above; 0 when it ran (or was interrupted and cleaned up)."""
    if os.geteuid() != 0:
        raise UsageError(
            "the demo needs root: it runs a private containerd and containers "
            "(try: sudo ws-watcher demo)"
        )
    say = emit or line_printer()

    def narrate(text: str) -> None:
        say(f"── {text}")

    ctrd: PrivateContainerd | None = None
    pods: Pods | None = None
    interrupt = Interrupt()
    try:
        async with cancelled_on_signal() as interrupt:
            with trio.fail_after(DEADLINE):
                if any(shutil.which(exe) is None for exe in ("containerd", "runc", "ctr")):
                    narrate("installing containerd and runc with apt-get (once; a minute) ...")
                await _in_thread(ensure_installed)
                ctrd = await _in_thread(PrivateContainerd)
                narrate(f"starting a private containerd at {ctrd.address}")
                await _in_thread(ctrd.start)
                await _in_thread(ctrd.import_images)
                pods = await _in_thread(Pods, ctrd)
                await _story(ctrd, pods, say, narrate)
    finally:
        with trio.CancelScope(shield=True):
            if ctrd is not None:
                with contextlib.suppress(OSError):  # stdout gone: clean up all the same
                    narrate(f"cleaning up: pods, containerd, mounts, cgroups, {ctrd.base}")
            await _in_thread(_clean_up, ctrd, pods)
    narrate("interrupted; everything cleaned up" if interrupt.signum else "done")
    return 0


async def _story(
    ctrd: PrivateContainerd, pods: Pods, say: Emit, narrate: Callable[[str], None]
) -> None:
    milestones = _Milestones()
    settings = Settings(address=ctrd.address, namespace=NAMESPACE, backoff_max=0.5)

    def render(change: Change) -> str:
        milestones.see(change)
        return output.pretty_change(change)

    async with trio.open_nursery() as nursery:
        narrate("starting the watcher (what `ws-watcher watch` prints, for people)")
        watcher: Watcher = await nursery.start(
            partial(follow_changes, settings, render, _lines_to(say), initial=True)
        )
        await milestones.synced.wait()
        narrate("creating 2 mk1 and 2 mk2 workspace pods (one with a sidecar) and 1 other pod")
        made: list[Pod] = []
        for spec in (*WORKSPACE_PODS, UNRELATED_POD):
            made.append(await _in_thread(_run_pod, pods, spec))
        with trio.fail_after(STEP_TIMEOUT):
            await milestones.printed("running", INSTANCES)
        narrate("the workspaces now, as `ws-watcher ls` shows them:")
        ordered = sorted(watcher.workspaces().values(), key=lambda ws: ws.instance_id)
        for row in output.table(ordered, now=time.time()).splitlines():
            say(f"   {row}")

        narrate("SIGKILL containerd, then start it again: the watcher rides through")
        await _in_thread(ctrd.kill9)
        with trio.fail_after(STEP_TIMEOUT):
            await milestones.disconnected.wait()
        await _in_thread(ctrd.start)
        with trio.fail_after(STEP_TIMEOUT):
            await milestones.resynced.wait()

        narrate("deleting the pods as the kubelet does (stop, remove)")
        for pod in made:
            await _in_thread(pods.remove_pod, pod)
        with trio.fail_after(STEP_TIMEOUT):
            await milestones.printed("removed", INSTANCES)
        nursery.cancel_scope.cancel()


def _lines_to(say: Emit) -> Write:
    """The demo narrates to a terminal; its change lines go the same way, in order."""

    async def write(lines: Sequence[str]) -> None:
        for line in lines:
            say(line)
        await trio.lowlevel.checkpoint()

    return write
