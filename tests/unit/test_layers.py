"""The layers of the package, as rules on imports (what import-linter contracts would say).

* every module of the package is in the core or in the shell;
* the core (the records, needs, labels, the index and its rooms, cgroups, the mount table,
  path maps, procfs, corrections, disclosure, settings, errors, durations, and the JSON
  contract `wire`) does no I/O framework: no trio, no grpc, no protobuf, no
  prometheus_client; and it imports nothing of the shell;
* the records sit at the bottom, by who makes and reads them: CRI's vocabulary and
  containerd's records import nothing of the package but errors; the index's inputs and what
  it publishes import containerd's records only;
* the index's rooms (facts, the pod join, publishing) serve the index only and know no
  `Index`; facts know neither the join nor publishing, publishing knows neither facts nor the
  join (the index composes them);
* resolution answers needs and knows nothing of the index; the loop ferries between them;
* protobuf stops at `decode` (and the client and the test rig that speak the wire; in the
  NRI plugin, at `nri/api` for NRI's messages and `nri/ttrpc` for ttrpc's envelope);
* the NRI plugin (`nri/`) is a package of its own: of the watcher it imports only the
  records, settings, errors and nursery helpers (the index is fed by whoever consumes it);
* grpc is imported by `client` only (and the test rig's servers and CRI client);
* prometheus_client is imported by `metrics` only (the shell counts through it);
* the shipped demo takes the rig from `watcher.testing.rig`, and importing it loads no pytest
  and nothing of the test suite's tooling (the fake containerd, the fixtures, `watching`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "watcher"
#: the rooms of the index, one concern each: what is known of a container, the CRI pod join,
#: what is published
INDEX_ROOMS = ("facts", "podjoin", "publishing")
#: the records, by who makes and who reads them
RECORDS = ("cri", "containerd_records", "inputs", "published")
CORE = (
    *RECORDS, "needs", "labels", "index", *INDEX_ROOMS, "cgroups", "mountinfo", "pathmap",
    "procfs", "corrections", "errors", "disclosure", "settings", "durations",
    # records ↔ JSON: pure, of the core's records and disclosure only; the CLI, the service
    # and the remote client (the shell) all speak it
    "wire",
)  # fmt: skip
SHELL = (
    "client", "decode", "resolve", "loop", "watcher", "changes", "cli", "testing", "_nursery",
    "metrics", "service", "remote", "nri", "nri_source",
)  # fmt: skip


def imported(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(), filename=str(module))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def internal(module: Path) -> set[str]:
    """The ws-watcher modules `module` imports (`from . import x`, `from .x import y`,
    `from watcher.x import y`), by their first name under the package."""
    tree = ast.parse(module.read_text(), filename=str(module))
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 0 and node.module and node.module.startswith("watcher."):
            names.add(node.module.split(".")[1])
        elif node.level == 1 and node.module:
            names.add(node.module.split(".")[0])
        elif node.level == 1:
            names.update(alias.name for alias in node.names)
    return names


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    names = {m.stem for m in PACKAGE.glob("*.py")} | {
        d.name for d in PACKAGE.iterdir() if (d / "__init__.py").exists()
    }
    assert names - {"__init__", "__main__"} - set(CORE) - set(SHELL) == set()


@pytest.mark.parametrize(
    ("name", "allowed"),
    [("cri", set()), ("containerd_records", set()), ("inputs", {"containerd_records"}),
     ("published", {"containerd_records"})],
)  # fmt: skip
def test_the_records_sit_at_the_bottom(name: str, allowed: set[str]) -> None:
    assert internal(PACKAGE / f"{name}.py") <= allowed


@pytest.mark.parametrize("name", CORE)
def test_the_core_imports_no_io_framework(name: str) -> None:
    frameworks = {"trio", "trio_util", "grpc", "google", "prometheus_client"}
    assert imported(PACKAGE / f"{name}.py") & frameworks == set()


def test_grpc_only_in_the_client_and_the_rig() -> None:
    users = {str(m.relative_to(PACKAGE)) for m in modules() if "grpc" in imported(m)}
    assert {u for u in users if not u.startswith("testing/")} == {"client.py"}


def test_prometheus_only_in_the_metrics() -> None:
    users = {str(m.relative_to(PACKAGE)) for m in modules() if "prometheus_client" in imported(m)}
    assert users == {"metrics.py"}


def test_protobuf_stops_at_decode() -> None:
    users = {
        str(m.relative_to(PACKAGE))
        for m in modules()
        if imported(m) & {"google", "containerd_protos"}
    }
    assert {u for u in users if not u.startswith("testing/")} == {
        "client.py", "decode.py", "nri/api.py", "nri/ttrpc.py",
    }  # fmt: skip


#: what of the watcher the NRI plugin may import
NRI_USES = {"containerd_records", "settings", "errors", "_nursery", "nri"}


def test_the_nri_plugin_stands_alone() -> None:
    for module in sorted((PACKAGE / "nri").glob("*.py")):
        tree = ast.parse(module.read_text(), filename=str(module))
        used = {
            node.module.split(".")[1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 0
            and (node.module or "").startswith("watcher.")
        }  # fmt: skip
        assert used <= NRI_USES, module.name


@pytest.mark.parametrize("name", CORE)
def test_the_core_imports_nothing_of_the_shell(name: str) -> None:
    assert internal(PACKAGE / f"{name}.py") & set(SHELL) == set()


def test_resolution_knows_no_index() -> None:
    assert "index" not in internal(PACKAGE / "resolve.py")


def test_only_the_loop_feeds_the_index() -> None:
    users = {m.stem for m in modules() if "index" in internal(m) and m.parent == PACKAGE}
    assert users == {"loop"}


def test_the_index_rooms_serve_the_index_only() -> None:
    for room in INDEX_ROOMS:
        users = {str(m.relative_to(PACKAGE)) for m in modules() if room in internal(m)}
        assert users <= {"index.py"} | {f"{r}.py" for r in INDEX_ROOMS}, room


@pytest.mark.parametrize(
    ("room", "unknown"),
    [
        ("facts", {"index", "podjoin", "publishing"}),
        ("podjoin", {"index", "publishing"}),
        ("publishing", {"index", "facts", "podjoin"}),
    ],
)
def test_each_index_room_keeps_to_its_concern(room: str, unknown: set[str]) -> None:
    assert internal(PACKAGE / f"{room}.py") & unknown == set()


#: what a shipped program must not load: pytest and the test suite's tooling
TEST_TOOLING = ("pytest", "_pytest", "watcher.testing.fake", "watcher.testing.fixtures",
                "watcher.testing.watching")  # fmt: skip


def test_the_demo_takes_the_rig_from_its_module_for_programs() -> None:
    tree = ast.parse((PACKAGE / "cli" / "demo.py").read_text())
    used = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("watcher.testing")
    }
    assert used == {"watcher.testing.rig"}


def test_pytest_only_in_the_fixtures() -> None:
    users = {str(m.relative_to(PACKAGE)) for m in modules() if "pytest" in imported(m)}
    assert users == {"testing/fixtures.py"}


def test_the_cli_loads_no_test_tooling() -> None:
    code = (
        "import sys, watcher.cli, watcher.cli.demo\n"
        f"print(sorted(m for m in sys.modules if m.startswith({TEST_TOOLING!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
