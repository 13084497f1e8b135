"""Bad input from users (issue 8): each mistake gives exit 2 and one clear line on stderr from
the executable, or a typed exception from the library — never a traceback.

The permission cases run `ws-watcher` as `nobody` against root-owned sockets. The default
Python here lives under /root, which only root may enter, so those runs use a venv built from
the system's /usr/bin/python3 with the project installed into it (once per session, ~15 s).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from watcher.errors import ConnectError, NotFound, UsageError, WatcherError
from watcher.testing import PrivateContainerd
from watcher.testing.fake import FakeContainerd
from watcher.watcher import Settings, open_watcher

if TYPE_CHECKING:  # the fixtures' classes (tests/ is not a package)
    from conftest import WsWatcher

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
AS_NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
COMMANDS = [["ls"], ["watch"], ["wait", "x"], ["wait-stop", "x"], ["inspect", "x"]]


def one_line(err: str) -> str:
    """The only non-empty stderr line (and no traceback anywhere)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def one_error(err: str) -> str:
    """argparse's mistakes: its usage lines, then exactly one `error:` line."""
    assert "Traceback" not in err, err
    errors = [
        line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))
    ]
    assert len(errors) == 1 and "error:" in errors[0], err
    return errors[0]


# --- the socket path -------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_nothing_or_the_wrong_thing_at_the_socket_path(
    command: list[str], tmp_path: Path, ws_watcher: WsWatcher
) -> None:
    regular = tmp_path / "containerd.sock"
    regular.write_text("")
    cases = {
        str(tmp_path / "missing.sock"): "no containerd socket",
        f"unix://{tmp_path / 'missing.sock'}": "no containerd socket",
        str(tmp_path): "is a directory",
        str(regular): "not a socket",
    }
    for address, says in cases.items():
        code, out, err = ws_watcher.run(*command, address=address)
        assert (code, out) == (2, []), (address, err)
        line = one_line(err)
        assert line.startswith("ws-watcher: ") and says in line, line
        assert address.removeprefix("unix://") in line


def test_the_console_script_too(tmp_path: Path, ws_watcher: WsWatcher) -> None:
    script = shutil.which("ws-watcher")
    assert script is not None, "the project is not installed (pip install -e .)"
    running = ws_watcher.spawn(script, "ls", "--address", str(tmp_path / "missing.sock"))
    assert running.wait() == 2
    assert "no containerd socket" in one_line(running.stderr)


# --- permission denied, as an unprivileged user -------------------------------------------


@pytest.fixture(scope="session")
def system_venv() -> Iterator[Path]:
    """A venv from the system Python with the project installed, usable by `nobody`."""
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.fail(f"{SYSTEM_PYTHON} is missing (apt-get install python3 python3-venv)")
    base = Path(tempfile.mkdtemp(prefix="wsw-venv-", dir="/tmp"))
    base.chmod(0o755)
    venv = base / "venv"
    try:
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(venv / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", str(REPO)],
            check=True,
            timeout=600,
            capture_output=True,
        )
        yield venv
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def root_only_socket() -> Iterator[str]:
    """A listening unix socket in a directory anyone may enter, readable by root only."""
    base = tempfile.mkdtemp(prefix="wsw-perm-", dir="/tmp")
    os.chmod(base, 0o755)
    path = os.path.join(base, "containerd.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    os.chmod(path, 0o600)
    try:
        yield path
    finally:
        server.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("how", ["module", "script"])
def test_permission_denied_as_nobody(
    how: str,
    system_venv: Path,
    root_only_socket: str,
    containerd: PrivateContainerd,
    ws_watcher: WsWatcher,
) -> None:
    program = (
        [str(system_venv / "bin/python"), "-m", "watcher"]
        if how == "module"
        else [str(system_venv / "bin/ws-watcher")]
    )
    cases = {
        root_only_socket: "permission denied",  # the socket itself is root's
        containerd.address: "permission denied",  # the rig's directory is root's (0700)
    }
    for address, says in cases.items():
        for command in (["ls"], ["watch"], ["wait", "x"]):
            running = ws_watcher.spawn(
                *AS_NOBODY, *program, *command, "--address", address, cwd="/tmp"
            )
            code = running.wait()
            assert (code, running.rest()) == (2, []), running.stderr
            line = one_line(running.stderr)
            assert says in line and address in line, line


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["wait", ""],
        ["wait", "   "],
        ["wait", "x" * 5000],
        ["wait-stop", ""],
        ["wait-stop", "y" * 100_000],
        ["wait", "x", "--timeout", "-1"],
        ["wait", "x", "--timeout", "0"],
        ["wait", "x", "--timeout", "nan"],
        ["wait", "x", "--timeout", "soon"],
        ["wait-stop", "x", "--timeout", "-0.5"],
        ["ls", "--namespace", ""],
        ["ls", "--address", ""],
    ],
    ids=lambda a: " ".join(x if len(x) < 12 else f"<{len(x)} chars>" for x in a) or "empty",
)
def test_bad_values(args: list[str], ws_watcher: WsWatcher) -> None:
    code, out, err = ws_watcher.run(*args, address=None if "--address" in args else "")
    assert (code, out) == (2, []), err
    line = one_error(err)
    assert len(line) < 200, line  # the mistake named, not echoed at length


def test_unknown_namespace(ws_watcher: WsWatcher) -> None:
    code, out, err = ws_watcher.run("ls", "--namespace", "no-such-namespace")
    assert (code, out) == (2, []), err
    assert "no-such-namespace" in one_line(err)


# --- the library: typed exceptions ------------------------------------------------------------


async def test_library_addresses_are_connect_errors(tmp_path: Path) -> None:
    regular = tmp_path / "file.sock"
    regular.write_text("")
    for address, says in (
        (str(tmp_path / "missing.sock"), "no containerd socket"),
        (str(tmp_path), "is a directory"),
        (str(regular), "not a socket"),
    ):
        with trio.fail_after(20), pytest.raises(ConnectError, match=says):
            async with open_watcher(address):
                raise AssertionError("started")


@pytest.mark.parametrize(
    "settings",
    [
        {"namespace": ""},
        {"call_timeout": 0},
        {"call_timeout": -1},
        {"backoff_initial": 0},
        {"backoff_initial": 5, "backoff_max": 1},
        {"relist_interval": -1},
        {"relist_grace": -1},
        {"address": ""},
    ],
)
async def test_library_settings_are_usage_errors(settings: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        config = Settings(**settings)  # type: ignore[arg-type]
        async with open_watcher(settings=config):
            raise AssertionError("started")


async def test_library_ids_are_usage_errors_or_not_found(fake: FakeContainerd) -> None:
    async with open_watcher(settings=Settings(address=fake.address)) as w:
        for bad in ("", "x" * 5000):
            with pytest.raises(UsageError):
                await w.wait_for_container(bad)
            with pytest.raises(UsageError):
                await w.wait_for_container_stop(bad)
            with pytest.raises(UsageError):
                await w.container_exists(bad)
        for unknown in ("nope", "ünïcødé", "x" * 300):
            for query in (
                w.container,
                w.instance,
                w.container_pid,
                w.container_cgroup_path,
                w.container_upperdir,
            ):
                with pytest.raises(NotFound):
                    query(unknown)
        with pytest.raises(NotFound):
            await w.container_rootfs("nope")
        with pytest.raises(NotFound):
            await w.task_info("nope")
        assert not await w.container_exists("nope")
    assert issubclass(UsageError, WatcherError) and issubclass(NotFound, WatcherError)


async def test_library_unknown_namespace(fake: FakeContainerd) -> None:
    with pytest.raises(UsageError, match="no-such-namespace"):
        async with open_watcher(fake.address, "no-such-namespace"):
            pass
