"""`ws-watcher completion bash|zsh|fish`: scripts the shells accept, made from the parser, that
offer the subcommands, each one's options and the values of options with choices."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from watcher.cli import main
from watcher.cli.args import Command, build_parser
from watcher.cli.completion import SHELLS, scope_of, script

COMMANDS = [c.value for c in Command]


def parser() -> argparse.ArgumentParser:
    return build_parser({})


def test_the_scope_is_the_parser() -> None:
    top = scope_of(parser())
    assert [c.name for c in top.commands] == COMMANDS
    flags = {f for o in top.options for f in o.flags}
    assert {"--version", "-a", "--address", "-n", "--namespace", "--log-format"} <= flags
    ls = next(c for c in top.commands if c.name == "ls")
    output = next(o for o in ls.options if "-o" in o.flags)
    assert output.choices == ("json", "yaml", "wide", "name") and output.takes_value
    address = next(o for o in ls.options if "--address" in o.flags)
    assert address.files and address.takes_value
    demo = next(c for c in top.commands if c.name == "demo")
    assert {f for o in demo.options for f in o.flags} == {
        "-h", "--help", "--log-level", "--log-format"
    }  # fmt: skip


def test_main_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    out = capsys.readouterr().out
    assert out == script(parser(), "bash")
    assert "complete -F _ws_watcher ws-watcher" in out


def test_bash_script_is_valid_and_lists_the_subcommands(tmp_path: Path) -> None:
    path = tmp_path / "ws-watcher.bash"
    path.write_text(script(parser(), "bash"))
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    for command in COMMANDS:
        assert f"        {command})" in path.read_text()


#: a word list per command line, as bash's completion would offer them
BASH_CASES = {
    "ws-watcher ''": " ".join(COMMANDS),
    "ws-watcher wa": "watch wait wait-stop",
    "ws-watcher --log-level d": "debug",
    "ws-watcher -a /x ls -o ''": "json yaml wide name",
    "ws-watcher watch -o ''": "json text",
    "ws-watcher --namespace ns inspect --out": "--output",
    "ws-watcher completion ''": "bash zsh fish",
    "ws-watcher demo --": "--help --log-level --log-format",
    "ws-watcher --vers": "--version",
    "ws-watcher wait i --timeout ''": "",  # a value nobody can guess: nothing
}


def test_bash_completes_what_the_parser_takes(tmp_path: Path) -> None:
    path = tmp_path / "ws-watcher.bash"
    path.write_text(script(parser(), "bash"))
    lines = [f"source {path}", "t() { COMP_WORDS=(\"$@\"); COMP_CWORD=$(( $# - 1 )); "
             "COMPREPLY=(); _ws_watcher; echo \"${COMPREPLY[*]}\"; }"]  # fmt: skip
    lines += [f"t {words}" for words in BASH_CASES]
    done = subprocess.run(
        ["bash", "-c", "\n".join(lines)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == list(BASH_CASES.values())


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_are_valid(shell: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (apt-get install {shell})")
    path = tmp_path / f"ws-watcher.{shell}"
    path.write_text(script(parser(), shell))
    done = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_fish_completes_the_subcommands_and_choices(tmp_path: Path) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed (apt-get install fish)")
    path = tmp_path / "ws-watcher.fish"
    path.write_text(script(parser(), "fish"))
    probe = f"source {path}; complete -C'ws-watcher '; echo ==; complete -C'ws-watcher ls -o '"
    done = subprocess.run(["fish", "-c", probe], capture_output=True, text=True, timeout=30)
    commands, choices = done.stdout.split("==\n")
    assert {line.split("\t")[0] for line in commands.splitlines()} >= set(COMMANDS)
    assert {line.split("\t")[0] for line in choices.splitlines()} == {
        "json", "yaml", "wide", "name"
    }  # fmt: skip


def test_every_shell_and_no_other() -> None:
    for shell in SHELLS:
        assert script(parser(), shell).endswith("\n")
    with pytest.raises(ValueError, match="tcsh"):
        script(parser(), "tcsh")
