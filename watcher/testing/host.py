"""Host facts and blunt clean-up tools: packages, capabilities, processes, mounts, cgroups.

Everything here reads ``/proc`` and ``/sys`` directly, on purpose: the clean-up must work when
containerd is dead or wedged, and must never touch anything outside the rig's own base dir,
socket and pods. The rig runs as root and some of what it acts on is named in files: so a
process is signalled only while it is provably the one identified (uid, start time, a pidfd),
a cgroup path is clean (no ``..``) and no mount point, cgroup or socket is reached through a
symlink.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from .errors import RigError

PACKAGES: dict[str, str] = {"containerd": "containerd", "ctr": "containerd", "runc": "runc"}
"""Executable → Debian package that provides it (``/bin/busybox`` comes from busybox-static)."""
CAP_SYS_RESOURCE = 24


def require_root() -> None:
    """Raise a clear error unless we are root: containerd, runc and mounts all need it."""
    if os.geteuid() != 0:
        raise RigError("the containerd test rig needs root (it runs containerd, runc, mounts)")


def ensure_installed(binaries: Path | None = None) -> None:
    """apt-get install containerd, runc and busybox-static when any of them is missing.

    With ``binaries`` (a directory of another containerd version, see ``versions``) the
    containerd package is not needed: runc and busybox-static still are.
    """
    require_root()
    wanted = {exe: pkg for exe, pkg in PACKAGES.items() if binaries is None or pkg != "containerd"}
    missing = sorted({pkg for exe, pkg in wanted.items() if shutil.which(exe) is None})
    if not Path("/bin/busybox").is_file():
        missing.append("busybox-static")
    if not missing:
        return
    print(f"ws-watcher rig: apt-get installing {' '.join(missing)} ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
    ):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RigError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def has_capability(bit: int) -> bool:
    """Whether this process holds capability ``bit`` in its effective set."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def wait_until(
    what: str, predicate: Callable[[], bool], timeout: float, interval: float = 0.05
) -> None:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds passed (then raise)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RigError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- processes ---------------------------------------------------------------------------


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid``, or ``[]`` when it is gone (or a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pids() -> Iterator[int]:
    """All process ids currently in ``/proc``."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def parent_pid(pid: int) -> int | None:
    """Field 4 of ``/proc/PID/stat``, or None when ``pid`` is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def descendants(roots: Iterable[int]) -> set[int]:
    """Every process below ``roots`` in the process tree (one snapshot of ``/proc``)."""
    children: dict[int, list[int]] = {}
    for pid in pids():
        ppid = parent_pid(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def runs_as_us(pid: int) -> bool:
    """Whether ``pid``'s real and effective uid are our effective uid.

    Anyone can give a process any argv: a command line ties a process to the rig only when
    the process also runs as the rig (a setuid binary exec'd by a user has another real uid).
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("Uid:"):
            real, effective = (int(u) for u in line.split()[1:3])
            return real == effective == os.geteuid()
    return False


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def owner_alive(record: str) -> bool:
    """Whether the process ``"<pid> <start time>"`` (see ``owner_record``) still runs."""
    pid, _, started = record.partition(" ")
    return alive(int(pid)) and str(start_time(int(pid))) == started


def owner_record() -> str:
    """``"<pid> <start time>"`` of this process: an identity that survives pid reuse."""
    return f"{os.getpid()} {start_time(os.getpid())}"


def shims_of(address: str) -> list[int]:
    """The containerd shims (run as us) started for the containerd listening on ``address``."""
    found = []
    for pid in pids():
        argv = cmdline(pid)
        if argv and "containerd-shim" in Path(argv[0]).name and runs_as_us(pid):
            with contextlib.suppress(ValueError, IndexError):
                if argv[argv.index("-address") + 1] == address:
                    found.append(pid)
    return found


def kill(pid_list: Iterable[int], sig: int = signal.SIGKILL) -> None:
    """Signal each pid, ignoring those already gone."""
    for pid in pid_list:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def identify(pid_list: Iterable[int]) -> dict[int, int]:
    """pid -> start time of each pid still there: what ``kill_identified`` signals."""
    found = {pid: start_time(pid) for pid in pid_list}
    return {pid: started for pid, started in found.items() if started is not None}


def kill_identified(processes: Mapping[int, int], sig: int = signal.SIGKILL) -> None:
    """Signal each process of ``identify()`` only if it still is that process.

    Between identifying a process and signalling it, it may exit and its pid go to another:
    a pidfd pins the process, the start time read after opening it tells it is the same one.
    """
    for pid, started in processes.items():
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        except OSError:  # no pidfds here (ENOSYS): checked just before, as close as it gets
            with contextlib.suppress(ProcessLookupError):
                if start_time(pid) == started:
                    os.kill(pid, sig)
            continue
        try:
            if start_time(pid) == started:
                signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)


# -- mounts ------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mounts_under(base: Path) -> list[str]:
    """Mount points at or below ``base`` per ``/proc/self/mountinfo``, deepest first."""
    prefix = str(base).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == str(base) or point.startswith(prefix):
            points.append(point)
    # later (stacked) mounts and deeper paths first
    ordered = list(reversed(points))
    return sorted(ordered, key=lambda p: p.count("/"), reverse=True)


MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8
MS_BIND = 4096
MS_SHARED = 1 << 20
_libc = ctypes.CDLL(None, use_errno=True)


def bind_shared(path: Path) -> None:
    """Bind-mount ``path`` on itself and make that mount shared (a peer group of its own).

    What a node's ``/`` is under systemd: mounts made below it later propagate into the
    slave copies a pod's HostToContainer volume holds. The caller owns ``path``.
    """
    point = str(path).encode()
    for source, flags in ((point, MS_BIND), (None, MS_SHARED)):
        if _libc.mount(source, point, None, flags, None) != 0:
            err = ctypes.get_errno()
            raise RigError(f"mount {path} (flags {flags:#x}): {os.strerror(err)}")


def unmount_all(base: Path, attempts: int = 5) -> None:
    """Unmount everything under ``base`` (deepest first; lazy unmount as a fallback).

    umount(8) canonicalises its argument (follows symlinks): umount2 with ``UMOUNT_NOFOLLOW``
    on a point whose real path is the point itself, inside ``base``, cannot reach elsewhere.
    """
    for attempt in range(attempts):
        points = [p for p in mounts_under(base) if within(Path(p), base)]
        if not points:
            break
        for point in points:
            flags = UMOUNT_NOFOLLOW | (MNT_DETACH if attempt else 0)
            _libc.umount2(point.encode(), flags)  # failures: the next round, then the raise
    if left := mounts_under(base):
        raise RigError(f"could not unmount: {left}")


def within(path: Path, base: Path) -> bool:
    """Whether ``path`` is ``base`` or below it, with no symlink on the way (so no path that
    only looks inside, ``base/../etc`` or ``base/link/...``, passes). ``base`` must be real."""
    real = os.path.realpath(path)
    return real == os.path.normpath(path) and Path(real).is_relative_to(base)


# -- cgroups -----------------------------------------------------------------------------


def cgroup_roots() -> list[Path]:
    """Mount points of every cgroup (v1) and cgroup2 hierarchy of this host, deduplicated."""
    roots = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in {"cgroup", "cgroup2"} and left.split()[3] == "/":
            roots.append(Path(_unescape(left.split()[4])))
    return sorted(set(roots))


def clean_cgroup(relative: str) -> str | None:
    """``relative`` as an absolute cgroup path below the root, or None if it is not one.

    Paths come from files (runc's state, the rig's records): no ``..``, ``.``, empty part or
    NUL may take a path joined below a hierarchy's root elsewhere, and a root itself is never
    a cgroup of the rig.
    """
    parts = relative.strip("/").split("/")
    if not relative.startswith("/") or "\0" in relative or parts == [""]:
        return None
    if any(part in ("", ".", "..") for part in parts):
        return None
    return "/" + "/".join(parts)


def cgroup_under(path: str, parent: str) -> bool:
    """Whether clean cgroup path ``path`` is ``parent`` or below it."""
    return path == parent or path.startswith(parent + "/")


def _cgroup_dirs(relative: str) -> Iterator[tuple[Path, Path]]:
    # (root, directory of cgroup ``relative`` in it) per hierarchy: a path that is not clean
    # is refused; a directory reached through a symlink is skipped (it is not the cgroup)
    clean = clean_cgroup(relative)
    if clean is None:
        raise RigError(f"not a cgroup path: {relative!r}")
    for root in cgroup_roots():
        directory = root / clean.lstrip("/")
        if within(directory, root):
            yield root, directory


def cgroup_exists(relative: str) -> bool:
    """Whether cgroup ``relative`` exists in any hierarchy."""
    return any(directory.is_dir() for _, directory in _cgroup_dirs(relative))


def cgroup_procs(relative: str) -> set[int]:
    """Pids in cgroup ``relative`` (e.g. ``/kubepods/besteffort/pod<uid>``), any hierarchy."""
    found: set[int] = set()
    for _, directory in _cgroup_dirs(relative):
        for dirpath, _, _ in os.walk(directory):
            with contextlib.suppress(OSError):
                found |= {int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split()}
    return found


def remove_cgroup(relative: str, keep_parents_of: str = "/") -> None:
    """rmdir cgroup ``relative`` leaf-first in every hierarchy, then its empty parents.

    Parents are removed up to (not including) ``keep_parents_of``'s depth: only the
    ``/kubepods/...`` or ``/k8s.io`` levels the rig's pods caused to exist, and only when empty
    (rmdir of a cgroup with children or processes fails with EBUSY: nothing else is touched).
    ``keep_parents_of=relative`` removes no parent.
    """
    stop = len(Path(keep_parents_of).parts)
    for root, directory in _cgroup_dirs(relative):
        if directory.is_dir():
            for dirpath, _, _ in os.walk(directory, topdown=False):  # leaves first
                _rmdir(Path(dirpath))
        rel = Path("/") / directory.relative_to(root)
        while len(rel.parts) > stop:
            rel = rel.parent
            if len(rel.parts) <= stop or not _rmdir(root / str(rel).lstrip("/")):
                break


def remove_empty_cgroup(relative: str) -> None:
    """rmdir cgroup ``relative`` (only it) in every hierarchy where it is empty: a parent the
    rig made, which another rig's pods may still use (rmdir then fails: left alone)."""
    for _, directory in _cgroup_dirs(relative):
        _rmdir(directory)


def missing_ancestors(relative: str) -> list[str]:
    """The strict ancestors of cgroup ``relative`` that exist in no hierarchy yet: whoever
    creates ``relative`` creates them too."""
    clean = clean_cgroup(relative)
    if clean is None:
        raise RigError(f"not a cgroup path: {relative!r}")
    parts = clean.strip("/").split("/")
    ancestors = ["/" + "/".join(parts[:n]) for n in range(1, len(parts))]
    return [a for a in ancestors if not cgroup_exists(a)]


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True
