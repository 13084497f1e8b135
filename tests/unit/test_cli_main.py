"""`main`: outcomes to exit statuses; a user's mistake is one line on stderr, no traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from watcher.cli import EXIT_USAGE, _only, logs, main
from watcher.errors import ConnectError


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", [["ls"], ["watch"], ["wait", "i"], ["wait-stop", "i"]])
def test_missing_socket(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--address", str(tmp_path / "none.sock")]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert one_line(captured.err).startswith("ws-watcher: no containerd socket at ")


def test_a_directory_is_not_a_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "--address", f"unix://{tmp_path}"]) == EXIT_USAGE
    assert "is a directory" in one_line(capsys.readouterr().err)


@pytest.fixture
def grpc_but_not_containerd(tmp_path: Path) -> Iterator[str]:
    """A gRPC server without containerd's services: every call is UNIMPLEMENTED."""
    path = tmp_path / "grpc.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_insecure_port(f"unix:{path}")
    server.start()
    try:
        yield str(path)
    finally:
        server.stop(None)


def test_not_containerd(grpc_but_not_containerd: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "--address", grpc_but_not_containerd]) == EXIT_USAGE
    assert "is not containerd" in one_line(capsys.readouterr().err)


def test_demo_needs_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["demo"]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "needs root" in one_line(captured.err)


def test_only_unwraps_single_exception_groups() -> None:
    err = ConnectError("x")
    assert _only(err) is err
    assert _only(ExceptionGroup("a", [ExceptionGroup("b", [err])])) is err
    two = ExceptionGroup("a", [err, ValueError()])
    assert _only(two) is two


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(_: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("watcher.cli.run", broken)
    with pytest.raises(ZeroDivisionError):
        main(["ls"])


# --- logs, Ctrl-C (issue 15) -------------------------------------------------------------------


@pytest.fixture
def test_logger() -> Iterator[logging.Logger]:
    """A logger of its own: pytest holds the root logger (`main` leaves a configured one be)."""
    log = logging.getLogger("watcher.test")
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield log
    finally:
        log.handlers.clear()
        log.propagate = True
        log.setLevel(logging.NOTSET)


def test_json_logs_are_one_object_per_line(
    test_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    test_logger.addHandler(logs.stderr_handler("json"))
    test_logger.debug("not at info")
    test_logger.warning("hello %s\nand more", "world")
    try:
        raise ZeroDivisionError("a bug")
    except ZeroDivisionError:
        test_logger.exception("it broke")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert list(first) == ["ts", "level", "logger", "message"]
    assert isinstance(first["ts"], float)
    assert (first["level"], first["logger"], first["message"]) == (
        "warning", "watcher.test", "hello world\nand more"
    )  # fmt: skip
    assert second["level"] == "error" and "ZeroDivisionError: a bug" in second["exception"]


def test_text_logs_for_people(
    test_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    test_logger.addHandler(logs.stderr_handler("text"))
    test_logger.warning("hello")
    assert capsys.readouterr().err.rstrip().endswith("WARNING watcher.test: hello")


@pytest.mark.parametrize(
    ("command", "status"),
    [(["ls"], 130), (["wait", "i"], 130), (["inspect", "i"], 130), (["watch"], 0)],
)
def test_a_ctrl_c_before_the_command_s_own_handler(
    command: list[str],
    status: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def interrupted(_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("watcher.cli.run", interrupted)
    assert main(command) == status
    err = capsys.readouterr().err
    assert ("interrupted" in err) == (status == 130) and "Traceback" not in err


def test_a_ctrl_c_while_options_are_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(_: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr("watcher.cli.parse", interrupted)
    assert main(["ls"]) == 130
    assert one_line(capsys.readouterr().err) == "ws-watcher: interrupted"
