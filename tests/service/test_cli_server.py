"""The CLI's `wait`, `wait-stop`, `ls`, `inspect` and `watch` with `--server` (or
$WS_WATCHER_SERVER): the same output and exit statuses as when they ask containerd.

Outputs are compared parsed (a label map's order is containerd's, which differs from one
listing to the next) and without what differs by nature: the moment each watcher learned a
change (`ts`), and the `ls` table's AGE.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from serve_process import ServeProcess

from watcher.testing import Pods, PrivateContainerd, mk1_labels, mk2_labels

DEADLINE = 20.0


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=env,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def parsed(output: str, form: str) -> Any:
    if form == "json":
        return [json.loads(line) for line in output.splitlines()]
    if form == "yaml":
        return list(yaml.safe_load_all(output))
    if form == "table":  # all but the AGE column (a cell is one word: `output._cell`)
        rows = [line.split() for line in output.splitlines()]
        age = rows[0].index("AGE")
        return [row[:age] + row[age + 1 :] for row in rows]
    return output


@pytest.fixture(scope="module")
def served(containerd: PrivateContainerd) -> Iterator[str]:
    """Two workspace pods and a `serve` for the whole module (no test here changes them)."""
    with (
        tempfile.TemporaryDirectory(prefix="wsw-s", dir="/tmp") as directory,
        Pods(containerd) as pods,
    ):
        pods.run_pod("ws-cli-a", labels=mk2_labels("cli-a", "ws-a", "o"))
        pods.run_pod("ws-cli-b", labels=mk1_labels("cli-b", "ws-b", "o"))
        path = os.path.join(directory, "api.sock")
        argv = [sys.executable, "-m", "watcher", "serve", "--address", containerd.address]
        server = ServeProcess([*argv, "--socket", path])
        try:
            server.serving()
            yield path
        finally:
            server.kill()


@pytest.mark.parametrize(
    ("args", "form"),
    [
        (("ls", "--json"), "json"),
        (("ls", "-o", "yaml"), "yaml"),
        (("ls", "-o", "name"), "text"),
        (("ls",), "table"),
        (("ls", "-o", "wide"), "table"),
        (("inspect", "cli-a"), "json"),
        (("inspect", "cli-b", "-o", "yaml"), "yaml"),
        (("inspect", "nope"), "text"),
        (("wait", "cli-a"), "json"),
        (("wait", "cli-b", "-o", "name"), "text"),
        (("wait", "nope", "--timeout", "300ms"), "text"),
        (("wait-stop", "nope"), "text"),
        (("wait-stop", "cli-a", "--timeout", "0.3s"), "text"),
    ],
)
def test_with_a_server_the_commands_print_what_they_print_without(
    containerd: PrivateContainerd, served: str, args: tuple[str, ...], form: str
) -> None:
    own = cli(*args, "--address", containerd.address)
    asked = cli(*args, "--server", served)
    assert asked[0] == own[0], asked
    assert parsed(asked[1], form) == parsed(own[1], form)
    assert asked[2] == own[2]


def test_inspect_by_container_id_and_the_environment_variable(
    containerd: PrivateContainerd, served: str
) -> None:
    status, out, _ = cli("inspect", "cli-a", "--address", containerd.address)
    cid = json.loads(out)["container_id"]
    env = {**os.environ, "WS_WATCHER_SERVER": served}
    env.pop("CONTAINERD_ADDRESS", None)
    status, by_env, err = cli("inspect", cid, env=env)
    assert status == 0, err
    assert json.loads(by_env) == json.loads(out)


def test_watch_with_a_server_prints_the_same_lines(
    containerd: PrivateContainerd, served: str
) -> None:
    def first_lines(*args: str) -> list[dict[str, Any]]:
        process = subprocess.Popen(
            [sys.executable, "-m", "watcher", "watch", "--initial", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        lines = []
        try:
            for text in process.stdout:  # the next line arrives within the deadline below
                lines.append(json.loads(text))
                if lines[-1]["event"] == "synced":
                    break
            process.send_signal(signal.SIGINT)
            assert process.wait(DEADLINE) == 0  # Ctrl-C is how a watch ends
        finally:
            process.kill()
        for line in lines:
            line.pop("ts")
        return lines

    assert first_lines("--server", served) == first_lines("--address", containerd.address)


def test_no_server_at_that_address_is_a_usage_error(sockdir: str) -> None:
    missing = os.path.join(sockdir, "nothing.sock")
    status, out, err = cli("ls", "--server", missing)
    assert (status, out) == (2, "")
    assert err.startswith(f"ws-watcher: no ws-watcher service at {missing}")
    assert len(err.splitlines()) == 1
