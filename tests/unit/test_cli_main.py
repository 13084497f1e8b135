"""`main`: outcomes to exit statuses; a user's mistake is one line on stderr, no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from watcher.cli import EXIT_USAGE, _only, main
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
