from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.errors import UsageError
from watcher.pathmap import PathMap, PathMapError

# --- PathMap ---------------------------------------------------------------------------------


def test_path_map_longest_prefix_on_component_boundaries() -> None:
    pm = PathMap.parse(
        ["/var/lib/containerd=/host/containerd", "/var/lib/containerd/io.x=/host/x", "/run=/r/"]
    )
    assert pm.map("/var/lib/containerd") == "/host/containerd"
    assert pm.map("/var/lib/containerd/snap/1") == "/host/containerd/snap/1"
    assert pm.map("/var/lib/containerd/io.x/y") == "/host/x/y"
    assert pm.map("/var/lib/containerd/io.xy") == "/host/containerd/io.xy"
    assert pm.map("/var/lib/containerd2/x") == "/var/lib/containerd2/x"
    assert pm.map("/run/containerd") == "/r/containerd"
    assert pm.map("/runner") == "/runner"
    assert pm.map("relative/path") == "relative/path"


def test_path_map_unmap() -> None:
    pm = PathMap.parse(["/var/lib/containerd=/host/containerd", "/run/containerd=/host/run"])
    assert pm.unmap("/host/containerd/a") == "/var/lib/containerd/a"
    assert pm.unmap("/host/run") == "/run/containerd"
    assert pm.unmap("/host/runner") == "/host/runner"
    assert pm.unmap("/elsewhere") == "/elsewhere"


def test_path_map_root_prefixes() -> None:
    pm = PathMap.parse(["/=/host"])
    assert pm.map("/") == "/host"
    assert pm.map("/var/lib") == "/host/var/lib"
    assert pm.unmap("/host/var/lib") == "/var/lib"
    assert pm.unmap("/hostile") == "/hostile"
    back = PathMap.parse(["/host=/"])
    assert back.map("/host/etc") == "/etc"
    assert back.unmap("/etc") == "/host/etc"


def test_empty_path_map_is_identity() -> None:
    assert PathMap.parse([]).map("/a") == "/a"
    assert PathMap().unmap("/a") == "/a"


def test_path_map_normalises_and_splits_at_first_equals() -> None:
    pm = PathMap.parse(["/a//b/=/c/./d", "/e=/f=g"])
    assert pm.pairs == (("/a/b", "/c/d"), ("/e", "/f=g"))


@pytest.mark.parametrize(
    "spec",
    [
        ["/var/lib/containerd"],
        [""],
        ["=/x"],
        ["/x="],
        ["var/lib=/x"],
        ["/x=host/x"],
        ["/a=/b", "/a/=/c"],  # host prefix twice
        ["/a=/b", "/c=/b"],  # local prefix twice
    ],
)
def test_path_map_rejects(spec: list[str]) -> None:
    with pytest.raises(PathMapError):
        PathMap.parse(spec)


def test_path_map_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="HOST=LOCAL"):
        PathMap.parse(["/nothing"])
    assert issubclass(PathMapError, UsageError)


_segment = st.text(st.characters(codec="ascii", exclude_characters="/=\x00"), min_size=1).filter(
    lambda s: s not in {".", ".."}
)
_abs = st.lists(_segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


@given(host=_abs, local=_abs, rest=st.lists(_segment, max_size=3))
def test_map_unmap_round_trip(host: str, local: str, rest: list[str]) -> None:
    pm = PathMap.parse([f"{host}={local}"])
    path = "/".join([host, *rest])
    assert pm.unmap(pm.map(path)) == path
