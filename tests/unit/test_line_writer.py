"""`watch`'s line writer (`watcher.cli.writer`): on the loop only when that cannot block.

A batch of at most PIPE_BUF bytes to a pipe with room goes out at once, without a worker
thread; anything else (a full pipe, a larger batch, a regular file) goes through the thread,
so a stuck reader never holds the loop (`tests/cli/test_stuck_stdout_containerd.py` shows
that on a real containerd).
"""

from __future__ import annotations

import fcntl
import os
import select
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest
import trio
import trio.testing

from watcher.cli.writer import LineWriter


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., Any]]:
    """The functions the writer handed to a worker thread."""
    handed: list[Callable[..., Any]] = []
    real = trio.to_thread.run_sync

    async def spy(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        handed.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", spy)
    return handed


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, TextIO]]:
    """A pipe for stdout: (its read end, its write end as a text stream). The test makes
    it `sys.stdout` (`as_stdout`): pytest's capture sets its own between set-up and call."""
    r, w = os.pipe()
    out = open(w, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        yield r, out
    finally:
        out.close()
        os.close(r)


def as_stdout(monkeypatch: pytest.MonkeyPatch, out: TextIO) -> None:
    monkeypatch.setattr(sys, "stdout", out)


def fill(fd: int) -> int:
    """Fill the pipe whose write end is `fd`; the bytes it took."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    taken = 0
    try:
        while True:
            taken += os.write(fd, b"x" * 4096)
    except BlockingIOError:
        return taken
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def drain(fd: int, n: int) -> bytes:
    got = b""
    while len(got) < n:
        got += os.read(fd, n - len(got))
    return got


async def test_a_pipe_with_room_is_written_at_once_without_a_thread(
    pipe: tuple[int, TextIO], threads: list[Callable[..., Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, out = pipe
    as_stdout(monkeypatch, out)
    await LineWriter().write(['{"event": "created"}', '{"event": "running"}'])
    expected = b'{"event": "created"}\n{"event": "running"}\n'
    assert drain(r, len(expected)) == expected
    assert threads == []


async def test_a_full_pipe_is_left_to_the_thread_and_the_loop_goes_on(
    pipe: tuple[int, TextIO], threads: list[Callable[..., Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, out = pipe
    as_stdout(monkeypatch, out)
    taken = fill(out.fileno())
    done = trio.Event()

    async def write() -> None:
        await LineWriter().write(["late"])
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()  # the loop is free: the thread waits
        assert threads and not done.is_set()
        drain(r, taken)  # the reader catches up: the thread's write goes through
        with trio.fail_after(10):
            await done.wait()
    assert drain(r, 5) == b"late\n"


async def test_more_than_pipe_buf_goes_through_the_thread(
    pipe: tuple[int, TextIO], threads: list[Callable[..., Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, out = pipe
    as_stdout(monkeypatch, out)
    line = "y" * select.PIPE_BUF  # with its newline, one byte more than an atomic write
    await LineWriter().write([line])  # the pipe holds it: the thread's write returns
    assert drain(r, len(line) + 1) == line.encode() + b"\n"
    assert len(threads) == 1


async def test_a_regular_file_goes_through_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: list[Callable[..., Any]]
) -> None:
    path = tmp_path / "out"
    with open(path, "w", encoding="utf-8") as out:
        monkeypatch.setattr(sys, "stdout", out)
        await LineWriter().write(["one"])
    assert path.read_text() == "one\n"
    assert len(threads) == 1
