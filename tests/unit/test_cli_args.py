"""The command line: every mistake a user can make exits 2 with one error line."""

from __future__ import annotations

import pytest

from watcher.cli.args import Command, parse
from watcher.mounts import PathMap
from watcher.settings import WAIT_TIMEOUT as DEFAULT_TIMEOUT

NO_ENV: dict[str, str] = {}


def test_defaults() -> None:
    opts = parse(["watch"], NO_ENV)
    assert opts.command is Command.WATCH
    assert opts.address == "/run/containerd/containerd.sock"
    assert opts.namespace == "k8s.io"
    assert opts.proc == "/proc"
    assert opts.path_map == PathMap()
    assert opts.log_level == "warning"
    assert opts.initial is False


def test_environment_gives_the_defaults() -> None:
    env = {"CONTAINERD_ADDRESS": "/x/c.sock", "CONTAINERD_NAMESPACE": "other"}
    opts = parse(["ls"], env)
    assert (opts.address, opts.namespace) == ("/x/c.sock", "other")
    # the flags win over the environment
    opts = parse(["ls", "--address", "/y.sock", "--namespace", "ns"], env)
    assert (opts.address, opts.namespace) == ("/y.sock", "ns")


def test_empty_environment_values_are_unset() -> None:
    opts = parse(["ls"], {"CONTAINERD_ADDRESS": "", "CONTAINERD_NAMESPACE": ""})
    assert (opts.address, opts.namespace) == ("/run/containerd/containerd.sock", "k8s.io")


@pytest.mark.parametrize(
    "argv",
    [
        ["--address", "/a.sock", "--path-map", "/h=/l", "watch", "--initial"],
        ["watch", "--address", "/a.sock", "--initial", "--path-map", "/h=/l"],
    ],
)
def test_common_options_before_or_after_the_command(argv: list[str]) -> None:
    opts = parse(argv, NO_ENV)
    assert opts.address == "/a.sock"
    assert opts.initial
    assert opts.path_map.map("/h/x") == "/l/x"


def test_subcommand_option_does_not_reset_a_top_level_one() -> None:
    opts = parse(["--namespace", "ns", "--log-level", "DEBUG", "ls", "--json"], NO_ENV)
    assert (opts.namespace, opts.log_level, opts.json) == ("ns", "debug", True)


def test_wait_and_wait_stop() -> None:
    opts = parse(["wait", "inst-1"], NO_ENV)
    assert (opts.command, opts.instance_id, opts.timeout) == (
        Command.WAIT,
        "inst-1",
        DEFAULT_TIMEOUT,
    )
    opts = parse(["wait-stop", "inst-1", "--timeout", "2.5"], NO_ENV)
    assert (opts.command, opts.instance_id, opts.timeout) == (Command.WAIT_STOP, "inst-1", 2.5)


def test_inspect_and_relist_interval() -> None:
    opts = parse(["inspect", "c0ffee"], NO_ENV)
    assert (opts.command, opts.instance_id) == (Command.INSPECT, "c0ffee")
    assert parse(["watch"], NO_ENV).relist_interval == 300
    assert parse(["watch", "--relist-interval", "0"], NO_ENV).relist_interval == 0
    assert parse(["watch", "--relist-interval", "2.5"], NO_ENV).relist_interval == 2.5


def test_show_annotation_extends_the_allow_list() -> None:
    assert not parse(["ls"], NO_ENV).disclosure.allows("example.com/team")
    opts = parse(["ls", "--show-annotation", "example.com/*", "--show-annotation", "t"], NO_ENV)
    assert opts.disclosure.allows("example.com/team") and opts.disclosure.allows("t")
    assert opts.disclosure.allows("gitpod/id")  # the default list stays
    assert not opts.disclosure.allows("example.com/apiToken")


def test_repeated_path_maps() -> None:
    opts = parse(
        ["watch", "--path-map", "/run/containerd=/host/run", "--path-map", "/var=/host/var"],
        NO_ENV,
    )
    assert opts.path_map.map("/run/containerd/x") == "/host/run/x"
    assert opts.path_map.map("/var/lib") == "/host/var/lib"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required: COMMAND"),
        (["bogus"], "invalid choice"),
        (["wait"], "required: INSTANCE_ID"),
        (["wait", ""], "instance id must not be empty"),
        (["wait", "   "], "instance id must not be empty"),
        (["wait", "x" * 2000], "is not one"),
        (["wait", "i", "--timeout", "-1"], "positive"),
        (["wait", "i", "--timeout", "0"], "positive"),
        (["wait-stop", "i", "--timeout", "nan"], "positive"),
        (["wait-stop", "i", "--timeout", "inf"], "positive"),
        (["wait-stop", "i", "--timeout", "soon"], "not a number"),
        (["watch", "--path-map", "nothing"], "not HOST=LOCAL"),
        (["watch", "--path-map", "rel=/x"], "not absolute"),
        (["watch", "--path-map", "/a="], "empty side"),
        (["watch", "--path-map", "/a=/x", "--path-map", "/a=/y"], "more than once"),
        (["watch", "--address", ""], "must not be empty"),
        (["watch", "--namespace", ""], "must not be empty"),
        (["watch", "--proc", "/no/such/proc"], "not a directory"),
        (["watch", "--log-level", "loud"], "invalid choice"),
        (["ls", "--initial"], "unrecognized arguments"),
        (["inspect"], "required: ID"),
        (["inspect", ""], "must not be empty"),
        (["watch", "--relist-interval", "-1"], "0 (off) or positive"),
        (["watch", "--relist-interval", "often"], "not a number"),
        (["watch", "--show-annotation", "gitpod/ownerToken"], "looks like a credential"),
        (["ls", "--show-annotation", ""], "not an annotation key"),
        (["ls", "--show-annotation", "a*b"], "only at the end"),
    ],
)
def test_mistakes_exit_2_with_one_error_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(argv, NO_ENV)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
    assert len(errors) == 1, err
    assert message in errors[0]
    assert "Traceback" not in err
