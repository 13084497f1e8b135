"""The command line: every mistake a user can make exits 2 with one error line."""

from __future__ import annotations

import importlib.metadata

import pytest

from watcher.cli.args import Command, parse
from watcher.cli.output import Format
from watcher.pathmap import PathMap
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
    # an instance or a container id: its own field, not `instance_id`
    assert (opts.command, opts.target, opts.instance_id) == (Command.INSPECT, "c0ffee", "")
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
        # -o: each command its own formats
        (["ls", "-o", "text"], "invalid choice"),
        (["ls", "-o", "table"], "invalid choice"),
        (["watch", "-o", "yaml"], "invalid choice"),
        (["wait-stop", "i", "-o", "json"], "unrecognized arguments"),
        (["inspect", "i", "--output", "xml"], "invalid choice"),
        # durations
        (["wait", "i", "--timeout", "5x"], "not a number of seconds or a duration"),
        (["wait", "i", "--timeout", "2 m"], "not a number of seconds or a duration"),
        (["wait", "i", "--timeout", "1h-5m"], "not a number of seconds or a duration"),
        (["wait", "i", "--timeout", "m"], "not a number of seconds or a duration"),
        (["wait", "i", "--timeout=-5s"], "positive"),  # argparse: "-5s" alone is an option
        (["wait", "i", "--timeout", "0ms"], "positive"),
        (["watch", "--relist-interval=-1m"], "0 (off) or positive"),
        (["watch", "--relist-interval", "1d"], "not a number of seconds or a duration"),
        # options a command does not use are not offered to it
        (["demo", "--address", "/a.sock"], "unrecognized arguments"),
        (["demo", "-n", "ns"], "unrecognized arguments"),
        (["completion", "bash", "--address", "/a.sock"], "unrecognized arguments"),
        (["completion"], "required: SHELL"),
        (["completion", "tcsh"], "invalid choice"),
        (["ls", "--log-format", "xml"], "invalid choice"),
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


# --- the habits of the ecosystem (issue 15) --------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-a", "/a.sock", "-n", "ns", "ls"],
        ["ls", "-a", "/a.sock", "-n", "ns"],
        ["--address", "/x.sock", "ls", "-a", "/a.sock", "--namespace", "ns"],
    ],
)
def test_short_address_and_namespace_as_ctr_has_them(argv: list[str]) -> None:
    opts = parse(argv, NO_ENV)
    assert (opts.address, opts.namespace) == ("/a.sock", "ns")


@pytest.mark.parametrize(
    ("argv", "output"),
    [
        (["ls"], Format.TABLE),  # the default stays the table
        (["ls", "--json"], Format.JSON),
        (["ls", "-o", "json"], Format.JSON),
        (["ls", "-o", "yaml"], Format.YAML),
        (["ls", "--output", "wide"], Format.WIDE),
        (["ls", "-o", "name"], Format.NAME),
        (["ls", "-o", "yaml", "--json"], Format.JSON),  # the last one given wins
        (["wait", "i"], Format.JSON),  # the default stays a JSON line
        (["wait", "i", "-o", "yaml"], Format.YAML),
        (["wait", "i", "-o", "wide"], Format.WIDE),
        (["wait", "i", "-o", "name"], Format.NAME),
        (["inspect", "i"], Format.JSON),
        (["inspect", "i", "-o", "yaml"], Format.YAML),
        (["inspect", "i", "-o", "name"], Format.NAME),
        (["watch"], Format.JSON),
        (["watch", "-o", "text"], Format.TEXT),
        (["watch", "-o", "json"], Format.JSON),
    ],
)
def test_output_formats(argv: list[str], output: Format) -> None:
    opts = parse(argv, NO_ENV)
    assert opts.output is output
    assert opts.json == (output is Format.JSON)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60", 60.0),
        ("2.5", 2.5),
        ("60s", 60.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1m30s250ms", 90.25),
        ("1.5h", 5400.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse(["wait", "i", "--timeout", text], NO_ENV).timeout == seconds
    assert parse(["wait-stop", "i", "--timeout", text], NO_ENV).timeout == seconds
    assert parse(["watch", "--relist-interval", text], NO_ENV).relist_interval == seconds


def test_a_relist_interval_of_zero_in_any_unit_is_off() -> None:
    for text in ("0", "0s", "0ms", "0h0m", "-0s"):
        value = parse(["watch", f"--relist-interval={text}"], NO_ENV).relist_interval
        assert value == 0 and str(value) == "0.0", text


def test_a_long_bad_duration_is_named_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["wait", "i", "--timeout", "9" * 10_000 + "x"], NO_ENV)
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert len(error) < 200 and "10001 characters" in error


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["--version"], NO_ENV)
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"ws-watcher {importlib.metadata.version('ws-watcher')}\n"


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        parse([*argv, "--help"], NO_ENV)
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_demo_help_lists_only_what_the_demo_uses(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(["demo"], capsys)
    assert "--log-level" in text and "--log-format" in text
    for option in ("--address", "--namespace", "--proc", "--path-map", "--schemes",
                   "--show-annotation", "-o", "--timeout"):  # fmt: skip
        assert f" {option} " not in text and f" {option}," not in text, option
    # the commands that talk to containerd keep every common option
    for command in (["watch"], ["wait", "i"], ["wait-stop", "i"], ["ls"], ["inspect", "i"]):
        text = help_of(command, capsys)
        assert all(o in text for o in ("-a PATH, --address", "-n NS, --namespace", "--proc"))


def test_demo_takes_the_logging_options() -> None:
    opts = parse(["demo", "--log-level", "info", "--log-format", "json"], NO_ENV)
    assert (opts.command, opts.log_level, opts.log_format) == (Command.DEMO, "info", "json")


def test_log_format() -> None:
    assert parse(["ls"], NO_ENV).log_format == "text"
    assert parse(["--log-format", "json", "ls"], NO_ENV).log_format == "json"
    assert parse(["watch", "--log-format", "JSON"], NO_ENV).log_format == "json"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion(shell: str) -> None:
    opts = parse(["completion", shell], NO_ENV)
    assert (opts.command, opts.shell) == (Command.COMPLETION, shell)
