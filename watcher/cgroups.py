"""Where a container's cgroup is: from its OCI spec, and from `/proc/<pid>/cgroup`.

Pure functions on strings; no file system access, so the caller decides which `/proc` to read
(the host's, mounted into a pod, or its own).

The spec's `linux.cgroupsPath` means what runc makes of it, and runc decides by its
`--systemd-cgroup` flag, which we cannot see. We tell the two forms apart by shape instead:
a value that starts with `/` is a cgroupfs path, and any other value with a `:` is a systemd
`slice:prefix:name` triple (runc rejects a `/` in a slice name, so no triple starts with one).
Known ambiguity: a *relative* cgroupfs path containing `:` is read as a triple; neither
containerd nor the kubelet produce one.
"""

from __future__ import annotations

import posixpath

from watcher.errors import CgroupPathError

__all__ = [
    "CgroupPathError",
    "cgroup_matches",
    "cgroup_path_from_spec",
    "expand_slice",
    "parse_proc_cgroup",
    "proc_cgroup_path",
]

# runc's parent slice when a systemd triple leaves the slice empty (runc as root; rootless
# runc would use user.slice, which a kubelet-managed node does not run).
_DEFAULT_SLICE = "system.slice"
_SLICE_SUFFIX = ".slice"
# The v1 hierarchies runc always joins, best first, for a cgroup v1 `/proc/<pid>/cgroup`.
_V1_PREFERENCE = ("name=systemd", "memory", "pids")


def cgroup_path_from_spec(cgroups_path: str) -> str:
    """Return the cgroup, relative to the cgroup root, that runc puts a container into.

    Args:
        cgroups_path: the OCI spec's `linux.cgroupsPath`, in cgroupfs form
            (`/kubepods/besteffort/pod<uid>/<cid>`) or systemd form
            (`kubepods-besteffort-pod<uid_>.slice:cri-containerd:<cid>`).

    Returns:
        An absolute, lexically clean path such as `/kubepods/besteffort/pod<uid>/<cid>` or
        `/kubepods.slice/kubepods-besteffort.slice/.../cri-containerd-<cid>.scope`; join it to
        the cgroup mount point (v2) or to each controller's mount point (v1).

    Raises:
        CgroupPathError: the value is empty, is not a `slice:prefix:name` triple although it
            looks like one, or names an invalid slice or unit.

    A relative cgroupfs path gets a leading `/`. runc itself would resolve it below its own
    cgroup, which is unknowable from the spec; containerd and the kubelet always send
    absolute paths, so this only keeps odd input from raising.
    """
    if not cgroups_path:
        raise CgroupPathError("empty linux.cgroupsPath: no cgroup can be derived")
    if cgroups_path.startswith("/") or ":" not in cgroups_path:
        return _clean_absolute(cgroups_path)
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        raise CgroupPathError(
            f'expected linux.cgroupsPath "slice:prefix:name" (systemd) or an absolute path '
            f"(cgroupfs), got {cgroups_path!r}"
        )
    slice_name, prefix, name = parts
    slice_path = expand_slice(slice_name or _DEFAULT_SLICE)
    return posixpath.join(slice_path, _unit_name(prefix, name, cgroups_path))


def expand_slice(slice_name: str) -> str:
    """Return the cgroup path of a systemd slice, as runc's `ExpandSlice` does.

    systemd nests slices by their `-` separated name prefixes: `a-b-c.slice` lives at
    `/a.slice/a-b.slice/a-b-c.slice`, and `-.slice` is the root.

    Raises:
        CgroupPathError: the name does not end in `.slice` (or is only `.slice`), contains
            `/`, or has an empty component (`a--b.slice`, `-a.slice`, `a-.slice`).
    """
    stem = slice_name.removesuffix(_SLICE_SUFFIX)
    if stem == slice_name or not stem or "/" in slice_name:
        raise CgroupPathError(f"invalid systemd slice name: {slice_name!r}")
    if stem == "-":
        return "/"
    components = stem.split("-")
    if "" in components:
        raise CgroupPathError(f"invalid systemd slice name: {slice_name!r}")
    return "".join(
        "/" + "-".join(components[: i + 1]) + _SLICE_SUFFIX for i in range(len(components))
    )


def _unit_name(prefix: str, name: str, whole: str) -> str:
    # runc's getUnitName: a scope unless the name asks for a slice; an empty prefix still
    # gets its "-", exactly as runc does (it yields "-<name>.scope").
    if not name or "/" in name or "/" in prefix:
        raise CgroupPathError(f"invalid systemd unit name in linux.cgroupsPath {whole!r}")
    if name.endswith(_SLICE_SUFFIX):
        return name
    return f"{prefix}-{name}.scope"


def _clean_absolute(path: str) -> str:
    # Lexical cleaning as runc's CleanPath: ".." cannot climb above the root.
    cleaned = posixpath.normpath("/" + path)
    # normpath keeps a leading "//" (POSIX leaves its meaning open); cgroupfs does not.
    return "/" + cleaned.lstrip("/")


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Parse `/proc/<pid>/cgroup` into {controller: path}.

    cgroup v1 lines `N:cpu,cpuacct:/path` give one entry per controller (`cpu`, `cpuacct`,
    `name=systemd`); the v2 line `0::/path` gives the key `""`. A hybrid host has both.
    Lines that do not have the `N:controllers:path` shape are skipped: the kernel writes
    this file, so anything else is a truncated read, and a partial answer beats none.
    """
    result: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3 or not fields[0].isdigit() or not fields[2].startswith("/"):
            continue
        _, controllers, path = fields
        if not controllers:
            result[""] = path
            continue
        for controller in controllers.split(","):
            if controller:
                result[controller] = path
    return result


def proc_cgroup_path(text: str) -> str | None:
    """Pick the one path of `/proc/<pid>/cgroup` that identifies the process's cgroup.

    The unified (`0::`) path wins, except on a hybrid host where it is `/` while v1
    hierarchies place the process deeper: there the cgroupfs driver of older runc versions
    never joined the unified hierarchy, so `/` says nothing. Otherwise `name=systemd`, then
    `memory`, then `pids`: hierarchies runc joins with either driver. None when none is
    present.
    """
    entries = parse_proc_cgroup(text)
    v1 = [entries[key] for key in _V1_PREFERENCE if key in entries]
    unified = entries.get("")
    if unified is not None and (unified != "/" or not v1):
        return unified
    deeper = [path for path in v1 if path != "/"]
    if deeper:
        return deeper[0]
    return v1[0] if v1 else unified


def cgroup_matches(spec_path: str, proc_path: str) -> bool:
    """Tell whether a spec-derived cgroup and a `/proc/<pid>/cgroup` path agree.

    They agree when equal, or when `proc_path` is relative to a cgroup namespace: the kernel
    shows paths relative to the *reader's* cgroup namespace root, climbing out of it with
    leading `/..` components, so a watcher in a pod with its own cgroup namespace sees
    `/../../besteffort/pod<uid>/<cid>` for `/kubepods/besteffort/pod<uid>/<cid>`. Such a path
    matches when, without the `..` components, it is a suffix of `spec_path` on component
    boundaries. `/` matches only `/`: as a suffix it would agree with everything.

    A process in a *child* of the container's cgroup does not match; the task's init
    process, which is what gets checked, is placed by runc in the container cgroup itself.
    """
    spec = _components(spec_path)
    proc = _components(proc_path)
    while proc and proc[0] == "..":
        proc = proc[1:]
    if not proc:
        return not spec
    return spec[-len(proc) :] == proc


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]
