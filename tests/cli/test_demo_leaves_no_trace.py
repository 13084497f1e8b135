"""`ws-watcher demo` leaves a node as it found it — a node with a kubelet included.

Run for real (root, the rig's containerd and runc): its pods' cgroups live under a parent of
its own while it runs, never under `/kubepods` (a kubelet's); afterwards no cgroup, process,
mount or service state of its is left. Installing is not exercised here (containerd is never
uninstalled from the test machine): `tests/unit/test_demo_install.py` covers it.

Another rig (a concurrent test session) may make pods under `/kubepods` while the demo runs:
a new cgroup in a kubelet tree is blamed on the demo unless another rig made a pod meanwhile.
The session's own rig (the `ws_watcher` fixture's containerd) makes none during this test.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from watcher.testing import host

if TYPE_CHECKING:  # the fixtures' classes (tests/ is not a package)
    from conftest import Running, WsWatcher

CGROUP_FS = Path("/sys/fs/cgroup")
#: a kubelet's pod cgroup trees: the cgroupfs driver's and the systemd driver's
KUBELET_TREES = ("kubepods", "kubepods.slice")
SERVICE = "containerd.service"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
DEMO_TIMEOUT = 60.0


def cgroup_listing() -> set[Path]:
    """The top level of /sys/fs/cgroup and of every hierarchy, and the kubelet's trees."""
    found = {p for p in CGROUP_FS.iterdir() if p.is_dir()}
    for root in host.cgroup_roots():
        found |= {p for p in root.iterdir() if p.is_dir()}
        for tree in KUBELET_TREES:
            for dirpath, dirnames, _ in os.walk(root / tree):
                found |= {Path(dirpath) / d for d in dirnames}
    return found


def in_hierarchies(relative: str) -> list[Path]:
    """Where cgroup `relative` exists (any hierarchy)."""
    return [root / relative.lstrip("/") for root in host.cgroup_roots()]


def other_rigs(demo_base: Path | None) -> set[Path]:
    """Base dirs of other rigs (their owner record: see watcher.testing.containerd)."""
    return {p for p in Path("/tmp").glob("wsw-*") if (p / "owner").exists()} - {demo_base}


def other_rig_pods(demo_base: Path | None) -> set[str]:
    """The pods other rigs have made so far: their log dirs (``<ns>_<name>_<uid>``)."""
    return {
        d.name for rig in other_rigs(demo_base) if (rig / "pods").is_dir()
        for d in (rig / "pods").iterdir()
    }  # fmt: skip


def in_kubelet_tree(path: Path) -> bool:
    return any(part in KUBELET_TREES for part in path.parts)


def containerd_processes() -> dict[int, str]:
    """pid → command line of every containerd and shim."""
    found = {}
    for pid in host.pids():
        argv = host.cmdline(pid)
        if argv and "containerd" in Path(argv[0]).name:
            found[pid] = " ".join(argv)
    return found


def service_state() -> tuple[object, ...]:
    """containerd.service as systemd has it (when there is a systemctl), its enablement
    links, and the policy-rc.d hook (the demo may write one only while it installs)."""
    state: list[object] = [
        sorted(str(p) for p in Path("/etc/systemd/system").glob(f"*/{SERVICE}")),
        POLICY_RC_D.read_bytes() if POLICY_RC_D.exists() else None,
    ]
    if shutil.which("systemctl"):
        for verb in ("is-enabled", "is-active"):
            done = subprocess.run(
                ["systemctl", verb, SERVICE], capture_output=True, text=True, check=False
            )
            state.append((verb, done.returncode, done.stdout.strip()))
    return tuple(state)


def mounts_under(base: Path) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == str(base) or p.startswith(f"{base}/")]


def check_while_running(
    demo: Running, kubelet_trees_before: set[Path], pods_before: set[str]
) -> tuple[Path, str, set[str]]:
    """While its pods run, their cgroups are under the demo's own parent, exist there, and
    no kubelet tree came to be for them. Returns its base dir, cgroup parent and pod uids."""
    first = demo.line()
    assert first.startswith("── starting a private containerd at "), first
    base = Path(first.split(" at ")[1]).parent
    while not (line := demo.line()).startswith("── their cgroups, under "):
        pass
    parent = re.search(r"parent (/\S+)", line)
    assert parent is not None, line
    demo_parent = parent.group(1)
    assert re.fullmatch(r"/ws-watcher-demo-[0-9a-f]{6}", demo_parent), demo_parent
    paths = [demo.line().split()[1] for _ in range(4)]  # one per workspace
    for path in paths:
        assert path.startswith(f"{demo_parent}/pod"), (path, demo_parent)
        assert any(p.is_dir() for p in in_hierarchies(path)), path
    uids = {path.split("/")[2].removeprefix("pod") for path in paths}
    made_now = {p for p in cgroup_listing() if p.name in KUBELET_TREES} - kubelet_trees_before
    assert not made_now or other_rig_pods(base) - pods_before, made_now  # no /kubepods of its own
    assert not [p for p in cgroup_listing() if any(uid in p.name for uid in uids)], uids
    return base, demo_parent, uids


KUBELET_SENTINEL = ("kubepods", "kubepods/besteffort", "kubepods/besteffort/pod-of-a-kubelet")


@pytest.fixture(params=["bare", "with-kubelet"])
def node(request: pytest.FixtureRequest) -> Iterator[None]:
    """A bare node, or one whose kubelet has a pod: a cgroup under /kubepods/besteffort in
    every hierarchy (made here where missing, removed afterwards: only what was made)."""
    made: list[Path] = []
    if request.param == "with-kubelet":
        for root in host.cgroup_roots():
            for relative in KUBELET_SENTINEL:
                if not (root / relative).exists():
                    (root / relative).mkdir()
                    made.append(root / relative)
    try:
        yield
    finally:
        for directory in reversed(made):
            with contextlib.suppress(OSError):  # busy: a concurrent rig's pods use it
                directory.rmdir()


@pytest.mark.usefixtures("node")
def test_demo_leaves_no_trace(ws_watcher: WsWatcher) -> None:
    cgroups_before = cgroup_listing()
    kubelet_trees_before = {p for p in cgroups_before if p.name in KUBELET_TREES}
    processes_before = containerd_processes()
    service_before = service_state()
    rigs = other_rigs(None)
    pods_before = other_rig_pods(None)

    demo = ws_watcher.start("demo", address=None)
    try:
        base, demo_parent, uids = check_while_running(demo, kubelet_trees_before, pods_before)
        assert demo.wait(DEMO_TIMEOUT) == 0, demo.stderr
    finally:
        if demo.proc.poll() is None:  # a check failed: let it clean up (the fixture SIGKILLs)
            demo.signal(signal.SIGTERM)
            demo.wait(DEMO_TIMEOUT)
    assert demo.rest()[-1].endswith("done")
    rigs |= other_rigs(base)
    # other rigs' pods made or removed meanwhile (tests running beside this one)
    concurrent_pods = other_rig_pods(base) ^ pods_before

    # cgroups: nothing new (in a kubelet tree: unless another rig made pods meanwhile), no
    # trace of the demo's pods anywhere, the demo's parent gone from every hierarchy
    cgroups_after = cgroup_listing()
    new, gone = cgroups_after - cgroups_before, cgroups_before - cgroups_after
    assert not [p for p in new if not (concurrent_pods and in_kubelet_tree(p))], new
    assert not [p for p in gone if not (concurrent_pods and in_kubelet_tree(p))], gone
    assert not [p for p in new if any(uid in str(p) for uid in uids)], new
    assert not [p for p in in_hierarchies(demo_parent) if p.exists()]

    # processes: none of its containerd and shims; no other new containerd (the
    # distribution's, say) unless another rig's
    leftovers = {pid: argv for pid, argv in containerd_processes().items()
                 if pid not in processes_before}  # fmt: skip
    assert not [argv for argv in leftovers.values() if str(base) in argv], leftovers
    strangers = [a for a in leftovers.values() if not any(str(rig) in a for rig in rigs)]
    assert not strangers, leftovers
    ours = [pid for pid in host.pids() if any(str(base) in a for a in host.cmdline(pid))]
    assert not ours, [host.cmdline(pid) for pid in ours]

    # mounts and files
    assert not mounts_under(base)
    assert not base.exists()

    # the distribution's containerd service, its enablement and the policy-rc.d hook
    assert service_state() == service_before
