"""A wiretap between the watcher and a real containerd: what was sent, seen from the socket.

Why a proxy, not a hook in the client: the read-only proof must not rely on the code it
proves. The watcher (a library call in this process, or a `ws-watcher` subprocess) is pointed
at the tap's socket; the tap forwards every call, whatever its method, byte for byte to
containerd and records its full method name and `containerd-namespace`. So a call that got
round the client's allow-list (another channel, a raw socket) would be recorded all the same,
and containerd answers exactly as it would without the tap. Only the watcher's calls pass
through it: the rig's own CRI and `ctr` calls go to containerd directly.

Synopsis::

    with Wiretap(containerd.address, sockdir) as tap:
        async with open_watcher(tap.address) as w:
            ...
        assert tap.methods() <= ALLOWED_RPCS

It can also *hold* the answers of a method named in `holdable`: `tap.hold(EVENTS_SUBSCRIBE)`
keeps every message of that method's streams from the watcher — the tap goes on reading them
from containerd, keeps them (`held_messages`) and passes none on — until
`tap.release(EVENTS_SUBSCRIBE)` lets them all through, in order. So a test can show what the
watcher knows *without* containerd's event stream (e.g. what NRI told it first), with no race
on timing::

    with Wiretap(containerd.address, sockdir, holdable={EVENTS_SUBSCRIBE}) as tap:
        tap.hold(EVENTS_SUBSCRIBE)
        ...                                     # containerd publishes, the watcher hears nothing
        tap.held_messages(EVENTS_SUBSCRIBE)     # what containerd published meanwhile (raw)
        tap.release(EVENTS_SUBSCRIBE)
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from watcher.settings import MAX_MESSAGE_BYTES  # as the client allows

NAMESPACE_METADATA = "containerd-namespace"

#: each live stream (Subscribe) holds one worker for its life
MAX_WORKERS = 64
#: a deadline further away than this is "none" (grpc reports no deadline as a huge one)
_NO_DEADLINE = 1e6

# the full names of the methods the tests look for in what the client sent
VERSION = "/containerd.services.version.v1.Version/Version"
NAMESPACES_LIST = "/containerd.services.namespaces.v1.Namespaces/List"
CONTAINERS_GET = "/containerd.services.containers.v1.Containers/Get"
CONTAINERS_DELETE = "/containerd.services.containers.v1.Containers/Delete"
CONTAINERS_LIST = "/containerd.services.containers.v1.Containers/List"
CONTAINERS_LIST_STREAM = "/containerd.services.containers.v1.Containers/ListStream"
TASKS_GET = "/containerd.services.tasks.v1.Tasks/Get"
TASKS_LIST = "/containerd.services.tasks.v1.Tasks/List"
SNAPSHOTS_MOUNTS = "/containerd.services.snapshots.v1.Snapshots/Mounts"
EVENTS_SUBSCRIBE = "/containerd.services.events.v1.Events/Subscribe"
IMAGES_GET = "/containerd.services.images.v1.Images/Get"
CONTENT_READ = "/containerd.services.content.v1.Content/Read"
#: every command connects: is it containerd, does the namespace exist, subscribe, list
CONNECT = {VERSION, NAMESPACES_LIST, EVENTS_SUBSCRIBE, CONTAINERS_LIST_STREAM, TASKS_LIST}


@dataclass(frozen=True, slots=True)
class TappedCall:
    """One call that reached the tap: full method name, `containerd-namespace` (or None)."""

    method: str
    namespace: str | None


class Wiretap:
    """A transparent gRPC proxy on a unix socket in `directory`, forwarding to `upstream`."""

    def __init__(
        self,
        upstream: str,
        directory: str,
        name: str = "tap.sock",
        *,
        holdable: Collection[str] = (),
    ) -> None:
        self.address = os.path.join(directory, name)
        self.holdable = frozenset(holdable)
        self._lock = threading.Lock()
        self._calls: list[TappedCall] = []
        self._gates: dict[str, threading.Event] = {}  # method -> set when released
        self._held: dict[str, list[bytes]] = {}  # method -> what its latest hold kept
        self._upstream = grpc.insecure_channel(
            f"unix://{upstream}",
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.enable_retries", 0),
                # containerd may be restarted by a test: reconnect as fast as the watcher does
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500),
            ],
        )
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="wiretap"),
            handlers=[_Forward(self)],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._server.add_insecure_port(f"unix://{self.address}")

    def start(self) -> Wiretap:
        self._server.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for gate in self._gates.values():
                gate.set()  # a held stream must not keep a worker (and the stop) waiting
        self._server.stop(grace=None).wait()
        self._upstream.close()
        if os.path.exists(self.address):
            os.unlink(self.address)

    def __enter__(self) -> Wiretap:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def calls(self) -> list[TappedCall]:
        with self._lock:
            return list(self._calls)

    def methods(self) -> set[str]:
        return {c.method for c in self.calls()}

    def count(self, method: str) -> int:
        return sum(c.method == method for c in self.calls())

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def hold(self, method: str) -> None:
        """Keep the answers of `method` (one of `holdable`) from the caller, from the next
        message on, until `release`."""
        if method not in self.holdable:
            raise ValueError(f"{method} was not named holdable when the tap was made")
        with self._lock:
            self._gates[method] = threading.Event()
            self._held[method] = []

    def release(self, method: str) -> None:
        """Let what `hold` kept (and everything after) through, in order."""
        with self._lock:
            gate = self._gates.pop(method, None)
        if gate is not None:
            gate.set()

    def held_messages(self, method: str) -> list[bytes]:
        """The messages of `method` that its latest `hold` kept back (serialized)."""
        with self._lock:
            return list(self._held.get(method, ()))

    def _gate(self, method: str, message: bytes) -> threading.Event | None:
        """The hold `message` must wait for (kept in `held_messages`), or None."""
        with self._lock:
            gate = self._gates.get(method)
            if gate is not None:
                self._held[method].append(message)
            return gate

    def _record(self, call: TappedCall) -> None:
        with self._lock:
            self._calls.append(call)


class _Forward(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Every method, of whatever kind, as a bidirectional stream of raw bytes: on the wire a
    unary call is a stream of one message each way, so one handler forwards them all."""

    def __init__(self, tap: Wiretap) -> None:
        self.tap = tap

    def service(self, details: Any) -> Any:
        method: str = details.method
        metadata = tuple(
            (k, v)
            for k, v in details.invocation_metadata
            if not k.startswith((":", "grpc-")) and k != "user-agent"
        )
        namespace = next((str(v) for k, v in metadata if k == NAMESPACE_METADATA), None)
        self.tap._record(TappedCall(method, namespace))
        upstream = self.tap._upstream.stream_stream(method)  # no (de)serializers: bytes

        def forward(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            remaining = context.time_remaining()
            timeout = remaining if remaining is not None and remaining < _NO_DEADLINE else None
            call = upstream(requests, metadata=metadata, timeout=timeout)
            context.add_callback(call.cancel)  # the caller left (or the call ended)
            try:
                if method in self.tap.holdable:
                    yield from _holding(self.tap, method, call)
                else:
                    yield from call
            except grpc.RpcError as exc:
                if context.is_active():
                    context.abort(exc.code(), exc.details() or "")

        return grpc.stream_stream_rpc_method_handler(forward)


_END = object()


def _holding(tap: Wiretap, method: str, call: Iterator[bytes]) -> Iterator[bytes]:
    """`call`'s messages, each passed on once no hold keeps it. A thread of its own reads
    them from containerd as they come, as the watcher's client would have: so a held stream
    is read on (each message kept in `held_messages`) while nothing is passed on. Errors of
    `call` are raised in their place."""
    messages: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def read() -> None:
        try:
            for message in call:
                messages.put((message, tap._gate(method, message)))
        except grpc.RpcError as exc:
            messages.put(exc)
        messages.put(_END)

    threading.Thread(target=read, name="wiretap-read-ahead", daemon=True).start()
    while (item := messages.get()) is not _END:
        if isinstance(item, grpc.RpcError):
            raise item
        message, gate = item
        if gate is not None:
            gate.wait()  # a worker thread of the tap's own: only this call waits
        yield message
