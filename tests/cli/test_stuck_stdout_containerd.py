"""`watch` whose stdout nobody reads, on a real containerd (issue 13, point 4).

A pipe holds 64 KiB; the workspace lines of a few dozen pods fill it. The watcher must still
talk to containerd (its relists are counted by a wiretap between it and containerd, see
`rpc_wiretap`) and end at once with 0 on SIGTERM, with the pipe still full. Before the
writer moved off the loop, a write to the full pipe held the whole watcher: no relist came,
and SIGTERM waited for a reader.
"""

from __future__ import annotations

import fcntl
import os
import platform
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable

from rpc_wiretap import TASKS_LIST, Wiretap

from watcher.testing import Pods, PrivateContainerd, mk2_labels

DEADLINE = 60.0
STOP = 5.0
#: the number of write(2) in /proc/PID/task/TID/syscall
WRITE = {"x86_64": 1, "aarch64": 64}[platform.machine()]


def until(condition: Callable[[], bool], what: str) -> None:
    """Poll what another process does (a pipe's fill, calls through the tap), bounded."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE}s: {what}"
        time.sleep(0.05)


def queued(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


def writing_to_stdout(pid: int) -> bool:
    """Some thread of `pid` is inside write(1, ...): the pipe is full, the write blocks."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            continue
        if len(fields) > 1 and fields[0] == str(WRITE) and int(fields[1], 16) == 1:
            return True
    return False


def test_watch_with_an_unread_stdout_on_a_real_containerd(
    containerd: PrivateContainerd, pods: Pods, sockdir: str
) -> None:
    with Wiretap(containerd.address, sockdir) as tap:
        watch = subprocess.Popen(
            [sys.executable, "-m", "watcher", "watch", "--address", tap.address,
             "--relist-interval", "0.5", "--initial"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert watch.stdout is not None
            until(lambda: tap.count(TASKS_LIST) >= 1, "the initial sync")
            made = 0
            while not writing_to_stdout(watch.pid):  # nobody reads
                assert made < 100, "the lines of 100 pods did not fill a pipe"
                pods.run_pod(f"ws-stuck-{made}", labels=mk2_labels(f"stuck-{made}", "w", "o"))
                made += 1
            full = queued(watch.stdout.fileno())
            before = tap.count(TASKS_LIST)
            until(lambda: tap.count(TASKS_LIST) >= before + 3, "relists with a full stdout")
            sent = time.monotonic()
            watch.send_signal(signal.SIGTERM)
            assert watch.wait(STOP) == 0
            took = time.monotonic() - sent
            print(f"{made} pods filled the pipe; SIGTERM honoured in {took:.2f}s")
            assert queued(watch.stdout.fileno()) == full  # still unread
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
