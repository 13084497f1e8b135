"""`ws-watcher demo`: the watcher live against a private containerd, with nothing but root.

The story, told on stdout as it happens (the watcher's changes in the human form of what
`watch` prints, between short narration lines):

1. install containerd, runc and busybox-static with apt-get when missing (see "Installing"
   below); start a private containerd (the rig, `watcher.testing.rig`: no pytest) under a fresh
   /tmp/wsw-* dir;
2. start a watcher on it; create two mk1 and two mk2 workspace pods (one with a sidecar) and
   one unrelated pod: `created` and `running` for each workspace, nothing for the rest. The
   pods' cgroups go under a parent of the demo's own, `/ws-watcher-demo-<random>/pod<uid>`,
   never under `/kubepods`: on a node that is the kubelet's;
3. SIGKILL containerd and start it again: `disconnected`, then `synced` — the watcher rides
   through, the workspaces are still there;
4. delete the pods: `exited` and `removed` for each;
5. clean up everything the rig made, the cgroup parent included — also on Ctrl-C/SIGTERM
   (then the demo exits 0 too). A node is left as it was found, but for the packages.

Blocking rig calls run in worker threads; the story has a deadline, so a wedged step fails
loudly instead of hanging.

Installing happens before the story and outside its deadline (apt-get takes a minute or
more), with its own generous one. The packages stay installed (the tests need them next; the
demo says how to remove them), but the distribution's own containerd must not come to life:
Debian's maintainer scripts enable `containerd.service` and start it. So the install runs
with a `/usr/sbin/policy-rc.d` that forbids starts (written only when there is none, removed
afterwards), and the unit's enabled/active state is recorded before and put back after. The
unpack step (dpkg) is not interrupted by Ctrl-C — a half-configured package is worse than a
few seconds' wait — and apt-get runs in its own session, so a terminal's Ctrl-C reaches only
the demo.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio
from trio_util import AsyncValue

from watcher.errors import UsageError
from watcher.published import Change, Disconnected, Synced, WorkspaceChange
from watcher.testing.rig import (
    NAMESPACE,
    ContainerSpec,
    Pod,
    Pods,
    PrivateContainerd,
    RigError,
    host,
    missing_packages,
    mk1_labels,
    mk2_labels,
)
from watcher.watcher import Settings, Watcher

from . import output
from .args import Options
from .commands import Emit, Write, follow_changes, line_printer
from .signals import Interrupt, cancelled_on_signal

__all__ = [
    "WORKSPACE_PODS",
    "UnitState",
    "demo",
    "missing_packages",
    "restore_unit",
    "services_held_back",
    "unit_state",
]

log = logging.getLogger("watcher.cli.demo")
T = TypeVar("T")

#: the whole story normally takes a few seconds; past this something is wedged
DEADLINE = 50.0
#: apt-get update + download + unpack: a minute or two, many on a slow mirror
INSTALL_TIMEOUT = 900.0
#: the unpack/configure step alone, from the downloaded archives: seconds, normally
UNPACK_TIMEOUT = 300.0
#: the demo's pods' cgroup parent is this plus a random suffix: its own, removed at the end
CGROUP_PARENT_PREFIX = "/ws-watcher-demo-"
#: Debian's hook: invoke-rc.d and deb-systemd-invoke ask it before starting a service
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
POLICY_RC_D_TEXT = """#!/bin/sh
# Written by `ws-watcher demo` while it installs containerd; removed when it is done.
# 101: "action forbidden by policy": no package script starts a service meanwhile.
exit 101
"""
#: the distribution's own containerd, which the containerd package enables and starts
SERVICE = "containerd.service"
#: where `systemctl enable` (and deb-systemd-helper) put a unit's symlinks
SYSTEMD_UNIT_DIR = Path("/etc/systemd/system")
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


def _clean_up(ctrd: PrivateContainerd | None, pods: Pods | None, cgroup_parent: str) -> None:
    try:
        if pods is not None:
            if ctrd is not None and ctrd.running:
                pods.remove_all()
            pods.close()
    finally:
        try:
            if ctrd is not None:
                ctrd.cleanup()
        finally:
            _remove_cgroup_parent(cgroup_parent)


def _remove_cgroup_parent(cgroup_parent: str) -> None:
    """rmdir the demo's own cgroup parent in every hierarchy (the rig's clean-up normally did
    already, with the pods' cgroups); it must not outlive the demo."""
    host.remove_cgroup(cgroup_parent)
    left = [root for root in host.cgroup_roots() if (root / cgroup_parent.lstrip("/")).exists()]
    if left:
        raise RigError(f"cgroup {cgroup_parent} could not be removed under {left}")


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
    # random: two demos at once (or a demo and a leftover of a killed one) never share it
    cgroup_parent = f"{CGROUP_PARENT_PREFIX}{secrets.token_hex(3)}"
    interrupt = Interrupt()
    try:
        async with cancelled_on_signal() as interrupt:
            if missing := missing_packages():
                await _install(missing, say, narrate)  # before the deadline: minutes, not s
            with trio.fail_after(DEADLINE):
                ctrd = await _in_thread(PrivateContainerd)
                # in the rig's own list too, so its clean-up (and a later reclaim of a
                # SIGKILLed demo's dir) removes the parent as well
                await _in_thread(ctrd.track_cgroup, cgroup_parent)
                narrate(f"starting a private containerd at {ctrd.address}")
                await _in_thread(ctrd.start)
                await _in_thread(ctrd.import_images)
                pods = await _in_thread(partial(Pods, ctrd, cgroup_parent_prefix=cgroup_parent))
                await _story(ctrd, pods, say, narrate)
    finally:
        with trio.CancelScope(shield=True):
            if ctrd is not None:
                with contextlib.suppress(OSError):  # stdout gone: clean up all the same
                    narrate(
                        f"cleaning up: pods, containerd, mounts, cgroups ({cgroup_parent}), "
                        f"{ctrd.base}"
                    )
            await _in_thread(_clean_up, ctrd, pods, cgroup_parent)
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
        narrate(
            f"their cgroups, under the demo's own parent {pods.cgroup_parent_prefix} "
            "(a kubelet's /kubepods is left alone):"
        )
        for ws in ordered:
            say(f"   {ws.instance_id:<8} {ws.cgroup_path}")

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


# -- installing what the rig needs -----------------------------------------------------------


async def _install(packages: Sequence[str], say: Emit, narrate: Callable[[str], None]) -> None:
    """apt-get install `packages`, leaving the distribution's containerd service as it was."""
    if shutil.which("apt-get") is None:
        raise UsageError(
            f"the demo needs {', '.join(packages)} and installs them only with apt-get: "
            "install them, then run it again"
        )
    names = " ".join(packages)
    narrate(
        f"installing {names} with apt-get (once; a minute or two). They stay installed; "
        f"the distribution's {SERVICE} is neither started nor enabled"
    )
    started = time.monotonic()
    systemctl = _find_systemctl()
    # module globals read here, not bound as defaults: the tests point them at a tmp dir
    before = await _in_thread(unit_state, SERVICE, systemctl, SYSTEMD_UNIT_DIR)
    try:
        with services_held_back(POLICY_RC_D):
            with trio.fail_after(INSTALL_TIMEOUT):
                say("   apt-get update")
                await _apt("update", "-q")
                say(f"   downloading {names}")
                await _apt("install", "-y", "-q", "--no-install-recommends", "--download-only",
                           *packages)  # fmt: skip
                say("   unpacking and configuring (dpkg; Ctrl-C waits for it)")
                # dpkg stopped half-way leaves the host's package database to be repaired by
                # hand: the node would not be "as found". It takes seconds once downloaded.
                with trio.CancelScope(shield=True), trio.fail_after(UNPACK_TIMEOUT):
                    await _apt("install", "-y", "-q", "--no-install-recommends", *packages)
    except trio.TooSlowError:
        raise UsageError(
            f"apt-get did not finish installing {names} in time: install them, then run the "
            "demo again"
        ) from None
    finally:
        with trio.CancelScope(shield=True):
            actions = await _in_thread(restore_unit, SERVICE, before, systemctl, SYSTEMD_UNIT_DIR)
        for action in actions:  # a unit left changed is the one thing a user must hear of
            level = logging.WARNING if action.startswith(FAILED) else logging.INFO
            log.log(
                level, "after installing %s: %s (to leave %s as it was)", names, action, SERVICE
            )
    failed = [a for a in actions if a.startswith(FAILED)]
    state = f"NOT as it was: {'; '.join(failed)}" if failed else "as it was"
    narrate(
        f"installed {names} in {time.monotonic() - started:.0f} s (they stay; "
        f"`apt-get purge {names}` removes them); {SERVICE} is {state}"
        + (f" ({', '.join(actions)})" if actions and not failed else "")
    )


async def _apt(*args: str) -> None:
    cmd = ["apt-get", *args]
    # its own session: a terminal's Ctrl-C reaches the demo, which decides what to stop when
    done = await trio.run_process(
        cmd,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdin=subprocess.DEVNULL,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        start_new_session=True,
    )
    if done.returncode != 0:
        text = (done.stderr or done.stdout or b"").decode(errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        raise UsageError(
            f"{' '.join(cmd)} failed ({done.returncode}): {lines[-1] if lines else 'no output'}"
        )


@contextlib.contextmanager
def services_held_back(path: Path = POLICY_RC_D) -> Iterator[bool]:
    """While inside, Debian's package scripts start no service: `path` (policy-rc.d) exits 101.

    Written only when no such file exists (an admin's or a container image's own policy is
    theirs, whatever it says: the unit's state is restored anyway), and removed afterwards
    only if it is still the file written here. Yields whether it was written.
    """
    try:  # O_EXCL: never over someone's file; O_NOFOLLOW: nor through a symlink
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    except FileExistsError:
        fd = -1
    if fd < 0:
        yield False
        return
    written = os.fstat(fd)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(POLICY_RC_D_TEXT)
            os.fchmod(f.fileno(), 0o755)  # whatever the umask
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            now = os.lstat(path)
            # the inode number alone is no proof: a file made after ours was removed may get
            # it again; what it says must be ours too
            if (now.st_dev, now.st_ino) == (written.st_dev, written.st_ino) and (
                stat.S_ISREG(now.st_mode) and path.read_text() == POLICY_RC_D_TEXT
            ):
                path.unlink()


FAILED = "could not"
Systemctl = Callable[[Sequence[str]], tuple[int, str]]
"""Runs `systemctl ARGS`: its exit status and stripped stdout (a seam for the tests)."""


def _find_systemctl() -> Systemctl | None:
    return _systemctl if shutil.which("systemctl") else None


def _systemctl(args: Sequence[str]) -> tuple[int, str]:
    done = subprocess.run(
        ["systemctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, done.stdout.strip() or done.stderr.strip()


@dataclass(frozen=True, slots=True)
class UnitState:
    """What installing a package may change about a systemd unit."""

    #: `systemctl is-enabled`: enabled, disabled, masked, ...; "" when unknown (no such unit)
    enabled: str
    #: `systemctl is-active`: active, inactive, failed, ...; "" when no systemd runs
    active: str
    #: the unit's symlinks in <unit dir>/*.wants, *.requires (what enabling makes)
    links: frozenset[Path]


def unit_state(
    unit: str, systemctl: Systemctl | None, unit_dir: Path = SYSTEMD_UNIT_DIR
) -> UnitState:
    """The unit's state now; without systemctl only its enablement symlinks tell."""
    links = frozenset(
        p for pattern in (f"*.wants/{unit}", f"*.requires/{unit}")
        for p in unit_dir.glob(pattern) if p.is_symlink()
    )  # fmt: skip
    if systemctl is None:
        return UnitState(enabled="", active="", links=links)
    return UnitState(
        enabled=_answer(systemctl(["is-enabled", unit]), IS_ENABLED),
        active=_answer(systemctl(["is-active", unit]), IS_ACTIVE),
        links=links,
    )


#: the answers of `systemctl is-enabled` / `is-active` (anything else, e.g. "Failed to get
#: unit file state" or "System has not been booted with systemd", means "unknown": "")
IS_ENABLED = frozenset({
    "enabled", "enabled-runtime", "linked", "linked-runtime", "alias", "masked",
    "masked-runtime", "static", "indirect", "disabled", "generated", "transient", "bad",
    "not-found",
})  # fmt: skip
IS_ACTIVE = frozenset({
    "active", "reloading", "inactive", "failed", "activating", "deactivating", "maintenance",
    "refreshing",
})  # fmt: skip


def _answer(result: tuple[int, str], known: frozenset[str]) -> str:
    _, out = result
    first = out.splitlines()[0].strip() if out else ""
    return first if first in known else ""


def restore_unit(
    unit: str, before: UnitState, systemctl: Systemctl | None,
    unit_dir: Path = SYSTEMD_UNIT_DIR,
) -> list[str]:  # fmt: skip
    """Put `unit` back the way `before` found it; what had to be done, in words (what could
    not be done starts with `FAILED`).

    An install can enable the unit and start it (the package's postinst does both; the start
    is normally stopped by the policy-rc.d above). A unit that was not enabled before (also:
    not there at all, or masked by an earlier removal of the package) ends disabled; one that
    was inactive ends stopped. Without systemctl there is no service manager to start it, and
    the symlinks that enabling made are removed by hand.
    """
    after = unit_state(unit, systemctl, unit_dir)
    if systemctl is None:
        done = []
        for link in sorted(after.links - before.links):
            try:
                link.unlink()
                done.append(f"removed {link}")
            except OSError as exc:
                done.append(f"{FAILED} remove {link}: {exc.strerror}")
        return done
    commands: list[list[str]] = []
    if before.enabled == "enabled" and after.enabled != "enabled":
        commands.append(["enable", unit])
    elif before.enabled != "enabled" and after.enabled == "enabled":
        commands.append(["disable", unit])
    # "" (no systemd answers) is never a reason to act: nothing can have started it then
    if after.active == "active" and before.active != "active":
        commands.append(["stop", unit])
    elif before.active == "active" and after.active not in ("active", ""):
        commands.append(["start", unit])
    done = []
    for args in commands:
        code, out = systemctl(args)
        what = f"systemctl {' '.join(args)}"
        done.append(what if code == 0 else f"{FAILED} {what} ({code}): {out}")
    return done
