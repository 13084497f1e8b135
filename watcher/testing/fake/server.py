"""The fake containerd server: real gRPC on a unix socket, started, stopped and killed at will.

Rules:

* `FakeContainerd` is the whole fake: this module adds the server's life to what the other
  modules hold (state, events, containerd's steps, pods, faults) and serves `services` on it.
* Like a killed containerd, `stop()` ends every call and stream at once (UNAVAILABLE on the
  client's side), releases delayed calls and removes the socket; `kill()` leaves a dead socket
  file behind. The state is kept for `start()`, on the same socket path; streams are not.
* Each live Subscribe holds a worker thread for its whole life (`MAX_WORKERS` of them).
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import grpc

from .faults import Faults
from .pods import Kubelet
from .services import add_services, interceptor
from .wire import MAX_MESSAGE_BYTES

#: each live Subscribe holds a worker thread for its whole life; tests open a handful
MAX_WORKERS: Final = 64


class FakeContainerd(Kubelet, Faults):
    """The fake containerd server; see the package docstring for the synopsis and rules.

    Args:
        directory: where the socket lives (`<directory>/fake.sock`; keep the path short, unix
            sockets allow ~100 characters).
        version: what Version.Version answers.
        snapshot_root: prefix of the snapshot directories in mounts (nothing is created).
        max_message_bytes: the largest message sent or received; containerd's is 16 MiB,
            which one Containers.List of ~15 000 small containers already exceeds.
        start: start serving right away (`False`: call `start()`, e.g. to test a missing
            socket first).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        socket_name: str = "fake.sock",
        version: str = "v1.6.20-fake",
        revision: str = "fake",
        snapshot_root: str = "/var/lib/containerd",
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        start: bool = True,
    ) -> None:
        super().__init__()
        self._socket = Path(directory) / socket_name
        self.version = version
        self.revision = revision
        self.snapshot_root = snapshot_root
        self.max_message_bytes = max_message_bytes
        self._server: Any = None
        self._executor: ThreadPoolExecutor | None = None
        if start:
            self.start()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The socket path (what `open_client` and `ctr -a` take)."""
        return str(self._socket)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._server is not None

    def start(self) -> None:
        """Serve on the socket (a stale socket file from a previous run is replaced)."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError("the fake containerd is already running")
            with suppress(FileNotFoundError):
                self._socket.unlink()
            executor = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="fake-containerd")
            server = grpc.server(
                executor,
                interceptors=[interceptor(self)],
                options=[
                    ("grpc.max_receive_message_length", self.max_message_bytes),
                    ("grpc.max_send_message_length", self.max_message_bytes),
                ],
            )
            add_services(self, server)
            server.add_insecure_port(f"unix://{self._socket}")
            server.start()
            self._server, self._executor = server, executor
            self._stopping = False
            self._changed()

    def stop(self) -> None:
        """Stop at once (grace 0), as a killed containerd would: in-flight calls and event
        streams end with UNAVAILABLE (what grpc tells a client whose server went away),
        delayed calls are released, worker threads joined, the socket file removed (`kill()`
        leaves a dead one). The state is kept for `start()`. Stopping a stopped fake does
        nothing."""
        with self._lock:
            server, executor = self._server, self._executor
            if server is None:
                return
            self._server = self._executor = None
        # cancel first: a stream closed by us before the cancel would end with OK instead
        server.stop(grace=0).wait()
        with self._lock:
            self._stopping = True
            for sub in self._subscribers:
                sub.closed = True
            self._changed()
        assert executor is not None
        executor.shutdown(wait=True)
        with suppress(FileNotFoundError):
            self._socket.unlink()

    def kill(self) -> None:
        """`stop()`, leaving a dead socket file behind, as a SIGKILLed containerd does: the
        path still looks like a socket, connecting to it is refused. `start()` replaces it."""
        self.stop()
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            stale.bind(str(self._socket))
        finally:
            stale.close()

    def restart(self) -> None:
        """`stop()` then `start()` on the same socket path."""
        self.stop()
        self.start()

    def __enter__(self) -> FakeContainerd:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
