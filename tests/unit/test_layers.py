"""The layers of the package, as rules on imports (what import-linter contracts would say).

* the core (records, labels, index, cgroups, mounts, procfs, corrections) does no I/O
  framework: no trio, no grpc, no protobuf;
* protobuf stops at `decode` (and the client and the test rig that speak the wire);
* grpc is imported by `client` only (and the test rig's servers and CRI client).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "watcher"
CORE = ("records", "labels", "index", "cgroups", "mounts", "procfs", "corrections", "errors")


def imported(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(), filename=str(module))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("name", CORE)
def test_the_core_imports_no_io_framework(name: str) -> None:
    assert imported(PACKAGE / f"{name}.py") & {"trio", "trio_util", "grpc", "google"} == set()


def test_grpc_only_in_the_client_and_the_rig() -> None:
    users = {str(m.relative_to(PACKAGE)) for m in modules() if "grpc" in imported(m)}
    assert {u for u in users if not u.startswith("testing/")} == {"client.py"}


def test_protobuf_stops_at_decode() -> None:
    users = {
        str(m.relative_to(PACKAGE))
        for m in modules()
        if imported(m) & {"google", "containerd_protos"}
    }
    assert {u for u in users if not u.startswith("testing/")} == {"client.py", "decode.py"}
