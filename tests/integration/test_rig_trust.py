"""The rig acts only on what it provably made (issue 13, point 7).

The rig runs as root, and ``reclaim_stale()`` cleans up ``wsw-*`` dirs in ``/tmp``, where any
local user can put one full of lies: a runc ``state.json`` naming a pid and a cgroup, a task
``address`` file naming a path through ``..``. Each attack here aims at harmless stand-ins —
a ``sleep`` as the victim process, decoy files outside the rig, a dummy top-level cgroup
(never a real system one) holding the victim — and the rig must leave all of them alone;
while a genuine stale rig, its containerd SIGKILLed and its shims left running, is still
reclaimed completely.

Needs root (``chown``, cgroups, a real containerd for the last test), hence here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from watcher.testing import PrivateContainerd, RigError, host, reclaim_stale
from watcher.testing.containerd import (
    CGROUPS_FILE,
    MARKER_FILE,
    OWNER_FILE,
    SHIM_SOCKET_DIRS,
    untrusted_reason,
)

NOBODY = 65534
FAKE_ID = "f" * 64
PATIENCE = 10.0
"""Bound on every wait: only reached when something is broken."""


def dead_owner() -> str:
    # an owner record no process can match: start time 0 is before any user process
    return f"{os.getpid()} 0"


# -- stand-ins ------------------------------------------------------------------------------


@pytest.fixture
def parent() -> Iterator[Path]:
    """A private stand-in for /tmp: world-writable with the sticky bit, as /tmp is."""
    path = Path(tempfile.mkdtemp(prefix="wswt", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        host.unmount_all(path)  # after a failed test: never rm through a rig's mounts
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def outside() -> Iterator[Path]:
    """A dir outside ``parent`` (and any rig): decoys and symlink targets live here."""
    path = Path(tempfile.mkdtemp(prefix="wswo", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """A harmless process the attacker wants dead."""
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def decoy_cgroup(victim: subprocess.Popen[bytes]) -> Iterator[str]:
    """A dummy top-level cgroup, holding the victim: stands in for ``/system.slice/...``."""
    name = f"/wsw-decoy-{uuid.uuid4().hex[:8]}"
    made = []
    for root in host.cgroup_roots():
        directory = root / name.lstrip("/")
        directory.mkdir()
        made.append(directory)
        with contextlib.suppress(OSError):  # v1 cpuset without cpus: the others hold it
            (directory / "cgroup.procs").write_text(str(victim.pid))
    assert victim.pid in host.cgroup_procs(name)
    try:
        yield name
    finally:
        victim.kill()
        victim.wait()
        for directory in made:
            host.wait_until(f"{directory} to empty", lambda d=directory: _rmdir(d), PATIENCE)


def _rmdir(directory: Path) -> bool:
    try:
        directory.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


@pytest.fixture
def decoys(outside: Path) -> list[Path]:
    """A regular file and a unix socket (what a shim socket is) outside every rig."""
    regular = outside / "decoy-file"
    regular.write_text("precious\n")
    sock_path = outside / "decoy.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))  # the file stays after close
    return [regular, sock_path]


@pytest.fixture
def rig_dirs() -> Iterator[Callable[[Path], PrivateContainerd]]:
    """Makes rig dirs as ``PrivateContainerd`` does (no containerd started), owner dead."""
    made: list[PrivateContainerd] = []

    def make(base: Path) -> PrivateContainerd:
        rig = PrivateContainerd(base)
        made.append(rig)
        (base / OWNER_FILE).write_text(dead_owner())
        return rig

    yield make
    for rig in made:  # idempotent; also a safe no-op on a dir reclaimed or altered meanwhile
        rig.cleanup()


def plant(base: Path, *, pid: int, cgroup: str, decoys: list[Path]) -> None:
    """What an attacker writes: a runc state naming ``pid`` (with its true start time, so no
    reused-pid check saves it) and ``cgroup``, and task address files escaping to ``decoys``
    through ``..`` (lexically still below the shims' socket dir)."""
    state = base / "runc" / "k8s.io" / FAKE_ID / "state.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({
        "id": FAKE_ID, "init_process_pid": pid, "init_process_start": host.start_time(pid),
        "config": {"cgroups": {"path": cgroup}},
    }))  # fmt: skip
    for n, decoy in enumerate(decoys):
        task = base / "state" / "io.containerd.runtime.v2.task" / "k8s.io" / f"{FAKE_ID[:-1]}{n}"
        task.mkdir(parents=True, exist_ok=True)
        (task / "address").write_text(f"unix://{SHIM_SOCKET_DIRS[0]}/../../..{decoy}")


def assert_untouched(victim: subprocess.Popen[bytes], cgroup: str, decoys: list[Path]) -> None:
    # a SIGKILL sent by the clean-up is waited for there: a live victim now was never sent one
    assert victim.poll() is None and host.alive(victim.pid)
    assert victim.pid in host.cgroup_procs(cgroup)
    assert host.cgroup_exists(cgroup)
    for decoy in decoys:
        assert os.path.lexists(decoy), f"{decoy} was removed"


# -- the base dir ---------------------------------------------------------------------------


def test_rig_dir_is_ours_alone_and_marked(parent: Path) -> None:
    old_umask = os.umask(0o002)  # a lax umask must not loosen the mode
    try:
        rig = PrivateContainerd(parent / "wsw-mine")
    finally:
        os.umask(old_umask)
    try:
        st = os.lstat(rig.base)
        assert (st.st_uid, st.st_mode & 0o7777) == (os.geteuid(), 0o700)
        marker = json.loads((rig.base / MARKER_FILE).read_text())
        assert (marker["path"], marker["ino"]) == (str(rig.base), st.st_ino)
        assert untrusted_reason(rig.base) is None
    finally:
        rig.cleanup()
    assert not rig.base.exists()


def test_an_existing_dir_that_is_not_a_rig_is_refused(outside: Path) -> None:
    # the old rig resolved base (following a symlink), then rmtree'd it at clean-up
    target = outside / "precious"
    target.mkdir()
    (target / "file").write_text("keep\n")
    link = outside / "wsw-link"
    link.symlink_to(target)
    for base in (target, link):
        with pytest.raises(RigError, match="not a rig dir of ours"):
            PrivateContainerd(base)
    assert (target / "file").read_text() == "keep\n"


# -- dirs the rig did not (provably) make -----------------------------------------------------


def _wrong_mode(parent: Path, outside: Path, make: Callable[[Path], PrivateContainerd]) -> Path:
    base = make(parent / "wsw-evil").base
    base.chmod(0o777)  # anyone could have planted its files
    return base


def _not_ours(parent: Path, outside: Path, make: Callable[[Path], PrivateContainerd]) -> Path:
    base = make(parent / "wsw-evil").base
    os.chown(base, NOBODY, NOBODY)  # a local user's dir, whatever is inside
    return base


def _no_marker(parent: Path, outside: Path, make: Callable[[Path], PrivateContainerd]) -> Path:
    base = parent / "wsw-evil"
    base.mkdir(mode=0o700)  # right owner and mode, but nothing says the rig made it
    (base / OWNER_FILE).write_text(dead_owner())
    return base


def _copied_marker(parent: Path, outside: Path, make: Callable[[Path], PrivateContainerd]) -> Path:
    base = parent / "wsw-evil"
    base.mkdir(mode=0o700)
    shutil.copy(make(outside / "wsw-real").base / MARKER_FILE, base / MARKER_FILE)
    (base / OWNER_FILE).write_text(dead_owner())
    return base


def _symlink(parent: Path, outside: Path, make: Callable[[Path], PrivateContainerd]) -> Path:
    target = make(outside / "wsw-target").base  # a genuine stale rig dir, elsewhere
    base = parent / "wsw-evil"
    base.symlink_to(target)
    return target  # where the planted files go


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (_wrong_mode, "mode 0777"),
        (_not_ours, f"owned by uid {NOBODY}"),
        (_no_marker, "no rig marker"),
        (_copied_marker, "marker was not written for this directory"),
        (_symlink, "a symlink"),
    ],
    ids=["wrong-mode", "not-owned", "no-marker", "copied-marker", "symlink"],
)
def test_reclaim_leaves_a_dir_it_did_not_make_alone(
    kind: Callable[[Path, Path, Callable[[Path], PrivateContainerd]], Path],
    reason: str,
    parent: Path,
    outside: Path,
    rig_dirs: Callable[[Path], PrivateContainerd],
    victim: subprocess.Popen[bytes],
    decoy_cgroup: str,
    decoys: list[Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    planted = kind(parent, outside, rig_dirs)
    plant(planted, pid=victim.pid, cgroup=decoy_cgroup, decoys=decoys)
    (planted / CGROUPS_FILE).write_text(decoy_cgroup + "\n")  # the attacker's "tracked" one
    caplog.set_level(logging.WARNING, logger="watcher.testing")

    assert reclaim_stale(parent) == []

    assert_untouched(victim, decoy_cgroup, decoys)
    assert (planted / "runc").is_dir(), "the dir itself is left as it is"
    assert any(reason in r.getMessage() and "wsw-evil" in r.getMessage() for r in caplog.records)


def test_reclaim_in_tmp_leaves_a_users_wsw_dir_alone(
    victim: subprocess.Popen[bytes], decoy_cgroup: str, decoys: list[Path]
) -> None:
    # the real /tmp, as the fixture calls it: a local user's /tmp/wsw-evil-*, open to all
    base = Path(f"/tmp/wsw-evil-{uuid.uuid4().hex[:8]}")
    base.mkdir()
    try:
        plant(base, pid=victim.pid, cgroup=decoy_cgroup, decoys=decoys)
        (base / CGROUPS_FILE).write_text(decoy_cgroup + "\n")
        (base / OWNER_FILE).write_text(dead_owner())
        for path in (base, *base.rglob("*")):
            os.chown(path, NOBODY, NOBODY)
        base.chmod(0o777)

        assert base not in reclaim_stale()

        assert_untouched(victim, decoy_cgroup, decoys)
        assert base.is_dir()
    finally:
        shutil.rmtree(base)


def test_reclaim_refuses_a_parent_others_may_rename_in(
    parent: Path, rig_dirs: Callable[[Path], PrivateContainerd]
) -> None:
    # without the sticky bit anyone could swap a checked rig dir for their own meanwhile
    base = rig_dirs(parent / "wsw-real").base
    parent.chmod(0o777)
    assert reclaim_stale(parent) == []
    assert base.is_dir()


# -- inside a rig dir: only what the files name within bounds ---------------------------------


def test_reclaim_of_a_rig_dir_refuses_what_its_files_name(
    parent: Path,
    outside: Path,
    rig_dirs: Callable[[Path], PrivateContainerd],
    victim: subprocess.Popen[bytes],
    decoy_cgroup: str,
    decoys: list[Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a genuine stale rig dir whose files lie (defence in depth: nobody else can write them)
    base = rig_dirs(parent / "wsw-real").base
    plant(base, pid=victim.pid, cgroup=decoy_cgroup, decoys=decoys)
    (base / "escape").symlink_to(outside)  # rmtree must not follow it
    caplog.set_level(logging.WARNING, logger="watcher.testing")

    assert reclaim_stale(parent) == [base]

    assert not os.path.lexists(base), "the rig dir itself is reclaimed"
    assert_untouched(victim, decoy_cgroup, decoys)
    assert any(decoy_cgroup in r.getMessage() for r in caplog.records)


def test_a_shim_look_alike_of_another_user_is_spared(
    parent: Path, rig_dirs: Callable[[Path], PrivateContainerd]
) -> None:
    # argv is anyone's to choose: only a process running as us is tied by its command line
    rig = rig_dirs(parent / "wsw-real")

    def fake_shim(user: int) -> subprocess.Popen[bytes]:
        argv = ["containerd-shim-runc-v2", "-c", "sleep 600; exit", "sh", "-address", rig.address]
        return subprocess.Popen(
            argv, executable="/bin/sh", user=user, group=user, extra_groups=[], cwd="/",
            start_new_session=True,
        )  # fmt: skip

    theirs, ours = fake_shim(NOBODY), fake_shim(os.geteuid())
    try:
        host.wait_until(
            "both look-alikes to run their sleep",
            lambda: all(host.descendants([p.pid]) for p in (theirs, ours)), PATIENCE,
        )  # fmt: skip
        assert host.shims_of(rig.address) == [ours.pid]
        ours_children = host.descendants([ours.pid])

        assert reclaim_stale(parent) == [rig.base]

        assert theirs.poll() is None
        assert ours.wait(PATIENCE) == -9
        assert not any(host.alive(p) for p in ours_children), "what it ran went with it"
    finally:
        for proc in (theirs, ours):
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    proc.wait()


# -- cgroups: only those the rig made ---------------------------------------------------------


def test_track_cgroup_refuses_a_path_that_leaves_the_hierarchy(
    parent: Path, rig_dirs: Callable[[Path], PrivateContainerd]
) -> None:
    rig = rig_dirs(parent / "wsw-real")
    for bad in ("/../../etc", "/a/../../b", "relative", "/", "", "/a//b", "/a/./b"):
        with pytest.raises(RigError):
            rig.track_cgroup(bad)
        assert host.clean_cgroup(bad) is None
    assert not (rig.base / CGROUPS_FILE).exists()


def test_cleanup_removes_only_the_cgroup_parents_the_rig_made(
    parent: Path, rig_dirs: Callable[[Path], PrivateContainerd]
) -> None:
    # a kubelet's /kubepods/besteffort must survive a rig whose pods used it; dummy paths only
    tag = uuid.uuid4().hex[:8]
    existing, fresh = f"/wsw-pre-{tag}", f"/wsw-new-{tag}"
    roots = host.cgroup_roots()
    for root in roots:
        (root / existing.lstrip("/")).mkdir()
    try:
        rig = rig_dirs(parent / "wsw-real")
        rig.track_cgroup(f"{existing}/pod-a")
        rig.track_cgroup(f"{fresh}/qos/pod-b")
        for root in roots:  # as runc makes them
            for made in (f"{existing}/pod-a/ctr", f"{fresh}/qos/pod-b/ctr"):
                (root / made.lstrip("/")).mkdir(parents=True)

        rig.cleanup()

        assert host.cgroup_exists(existing), "a parent that was there before stays"
        for gone in (f"{existing}/pod-a", fresh):
            assert not host.cgroup_exists(gone)
    finally:
        for root in roots:
            for path in (f"{fresh}/qos/pod-b/ctr", f"{fresh}/qos/pod-b", f"{fresh}/qos", fresh,
                         f"{existing}/pod-a/ctr", f"{existing}/pod-a", existing):  # fmt: skip
                _rmdir(root / path.lstrip("/"))


# -- a genuine stale rig: still reclaimed completely -----------------------------------------


def test_a_genuine_stale_rig_is_reclaimed_completely(parent: Path) -> None:
    script = (
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "from watcher.testing import PrivateContainerd, Pods, host\n"
        "ctrd = PrivateContainerd(Path(sys.argv[1]) / 'wsw-orphan'); ctrd.__enter__()\n"
        "pods = Pods(ctrd)\n"
        "pod = pods.run_pod('ws-orphan')\n"
        "bare = pods.run_pod('ws-orphan-bare', cgroup_parent=False)\n"
        "tasks = [r.split() for r in ctrd.ctr('tasks', 'ls').splitlines()[1:] if r.strip()]\n"
        "tasks_dir = ctrd.base / 'state' / 'io.containerd.runtime.v2.task' / 'k8s.io'\n"
        "def shim_address(task):  # 1.x: an address file; 2.x: bootstrap.json instead\n"
        "    if (task / 'address').exists():\n"
        "        return (task / 'address').read_text()\n"
        "    return json.loads((task / 'bootstrap.json').read_text())['address']\n"
        "sockets = [shim_address(p).removeprefix('unix://') for p in tasks_dir.iterdir()]\n"
        "ctrd.kill9()  # containerd dies first: its shims and containers live on\n"
        "print(json.dumps({'base': str(ctrd.base), 'uid': pod.uid, 'shims':\n"
        "    host.shims_of(ctrd.address), 'tasks': [int(t[1]) for t in tasks],\n"
        "    'cgroups': [f'/k8s.io/{c}' for c in (bare.sandbox_id, *bare.containers.values())],\n"
        "    'sockets': sorted(set(sockets))}), flush=True)\n"
        "os.kill(os.getpid(), 9)  # then its owner: no finally, no atexit\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(parent)], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == -9, done.stderr
    left = json.loads(done.stdout)
    base = Path(left["base"])
    cgroups = [f"/kubepods/besteffort/pod{left['uid']}", *left["cgroups"]]
    assert left["shims"] and all(host.alive(p) for p in left["shims"] + left["tasks"])
    assert len(left["tasks"]) == 4 and len(left["sockets"]) == 2
    assert all(os.path.exists(s) for s in left["sockets"])
    assert host.mounts_under(base) and all(host.cgroup_exists(c) for c in cgroups)

    assert reclaim_stale(parent) == [base]

    assert not any(host.alive(p) for p in left["shims"] + left["tasks"])
    assert not any(os.path.lexists(s) for s in left["sockets"])
    assert not host.mounts_under(base) and not os.path.lexists(base)
    assert not any(host.cgroup_exists(c) for c in cgroups)
