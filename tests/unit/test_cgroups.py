from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.cgroups import (
    CgroupPathError,
    cgroup_matches,
    cgroup_path_from_spec,
    expand_slice,
    parse_proc_cgroup,
    proc_cgroup_path,
)
from watcher.errors import WatcherError

UID = "6f1c0e3a-2b8d-4c6e-9a51-0d7e2f4b8c19"
UID_ = UID.replace("-", "_")  # the kubelet's systemd driver escapes "-" in pod slices
CID = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970"


# --- cgroupfs driver -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (f"/kubepods/besteffort/pod{UID}/{CID}", f"/kubepods/besteffort/pod{UID}/{CID}"),
        (f"/kubepods/burstable/pod{UID}/{CID}", f"/kubepods/burstable/pod{UID}/{CID}"),
        (f"/kubepods/pod{UID}/{CID}", f"/kubepods/pod{UID}/{CID}"),  # guaranteed
        (f"/k8s.io/{CID}", f"/k8s.io/{CID}"),  # CRI without a cgroup parent
        (f"k8s.io/{CID}", f"/k8s.io/{CID}"),  # relative: rooted
        ("/", "/"),
        ("//kubepods//pod1/", "/kubepods/pod1"),
        ("/kubepods/./pod1/../pod2", "/kubepods/pod2"),
        ("/../../escape", "/escape"),  # ".." cannot leave the root, as in runc's CleanPath
        ("../escape", "/escape"),
        # absolute paths are cgroupfs even with a ":" in them
        ("/weird:name:here", "/weird:name:here"),
    ],
)
def test_cgroupfs_paths(spec: str, expected: str) -> None:
    assert cgroup_path_from_spec(spec) == expected


# --- systemd driver --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            f"kubepods-besteffort-pod{UID_}.slice:cri-containerd:{CID}",
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
            f"/cri-containerd-{CID}.scope",
        ),
        (
            f"kubepods-burstable-pod{UID_}.slice:cri-containerd:{CID}",
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
            f"/cri-containerd-{CID}.scope",
        ),
        (  # guaranteed pods sit right under kubepods.slice
            f"kubepods-pod{UID_}.slice:cri-containerd:{CID}",
            f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope",
        ),
        ("system.slice:docker:1234", "/system.slice/docker-1234.scope"),
        # empty slice: runc's default parent
        (f":cri-containerd:{CID}", f"/system.slice/cri-containerd-{CID}.scope"),
        # the root slice
        ("-.slice:runc:x", "/runc-x.scope"),
        # a name that asks for a slice is used as is, prefix or not
        ("kubepods.slice::kubepods-besteffort.slice", "/kubepods.slice/kubepods-besteffort.slice"),
        (
            "kubepods.slice:ignored:kubepods-burstable.slice",
            "/kubepods.slice/kubepods-burstable.slice",
        ),
        # empty prefix with a scope name: runc still joins with "-"
        ("system.slice::abc", "/system.slice/-abc.scope"),
        ("machine.slice:libpod:abc", "/machine.slice/libpod-abc.scope"),
    ],
)
def test_systemd_triples(spec: str, expected: str) -> None:
    assert cgroup_path_from_spec(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "kubepods.slice:cri-containerd",  # two parts
        "kubepods.slice:cri-containerd:a:b",  # four parts
        "kubepods:cri-containerd:abc",  # slice without .slice
        ".slice:p:n",  # only the suffix
        "kubepods--besteffort.slice:p:n",  # empty component
        "-kubepods.slice:p:n",
        "kubepods-.slice:p:n",
        "kube/pods.slice:p:n",
        "kubepods.slice:p:",  # empty name
        "kubepods.slice:p:a/b",  # "/" in the unit name
        "kubepods.slice:a/b:n",  # "/" in the prefix
    ],
)
def test_invalid_cgroups_paths(spec: str) -> None:
    with pytest.raises(CgroupPathError):
        cgroup_path_from_spec(spec)


def test_error_is_a_value_error_with_the_value_in_the_message() -> None:
    with pytest.raises(ValueError, match=r"kubepods--x\.slice"):
        cgroup_path_from_spec("kubepods--x.slice:cri-containerd:abc")
    assert issubclass(CgroupPathError, WatcherError)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("-.slice", "/"),
        ("system.slice", "/system.slice"),
        ("test-a-b.slice", "/test.slice/test-a.slice/test-a-b.slice"),
    ],
)
def test_expand_slice(name: str, expected: str) -> None:
    assert expand_slice(name) == expected


@pytest.mark.parametrize("name", ["", ".slice", "a", "a.scope", "a--b.slice", "a-.slice", "-"])
def test_expand_slice_rejects(name: str) -> None:
    with pytest.raises(CgroupPathError):
        expand_slice(name)


_component = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters="-/:\x00"), min_size=1, max_size=8
).filter(lambda c: c not in {".", ".."})


@given(st.lists(_component, min_size=1, max_size=5))
def test_expand_slice_nests_every_prefix(components: list[str]) -> None:
    name = "-".join(components) + ".slice"
    parts = expand_slice(name).split("/")[1:]
    assert len(parts) == len(components)
    assert parts[-1] == name
    # each level is its parent's name with one more component
    for depth, part in enumerate(parts, start=1):
        assert part == "-".join(components[:depth]) + ".slice"


# --- /proc/<pid>/cgroup ----------------------------------------------------------------------

# this machine's /proc/self/cgroup: a hybrid host, placed only in the v1 memory hierarchy
HYBRID_SANDBOX = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/a5a17fffc3dc4799db66b6aa35d866db
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""

V1_CONTAINER = f"""\
12:pids:/kubepods/besteffort/pod{UID}/{CID}
11:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{CID}
10:memory:/kubepods/besteffort/pod{UID}/{CID}
1:name=systemd:/kubepods/besteffort/pod{UID}/{CID}
"""

V2_CONTAINER = f"0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope\n"


def test_parse_v1_splits_controller_lists() -> None:
    parsed = parse_proc_cgroup(V1_CONTAINER)
    path = f"/kubepods/besteffort/pod{UID}/{CID}"
    assert parsed == {
        "pids": path,
        "cpu": path,
        "cpuacct": path,
        "memory": path,
        "name=systemd": path,
    }


def test_parse_v2_uses_empty_key() -> None:
    assert parse_proc_cgroup(V2_CONTAINER) == {"": V2_CONTAINER.strip()[3:]}


def test_parse_keeps_colons_in_paths_and_skips_junk() -> None:
    text = "garbage\n\nx:memory:/a\n3:memory\n4:pids:relative\n5:memory:/a:b\n0::/c\n"
    assert parse_proc_cgroup(text) == {"memory": "/a:b", "": "/c"}


def test_proc_path_v2() -> None:
    assert proc_cgroup_path(V2_CONTAINER) == V2_CONTAINER.strip()[3:]


def test_proc_path_v1_prefers_name_systemd() -> None:
    text = "4:memory:/mem\n8:pids:/pids\n1:name=systemd:/sd\n"
    assert proc_cgroup_path(text) == "/sd"
    assert proc_cgroup_path("4:memory:/mem\n8:pids:/pids\n") == "/mem"
    assert proc_cgroup_path("8:pids:/pids\n3:cpu:/cpu\n") == "/pids"


def test_proc_path_hybrid_with_root_unified_uses_v1() -> None:
    assert proc_cgroup_path(HYBRID_SANDBOX) == "/process_api/a5a17fffc3dc4799db66b6aa35d866db"


def test_proc_path_hybrid_with_placed_unified_uses_unified() -> None:
    assert proc_cgroup_path(V1_CONTAINER + "0::/unified/path\n") == "/unified/path"


def test_proc_path_root_everywhere() -> None:
    assert proc_cgroup_path("1:name=systemd:/\n0::/\n") == "/"
    assert proc_cgroup_path("0::/\n") == "/"


def test_proc_path_none() -> None:
    assert proc_cgroup_path("") is None
    assert proc_cgroup_path("3:cpu:/x\n") is None  # no hierarchy runc surely joins


# --- cross-check -----------------------------------------------------------------------------

SPEC = f"/kubepods/besteffort/pod{UID}/{CID}"


@pytest.mark.parametrize(
    ("spec", "proc", "expected"),
    [
        (SPEC, SPEC, True),
        (SPEC, SPEC + "/", True),
        (SPEC, f"/../../besteffort/pod{UID}/{CID}", True),  # watcher in its own cgroupns
        (SPEC, f"/pod{UID}/{CID}", True),  # cgroupns rooted at the QoS class
        (SPEC, f"/{CID}", True),
        (SPEC, f"/kubepods/besteffort/pod{UID}/other", False),
        (SPEC, f"/kubepods/burstable/pod{UID}/{CID}", False),
        (SPEC, f"/../../burstable/pod{UID}/{CID}", False),
        (SPEC, f"/x{CID}", False),  # suffix of a name, not of components
        (SPEC, SPEC + "/child", False),
        (SPEC, "/root" + SPEC, False),
        (SPEC, "/", False),
        (SPEC, "/..", False),
        ("/", "/", True),
        (
            cgroup_path_from_spec(f"kubepods-pod{UID_}.slice:cri-containerd:{CID}"),
            f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope",
            True,
        ),
    ],
)
def test_cgroup_matches(spec: str, proc: str, expected: bool) -> None:
    assert cgroup_matches(spec, proc) is expected


@given(st.lists(_component, min_size=1, max_size=6), st.integers(min_value=0, max_value=5))
def test_any_namespace_relative_view_matches(components: list[str], cut: int) -> None:
    spec = "/" + "/".join(components)
    cut = min(cut, len(components) - 1)
    proc = "/" + "/".join([".."] * cut + components[cut:])
    assert cgroup_matches(spec, proc)
