"""`ws-watcher serve` as an operator runs it: where it serves, its socket's mode and group,
the sockets it will not take, and its end on SIGTERM/SIGINT — also with a client that
stopped reading.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import stat
import termios
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from watcher.testing import Pods, mk2_labels
from watcher.testing.host import wait_until

if TYPE_CHECKING:
    from serve_process import ServeProcess

DEADLINE = 20.0
#: a group id to give the socket to (nogroup's on Debian; a number needs no /etc/group entry)
GROUP = 65534

Serve = Callable[..., "ServeProcess"]


def get(url: str, socket_path: str | None = None) -> httpx.Response:
    transport = httpx.HTTPTransport(uds=socket_path) if socket_path else None
    with httpx.Client(transport=transport, timeout=DEADLINE) as client:
        return client.get(url)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_says_where_it_serves_and_ends_cleanly_on_a_signal(
    serve_cli: Serve, socket_path: str, signum: int
) -> None:
    server = serve_cli("--socket", socket_path, "--socket-group", str(GROUP), "--listen", "0")
    where = server.serving()
    assert where["socket"] == socket_path
    host, port = where["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0  # loopback: only a port was given
    assert where["metrics_listen"] is None
    info = os.stat(socket_path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == GROUP
    assert get("http://x/healthz", socket_path).json() == {"ok": True}
    assert get(f"http://{where['listen']}/readyz").json() == {"ready": True}

    started = time.monotonic()
    assert server.stop(signum) == 0, server.stderr
    assert time.monotonic() - started < 5.0
    assert not os.path.exists(socket_path)  # removed on exit
    assert "Traceback" not in server.stderr


def test_a_live_socket_a_file_or_a_taken_port_are_refused_and_a_stale_socket_is_replaced(
    serve_cli: Serve, socket_path: str, sockdir: str
) -> None:
    first = serve_cli("--socket", socket_path, "--listen", "0")
    where = first.serving()

    second = serve_cli("--socket", socket_path)
    assert second.wait() == 2
    assert f"another server is listening on {socket_path}" in second.stderr
    assert get("http://x/healthz", socket_path).status_code == 200  # the first is untouched

    other = os.path.join(sockdir, "other.sock")
    taken = serve_cli("--socket", other, "--listen", where["listen"])
    assert taken.wait() == 2
    assert f"--listen {where['listen']}" in taken.stderr
    assert not os.path.exists(other)  # what it made before failing, it removed

    a_file = os.path.join(sockdir, "file")
    with open(a_file, "w") as f:
        f.write("mine")
    refused = serve_cli("--socket", a_file)
    assert refused.wait() == 2
    assert "exists and is not a socket" in refused.stderr
    with open(a_file) as f:
        assert f.read() == "mine"

    assert first.stop() == 0
    stale = socket.socket(socket.AF_UNIX)  # a socket file nobody listens on: a killed server's
    stale.bind(socket_path)
    stale.close()
    replacing = serve_cli("--socket", socket_path)
    replacing.serving()
    assert get("http://x/healthz", socket_path).status_code == 200
    assert replacing.stop() == 0


def test_a_client_that_stopped_reading_does_not_hold_up_the_end(
    pods: Pods, serve_cli: Serve, socket_path: str
) -> None:
    for n in range(2):
        pods.run_pod(f"ws-stuck-{n}", labels=mk2_labels(f"stuck-{n}", "ws", "o"))
    server = serve_cli("--socket", socket_path)
    server.serving()
    # many requests on one connection, and no answer read: the answers fill the socket's
    # buffers and the server's write blocks (hypercorn shields it from cancellation)
    client = socket.socket(socket.AF_UNIX)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(socket_path)
    client.sendall(b"GET /v1/workspaces HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)

    def unread() -> int:
        waiting = bytearray(4)
        fcntl.ioctl(client.fileno(), termios.FIONREAD, waiting)
        return int.from_bytes(waiting, "little")

    # answers pile up unread (MBs of them are asked for) until the buffers are full: then
    # the count stops growing, and the server is blocked in a write
    readings = [-1]

    def full() -> bool:
        readings.append(unread())
        return readings[-1] > 64 * 1024 and len(set(readings[-3:])) == 1

    wait_until("the server to block writing", full, timeout=DEADLINE)
    started = time.monotonic()
    try:
        assert server.stop(signal.SIGTERM) == 0, server.stderr
        assert time.monotonic() - started < 5.0
        assert not os.path.exists(socket_path)
    finally:
        client.close()
