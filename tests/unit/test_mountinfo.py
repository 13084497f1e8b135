from __future__ import annotations

import dataclasses
import logging
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.mountinfo import (
    MountedRootfs,
    MountEntry,
    mountinfo_path,
    parse_mountinfo,
    task_rootfs,
    upperdir_from_options,
)

# The /proc/self/mountinfo of the machine these tests were written on (a sandbox with a
# hybrid cgroup layout), verbatim.
SANDBOX_MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334460k,nr_inodes=3083615,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
28 27 0:25 / /mnt/sandboxing/model_tools_env/v1/python ro,nosuid,nodev,relatime - tmpfs model_tools_unavailable ro,size=4k,mode=755
29 26 0:26 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""  # noqa: E501

CID = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970"
OTHER = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d"
SNAP = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"
TASKS = "/run/containerd/io.containerd.runtime.v2.task"

# A kubelet node running containerd, written by hand in the kernel's format: shared
# propagation peers, a slave mount, escaped names, overlay rootfs mounts of two tasks
# (one of them mounted twice), and a nested containerd's look-alike.
NODE_MOUNTINFO = f"""\
21 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw,discard
25 21 0:22 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=3256220k,mode=755
300 25 0:51 / /run/containerd/io.containerd.grpc.v1.cri/sandboxes/{OTHER}/shm rw shared:170 - tmpfs shm rw,size=65536k
310 25 0:52 / {TASKS}/k8s.io/{CID}/rootfs rw,relatime shared:171 - overlay overlay rw,lowerdir={SNAP}/12/fs:{SNAP}/11/fs,upperdir={SNAP}/40/fs,workdir={SNAP}/40/work
311 25 0:53 / {TASKS}/k8s.io/{OTHER}/rootfs rw,relatime shared:172 - overlay overlay rw,lowerdir={SNAP}/12/fs,upperdir={SNAP}/41/fs,workdir={SNAP}/41/work
312 25 0:54 / {TASKS}/moby/{CID}/rootfs rw,relatime shared:173 - overlay overlay rw,lowerdir={SNAP}/12/fs,upperdir={SNAP}/42/fs,workdir={SNAP}/42/work
313 21 0:55 / /var/lib/kubelet/pods/x/volumes/y/with\\040space\\011tab rw shared:174 master:2 propagate_from:3 - tmpfs my\\040source rw
314 25 0:56 / {TASKS}/k8s.io/{CID}/rootfs rw,relatime shared:175 - overlay overlay rw,lowerdir={SNAP}/12/fs,upperdir={SNAP}/43/fs,workdir={SNAP}/43/work
315 21 0:57 / /nested{TASKS}/k8s.io/{CID}/rootfs rw - overlay overlay rw,upperdir=/nested/up
"""  # noqa: E501


def test_sandbox_sample_parses_completely() -> None:
    mounts = parse_mountinfo(SANDBOX_MOUNTINFO)
    assert len(mounts) == 20
    root = mounts[5]
    assert root == MountEntry(
        mount_id=27,
        parent_id=1,
        major_minor="254:0",
        root="/",
        mount_point="/",
        mount_options=("rw", "relatime"),
        optional_fields=(),
        fs_type="ext4",
        source="/dev/vda",
        super_options=("rw", "discard", "resv_strict", "resuid=65534", "resgid=65534"),
    )
    assert mounts[-1].fs_type == "cgroup2"
    assert mounts[-2].super_options == ("rw", "name=systemd")


def test_live_mountinfo_parses_without_skipping(caplog: pytest.LogCaptureFixture) -> None:
    # a Linux-only project: /proc/self/mountinfo is always there
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    with caplog.at_level(logging.WARNING, logger="watcher.mountinfo"):
        mounts = parse_mountinfo(text)
    assert len(mounts) == len(text.splitlines())
    assert not caplog.records
    assert any(m.mount_point == "/" for m in mounts)


def test_optional_fields_and_escapes() -> None:
    mount = parse_mountinfo(NODE_MOUNTINFO)[6]
    assert mount.optional_fields == ("shared:174", "master:2", "propagate_from:3")
    assert mount.mount_point == "/var/lib/kubelet/pods/x/volumes/y/with space\ttab"
    assert mount.source == "my source"


@pytest.mark.parametrize(
    ("escaped", "decoded"),
    [
        ("/a\\040b", "/a b"),
        ("/a\\011b", "/a\tb"),
        ("/a\\012b", "/a\nb"),
        ("/a\\134b", "/a\\b"),
        ("/a\\134040", "/a\\040"),  # an escaped backslash does not start another escape
        ("/a\\04", "/a\\04"),  # too short to be an escape
        ("/a\\089", "/a\\089"),  # not octal
    ],
)
def test_octal_decoding_in_root_mount_point_and_source(escaped: str, decoded: str) -> None:
    [mount] = parse_mountinfo(f"1 0 0:1 {escaped} {escaped} rw - tmpfs {escaped} rw\n")
    assert (mount.root, mount.mount_point, mount.source) == (decoded, decoded, decoded)


def test_escaped_comma_stays_inside_an_option() -> None:
    [mount] = parse_mountinfo("1 0 0:1 / /m rw - overlay overlay rw,upperdir=/a\\054b/up\n")
    assert mount.super_options == ("rw", "upperdir=/a,b/up")
    assert upperdir_from_options(mount.super_options) == "/a,b/up"


def test_non_utf8_bytes_decode_like_surrogateescape() -> None:
    [mount] = parse_mountinfo("1 0 0:1 / /caf\\303\\251\\377 rw - tmpfs none rw\n")
    assert os.fsencode(mount.mount_point) == b"/caf\xc3\xa9\xff"


def test_empty_source_and_dash_paths() -> None:
    [mount] = parse_mountinfo("1 0 0:1 - - rw shared:1 - tmpfs  rw\n")
    assert (mount.root, mount.mount_point, mount.source) == ("-", "-", "")
    assert mount.optional_fields == ("shared:1",)


@pytest.mark.parametrize(
    "line",
    [
        "not a mountinfo line",
        "1 0 0:1 / /m rw tmpfs none rw",  # no separator
        "1 0 0:1 / /m rw - tmpfs none",  # missing super options
        "1 0 0:1 / /m rw - tmpfs none rw extra",
        "x 0 0:1 / /m rw - tmpfs none rw",
        "1 y 0:1 / /m rw - tmpfs none rw",
        "1 0 01 / /m rw - tmpfs none rw",
        "1 0 0:1 / rw - tmpfs none rw",  # a leading field missing
        "1 0 0:1  /m rw - tmpfs none rw",  # empty root
    ],
)
def test_malformed_lines_are_skipped_and_logged(
    line: str, caplog: pytest.LogCaptureFixture
) -> None:
    text = f"1 0 0:1 / /first rw - tmpfs none rw\n{line}\n2 1 0:2 / /last rw - tmpfs none rw\n"
    with caplog.at_level(logging.WARNING, logger="watcher.mountinfo"):
        mounts = parse_mountinfo(text)
    assert [m.mount_point for m in mounts] == ["/first", "/last"]
    [record] = caplog.records
    assert "line 2" in record.getMessage()


def test_blank_lines_are_not_malformed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="watcher.mountinfo"):
        assert parse_mountinfo("\n\n1 0 0:1 / /m rw - tmpfs none rw\n\n") != []
    assert not caplog.records


def test_mountinfo_is_frozen() -> None:
    [mount] = parse_mountinfo("1 0 0:1 / /m rw - tmpfs none rw\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        mount.mount_point = "/x"  # type: ignore[misc]
    assert not hasattr(mount, "__dict__")


# The kernel's mangle(): these four characters become octal escapes.
def _kernel_escape(value: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in value)


_path = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1
)


@given(root=_path, mount_point=_path, source=st.text(st.characters(exclude_categories=["Cs"])))
def test_escape_round_trip(root: str, mount_point: str, source: str) -> None:
    line = (
        f"7 1 0:9 {_kernel_escape(root)} {_kernel_escape(mount_point)} rw,relatime shared:3"
        f" - overlay {_kernel_escape(source)} rw\n"
    )
    [mount] = parse_mountinfo(line)
    assert (mount.root, mount.mount_point, mount.source) == (root, mount_point, source)


# --- small helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proc_root", "expected"),
    [
        ("/proc", "/proc/self/mountinfo"),
        ("/proc/", "/proc/self/mountinfo"),
        ("/host/proc", "/host/proc/1/mountinfo"),
        ("/host/proc/", "/host/proc/1/mountinfo"),
    ],
)
def test_mountinfo_path(proc_root: str, expected: str) -> None:
    assert mountinfo_path(proc_root) == expected


def test_mountinfo_path_default() -> None:
    assert mountinfo_path() == "/proc/self/mountinfo"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["index=off", f"workdir={SNAP}/40/work", f"upperdir={SNAP}/40/fs", "lowerdir=/l"],
         f"{SNAP}/40/fs"),
        (("rw", "upperdir=/first", "upperdir=/second"), "/second"),
        (["rbind", "ro"], None),  # a bind mount (native snapshotter): no writable overlay
        ([], None),
        (["upperdir="], None),
        (["xupperdir=/x", "upperdir"], None),
    ],
)  # fmt: skip
def test_upperdir_from_options(options: list[str], expected: str | None) -> None:
    assert upperdir_from_options(options) == expected


def test_upperdir_from_a_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        upperdir_from_options("rw,upperdir=/x")


def test_task_rootfs_gives_mount_points_and_upperdirs_in_one_pass() -> None:
    found = task_rootfs(parse_mountinfo(NODE_MOUNTINFO), namespace="k8s.io")
    # the last mount of CID wins; the nested containerd's look-alike path does not match
    assert found[CID] == MountedRootfs(f"{TASKS}/k8s.io/{CID}/rootfs", f"{SNAP}/43/fs")
    assert found[OTHER].upperdir == f"{SNAP}/41/fs"
    assert set(found) == {CID, OTHER}
    assert set(task_rootfs(parse_mountinfo(NODE_MOUNTINFO), namespace="moby")) == {CID}


def test_task_rootfs_of_a_non_overlay_mount_has_no_upperdir() -> None:
    line = f"9 1 0:9 / {TASKS}/k8s.io/{CID}/rootfs rw - tmpfs tmpfs rw,upperdir=/fake\n"
    assert task_rootfs(parse_mountinfo(line))[CID].upperdir is None


def test_task_rootfs_bound_from_a_directory_on_an_overlay_root_has_no_upperdir() -> None:
    """A native snapshot on a node whose own root is an overlay: the bind mount shows the
    root overlay's super options, whose upperdir is the node's, not the task's."""
    line = (
        f"9 1 0:50 /var/lib/containerd/native/snapshots/7 {TASKS}/k8s.io/{CID}/rootfs rw - "
        "overlay overlay rw,lowerdir=/l,upperdir=/node-root/upper,workdir=/node-root/work\n"
    )
    found = task_rootfs(parse_mountinfo(line))[CID]
    assert found.mount_point == f"{TASKS}/k8s.io/{CID}/rootfs" and found.upperdir is None
