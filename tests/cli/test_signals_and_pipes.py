"""A stuck reader and the signals: `watch` keeps watching while nobody reads its stdout, and
every command ends promptly on SIGTERM/SIGINT (issue 13, point 4).

Against the fake containerd: it serves hundreds of pods at once and records every call, so
"the watcher still talks to containerd" is a count of its relists, not a guess.
"""

from __future__ import annotations

import fcntl
import math
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator

import pytest

from watcher.testing.fake import FakeContainerd, Rpc
from watcher.testing.labels import mk2_labels

#: generous bounds for a loaded CI machine; before the fix these never came (a write that
#: blocks on a full pipe held the loop for as long as nobody read)
DEADLINE = 20.0
STOP = 5.0
PIPE_FULL = 32 * 1024  # a pipe holds 64 KiB on Linux; a write that does not fit blocks


def tasks_lists(fake: FakeContainerd) -> int:
    return sum(c.method == Rpc.TASKS_LIST for c in fake.calls())


def until(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition of another process (a pipe's fill, the fake's call log) until true."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE}s: {what}"
        time.sleep(0.02)


def queued(fd: int) -> int:
    """Bytes waiting in a pipe, unread."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def ws_watcher(procs: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    procs.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], signum: int) -> tuple[int, float, str]:
    """Signal it; its exit status, how long it took, and its stderr."""
    sent = time.monotonic()
    proc.send_signal(signum)
    code = proc.wait(STOP)
    took = time.monotonic() - sent
    assert proc.stderr is not None
    return code, took, proc.stderr.read().decode()


def test_watch_with_an_unread_stdout_keeps_watching_and_stops_on_sigterm(
    fake: FakeContainerd, started: list[subprocess.Popen[bytes]]
) -> None:
    watch = ws_watcher(started, "watch", "--address", fake.address, "--relist-interval", "0.2")
    assert watch.stdout is not None
    until(lambda: tasks_lists(fake) >= 1, "the initial sync")
    for i in range(400):  # far more lines than a pipe holds
        fake.add_pod(f"ws-{i}", labels=mk2_labels(f"inst-{i}", f"ws-{i}", "owner"))
    until(lambda: queued(watch.stdout.fileno()) >= PIPE_FULL, "a full pipe")  # type: ignore[union-attr]
    # nobody reads: the watcher still relists (it talks to containerd) ...
    before = tasks_lists(fake)
    until(lambda: tasks_lists(fake) >= before + 3, "three relists with a full stdout")
    # ... and SIGTERM ends it, with the pipe still full
    code, took, err = stop(watch, signal.SIGTERM)
    assert code == 0, err
    assert "Traceback" not in err
    print(f"SIGTERM honoured after {took * 1000:.0f} ms with a full stdout")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.parametrize("command", [["wait", "never-there"], ["wait-stop", "x"], ["ls"]])
def test_one_shot_commands_end_on_a_signal(
    fake: FakeContainerd,
    started: list[subprocess.Popen[bytes]],
    command: list[str],
    signum: int,
    status: int,
) -> None:
    # `wait` waits for a workspace that never comes; `wait-stop` and `ls` for a listing
    # that containerd never finishes
    if command[0] != "wait":
        fake.delay(Rpc.TASKS_LIST, math.inf, times=None)
        if command[0] == "wait-stop":
            fake.add_pod("ws-x", labels=mk2_labels("x", "ws-x", "owner"))
    proc = ws_watcher(started, *command, "--address", fake.address)
    until(lambda: tasks_lists(fake) >= 1, "the command's listing")
    code, _, err = stop(proc, signum)
    assert code == status, err
    assert "interrupted" in err and "Traceback" not in err
    fake.clear_faults()


def test_a_reader_that_goes_away_is_exit_0(
    fake: FakeContainerd, started: list[subprocess.Popen[bytes]]
) -> None:
    watch = ws_watcher(started, "watch", "--initial", "--address", fake.address)
    assert watch.stdout is not None
    fake.add_pod("ws-1", labels=mk2_labels("inst-1", "ws-1", "owner"))
    assert watch.stdout.readline().startswith(b"{")
    watch.stdout.close()  # `ws-watcher watch | head -1`
    for i in range(50):
        fake.add_pod(f"ws-more-{i}", labels=mk2_labels(f"more-{i}", "w", "owner"))
    assert watch.wait(DEADLINE) == 0
    assert watch.stderr is not None
    assert "Traceback" not in watch.stderr.read().decode()
