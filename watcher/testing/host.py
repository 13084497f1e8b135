"""Host facts and blunt clean-up tools: packages, capabilities, processes, mounts, cgroups.

Everything here reads ``/proc`` and ``/sys`` directly, on purpose: the clean-up must work when
containerd is dead or wedged, and must never touch anything outside the rig's own base dir,
socket and pods.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import RigError

PACKAGES: dict[str, str] = {"containerd": "containerd", "ctr": "containerd", "runc": "runc"}
"""Executable → Debian package that provides it (``/bin/busybox`` comes from busybox-static)."""
CAP_SYS_RESOURCE = 24


def require_root() -> None:
    """Raise a clear error unless we are root: containerd, runc and mounts all need it."""
    if os.geteuid() != 0:
        raise RigError("the containerd test rig needs root (it runs containerd, runc, mounts)")


def ensure_installed() -> None:
    """apt-get install containerd, runc and busybox-static when any of them is missing."""
    require_root()
    missing = sorted({pkg for exe, pkg in PACKAGES.items() if shutil.which(exe) is None})
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
    """The containerd shims started for the containerd listening on ``address``."""
    found = []
    for pid in pids():
        argv = cmdline(pid)
        if argv and "containerd-shim" in Path(argv[0]).name:
            with contextlib.suppress(ValueError, IndexError):
                if argv[argv.index("-address") + 1] == address:
                    found.append(pid)
    return found


def kill(pid_list: Iterable[int], sig: int = signal.SIGKILL) -> None:
    """Signal each pid, ignoring those already gone."""
    for pid in pid_list:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


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


def unmount_all(base: Path, attempts: int = 5) -> None:
    """Unmount everything under ``base`` (deepest first; lazy unmount as a fallback)."""
    for attempt in range(attempts):
        points = mounts_under(base)
        if not points:
            return
        for point in points:
            args = ["umount", point] if attempt == 0 else ["umount", "-l", point]
            subprocess.run(args, capture_output=True, check=False)
    if left := mounts_under(base):
        raise RigError(f"could not unmount: {left}")


# -- cgroups -----------------------------------------------------------------------------


def cgroup_roots() -> list[Path]:
    """Mount points of every cgroup (v1) and cgroup2 hierarchy of this host, deduplicated."""
    roots = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in {"cgroup", "cgroup2"} and left.split()[3] == "/":
            roots.append(Path(_unescape(left.split()[4])))
    return sorted(set(roots))


def cgroup_procs(relative: str) -> set[int]:
    """Pids in cgroup ``relative`` (e.g. ``/kubepods/besteffort/pod<uid>``), any hierarchy."""
    found: set[int] = set()
    for root in cgroup_roots():
        directory = root / relative.lstrip("/")
        for dirpath, _, _ in os.walk(directory):
            with contextlib.suppress(OSError):
                found |= {int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split()}
    return found


def remove_cgroup(relative: str, keep_parents_of: str = "/") -> None:
    """rmdir cgroup ``relative`` leaf-first in every hierarchy, then its empty parents.

    Parents are removed up to (not including) ``keep_parents_of``'s depth: only the
    ``/kubepods/...`` or ``/k8s.io`` levels the rig's pods caused to exist, and only when empty
    (rmdir of a cgroup with children or processes fails with EBUSY: nothing else is touched).
    """
    stop = len(Path(keep_parents_of).parts)
    for root in cgroup_roots():
        directory = root / relative.lstrip("/")
        if directory.is_dir():
            for dirpath, _, _ in os.walk(directory, topdown=False):  # leaves first
                _rmdir(Path(dirpath))
        rel = Path(relative)
        while len(rel.parts) > stop:
            rel = rel.parent
            if len(rel.parts) <= stop or not _rmdir(root / str(rel).lstrip("/")):
                break


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
