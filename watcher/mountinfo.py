"""The node's mount table: where each task's root file system is mounted, and its upper layer.

Pure functions on strings; the caller reads the file. Paths here are in the mount namespace
of whoever wrote the table (usually the host's): `watcher.pathmap` turns them into paths this
process can open. An entry of the table is a `MountEntry`; a task's rootfs found in it is a
`MountedRootfs` (the OCI spec's and containerd's own mounts are in `containerd_records`).
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MountEntry",
    "MountedRootfs",
    "mountinfo_path",
    "parse_mountinfo",
    "task_rootfs",
    "upperdir_from_options",
]

logger = logging.getLogger(__name__)

# containerd's runtime v2 plugin mounts each task's root at
# <state dir>/io.containerd.runtime.v2.task/<namespace>/<container id>/rootfs.
_TASK_DIR = "io.containerd.runtime.v2.task"
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
# Fields before the optional ones, and after the "-" separator (fs type, source, options).
_LEADING_FIELDS = 6
_TRAILING_FIELDS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class MountEntry:
    """One line of `/proc/<pid>/mountinfo` (see proc(5)), with escapes decoded.

    `root`, `mount_point`, `source`, `fs_type` and every option are decoded from the
    kernel's `\\ooo` octal escapes. Bytes that are not UTF-8 come back as lone surrogates,
    as `os.fsdecode` gives them, provided the text was read with
    `errors="surrogateescape"`.
    """

    mount_id: int
    parent_id: int
    major_minor: str
    root: str
    mount_point: str
    mount_options: tuple[str, ...]
    optional_fields: tuple[str, ...]
    fs_type: str
    source: str
    super_options: tuple[str, ...]


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse the whole of a `/proc/<pid>/mountinfo`, in the kernel's (mount) order.

    Malformed lines are skipped and logged as warnings on this module's logger, not
    raised: one odd line must not hide the container mounts on the others, and the
    caller cannot repair the kernel's output anyway. Blank lines are skipped silently.
    """
    mounts: list[MountEntry] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        mount = _parse_line(line)
        if mount is None:
            logger.warning("skipping malformed mountinfo line %d: %r", number, line)
        else:
            mounts.append(mount)
    return mounts


def _parse_line(line: str) -> MountEntry | None:
    # Split on single spaces: an empty source shows as two adjacent spaces.
    fields = line.split(" ")
    try:
        separator = fields.index("-", _LEADING_FIELDS)
    except ValueError:
        return None
    if len(fields) - separator - 1 != _TRAILING_FIELDS:
        return None
    mount_id, parent_id, major_minor, root, mount_point, options = fields[:_LEADING_FIELDS]
    fs_type, source, super_options = fields[separator + 1 :]
    if not (mount_id.isdigit() and parent_id.isdigit() and _is_major_minor(major_minor)):
        return None
    if not root or not mount_point:
        return None
    return MountEntry(
        mount_id=int(mount_id),
        parent_id=int(parent_id),
        major_minor=major_minor,
        root=_unescape(root),
        mount_point=_unescape(mount_point),
        mount_options=_split_options(options),
        optional_fields=tuple(fields[_LEADING_FIELDS:separator]),
        fs_type=_unescape(fs_type),
        source=_unescape(source),
        super_options=_split_options(super_options),
    )


def _is_major_minor(value: str) -> bool:
    major, sep, minor = value.partition(":")
    return bool(sep) and major.isdigit() and minor.isdigit()


def _split_options(field: str) -> tuple[str, ...]:
    # The kernel escapes "," inside an option value, so split before decoding.
    return tuple(_unescape(option) for option in field.split(",")) if field else ()


def _unescape(value: str) -> str:
    # almost no field has an escape: skip the regex for those (a node's table is long)
    return _OCTAL_ESCAPE.sub(_decode_octal, value) if "\\" in value else value


def _decode_octal(match: re.Match[str]) -> str:
    code = int(match.group(1), 8)
    # A byte above 0x7f is half of a file name's encoding: keep it the way
    # surrogateescape does, so os.fsencode gives back the original bytes.
    return chr(code) if code < 0x80 else chr(0xDC00 + code)


@dataclass(frozen=True, slots=True)
class MountedRootfs:
    """A task's rootfs as the mount table shows it: where, and (overlay) its upper layer."""

    mount_point: str
    upperdir: str | None


def task_rootfs(
    entries: Iterable[MountEntry], *, namespace: str = "k8s.io"
) -> dict[str, MountedRootfs]:
    """Every task rootfs of `namespace` by container id, in one pass over the table.

    The overlay's super options carry its `upperdir=`, so the mount table alone resolves
    both facts of a running workspace without one Snapshots.Mounts call per container (a
    start-up with thousands of workspaces would otherwise make thousands of round trips).
    Of several mounts for one id, the shallowest wins (a nested containerd's state lies
    deeper), and of equally deep ones the last (a remount).
    """
    found: dict[str, MountedRootfs] = {}
    for mount in entries:
        point = mount.mount_point
        if not point.endswith("/rootfs"):
            continue
        parts = point.rsplit("/", 4)
        if len(parts) == 5 and parts[1] == _TASK_DIR and parts[2] == namespace and parts[3]:
            known = found.get(parts[3])
            if known is not None and len(known.mount_point) < len(point):
                continue  # a nested containerd's look-alike lies deeper than the node's
            # a whole overlay (root "/") is the task's own; a bind of a directory that lies on
            # an overlay (a native snapshot on a node whose root is overlay) shows that
            # overlay's super options too, and its upperdir is not the task's
            own_overlay = mount.fs_type == "overlay" and mount.root == "/"
            upperdir = upperdir_from_options(mount.super_options) if own_overlay else None
            found[parts[3]] = MountedRootfs(point, upperdir)
    return found


def mountinfo_path(proc_root: str = "/proc") -> str:
    """Return the mount table to read for the host's mounts.

    With our own `/proc` it is our own table (`self`). With the host's `/proc` mounted
    elsewhere (a pod with `hostPath: /proc`), `self` there would still be us, in our own
    mount namespace; PID 1 of the host's PID namespace shows the host's mount table.
    """
    root = "/" + posixpath.normpath(proc_root).lstrip("/")
    if root == "/proc":
        return "/proc/self/mountinfo"
    return posixpath.join(root, "1", "mountinfo")


def upperdir_from_options(options: Iterable[str]) -> str | None:
    """Return the `upperdir=` of a mount's options (the overlay's writable layer), or None.

    Scans the options of any mount, whatever its type: selecting mounts by comparing the
    mount type (`overlay`) with the snapshotter name (`overlayfs`) never matches, a defect
    of Gitpod's watcher. With several `upperdir=` options the last wins, as in overlayfs.

    Raises:
        TypeError: `options` is one string; iterating it would scan characters and
            silently find nothing. Split a comma-separated string first.
    """
    if isinstance(options, str):
        raise TypeError("options must be a list of options, not one string")
    found = None
    for option in options:
        key, sep, value = option.partition("=")
        if sep and key == "upperdir" and value:
            found = value
    return found
