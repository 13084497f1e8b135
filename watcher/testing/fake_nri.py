"""A fake NRI runtime for tests: the runtime's end of NRI's socket, driven step by step.

Synopsis::

    async with open_fake_nri_runtime(path) as runtime:      # listens on the unix socket `path`
        async with open_nri_plugin(NriSettings(socket=path)) as plugin:
            conn = await runtime.accept()                   # the plugin connected
            name, index = await conn.registration()         # its RegisterPlugin, answered OK
            mask = await conn.configure()                   # -> ConfigureResponse.events
            await conn.synchronize(pods=[...], containers=[...])
            reply = await conn.call("CreateContainer", api_pb2.CreateContainerRequest(...))
            assert reply.payload == b""                     # what the plugin answered
            await conn.send_raw(b"garbage")                 # anything at all on the socket
            await conn.wait_closed()                        # the plugin hung up

Like containerd (NRI v0.8.0 `pkg/adaptation/plugin.go`), it serves the `Runtime` service on
multiplexed connection 2 and calls the plugin's `Plugin` service on connection 1, through the
plugin package's own codec (`watcher.nri.mux`, `watcher.nri.ttrpc`): what it checks is the
plugin's behaviour, not the codec (the real-containerd tests check that). Every wait has a
deadline (`CALL_TIMEOUT`): a plugin that does not answer fails the test, it does not hang it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio
from google.protobuf.message import Message

from containerd_protos.nri.pkg.api import api_pb2
from watcher.errors import Code
from watcher.nri import api
from watcher.nri.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Mux
from watcher.nri.ttrpc import (
    Answer,
    Call,
    ClientConnection,
    Frame,
    Ignored,
    MessageType,
    Refused,
    Request,
    Response,
    ServerConnection,
    Status,
    encode_frame,
)

#: deadline of each step: far beyond a plugin that answers at once, on a loaded machine
CALL_TIMEOUT = 10.0
#: what containerd sends as a call's timeout (its default plugin request timeout)
REQUEST_TIMEOUT_NANO = 2_000_000_000


class FakeRuntimeConnection:
    """One plugin's connection, seen from the runtime. Made by `FakeNriRuntime.accept`."""

    def __init__(self, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        self.stream = stream
        self.mux = Mux(stream)
        self._client = ClientConnection()  # we call the plugin on connection 1
        self._server = ServerConnection()  # the plugin calls us on connection 2
        self._answers: dict[int, Response] = {}
        self._answered: dict[int, trio.Event] = {}
        self._calls_send, self._calls = trio.open_memory_channel[Call](100)
        self.closed = trio.Event()
        #: what the plugin sent that was neither an answer nor a call (`Ignored`, `Refused`)
        self.oddities: list[Ignored | Refused] = []
        nursery.start_soon(self._read)

    async def _read(self) -> None:
        try:
            while segments := await self.mux.receive():
                for segment in segments:
                    if segment.conn_id == PLUGIN_SERVICE_CONN:
                        for event in self._client.receive(segment.data):
                            self._on_answer(event)
                    elif segment.conn_id == RUNTIME_SERVICE_CONN:
                        for call in self._server.receive(segment.data):
                            if isinstance(call, Call):
                                self._calls_send.send_nowait(call)
                            else:
                                self.oddities.append(call)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed.set()

    def _on_answer(self, event: Answer | Ignored) -> None:
        if isinstance(event, Ignored):
            self.oddities.append(event)
            return
        self._answers[event.stream_id] = event.response
        if (waiter := self._answered.pop(event.stream_id, None)) is not None:
            waiter.set()

    async def registration(self, *, refuse: str | None = None) -> tuple[str, str]:
        """Wait for the plugin's RegisterPlugin; answer OK (or refuse with `refuse`).

        Returns its (name, index).
        """
        with trio.fail_after(CALL_TIMEOUT):
            call = await self._calls.receive()
        request = call.request
        assert (request.service, request.method) == (api.RUNTIME_SERVICE, api.REGISTER_PLUGIN)
        pb = api_pb2.RegisterPluginRequest()
        pb.ParseFromString(request.payload)
        status = Status() if refuse is None else Status(code=Code.INVALID_ARGUMENT, message=refuse)
        payload = api_pb2.Empty().SerializeToString()
        await self.mux.send(
            RUNTIME_SERVICE_CONN, self._server.respond(call.stream_id, status, payload)
        )
        return pb.plugin_name, pb.plugin_idx

    async def call(
        self, method: str, message: Message | bytes, *, timeout_nano: int = REQUEST_TIMEOUT_NANO,
        service: str = api.PLUGIN_SERVICE,
    ) -> Response:  # fmt: skip
        """Call the plugin's `method` with `message` (or raw payload bytes); its response."""
        payload = message if isinstance(message, bytes) else message.SerializeToString()
        request = Request(
            service=service, method=method, payload=payload, timeout_nano=timeout_nano
        )
        stream_id, frame = self._client.call(request)
        answered = self._answered[stream_id] = trio.Event()
        with trio.fail_after(CALL_TIMEOUT):
            await self.mux.send(PLUGIN_SERVICE_CONN, frame)
            await answered.wait()
        return self._answers.pop(stream_id)

    async def call_with_envelope(self, envelope: bytes) -> Response:
        """A call whose ttrpc envelope is `envelope`, whatever it is (a stream id of its own)."""
        stream_id, _ = self._client.call(Request(service="", method=""))
        frame = encode_frame(Frame(stream_id, MessageType.REQUEST, 0, envelope))
        answered = self._answered[stream_id] = trio.Event()
        with trio.fail_after(CALL_TIMEOUT):
            await self.mux.send(PLUGIN_SERVICE_CONN, frame)
            await answered.wait()
        return self._answers.pop(stream_id)

    async def configure(self, runtime: str = "fake-runtime", version: str = "0.8.0") -> int:
        """Configure the plugin as containerd does after registering it; its event mask."""
        request = api_pb2.ConfigureRequest(
            runtime_name=runtime, runtime_version=version,
            registration_timeout=5000, request_timeout=2000,
        )  # fmt: skip
        reply = _ok(await self.call(api.CONFIGURE, request))
        pb = api_pb2.ConfigureResponse()
        pb.ParseFromString(reply.payload)
        return int(pb.events)

    async def register(self) -> int:
        """RegisterPlugin answered, Configure called, an empty Synchronize: the plugin is
        registered, with nothing known. Returns the event mask."""
        await self.registration()
        mask = await self.configure()
        await self.synchronize()
        return mask

    async def synchronize(
        self, pods: Sequence[api_pb2.PodSandbox] = (),
        containers: Sequence[api_pb2.Container] = (), *, more: bool = False,
        timeout_nano: int = REQUEST_TIMEOUT_NANO,
    ) -> Any:  # fmt: skip
        """One Synchronize message; the plugin's `SynchronizeResponse`."""
        request = api_pb2.SynchronizeRequest(pods=pods, containers=containers, more=more)
        reply = _ok(await self.call(api.SYNCHRONIZE, request, timeout_nano=timeout_nano))
        pb = api_pb2.SynchronizeResponse()
        pb.ParseFromString(reply.payload)
        return pb

    async def send_raw(self, data: bytes) -> None:
        """Anything at all, straight onto the socket."""
        with trio.fail_after(CALL_TIMEOUT):
            await self.stream.send_all(data)

    async def wait_closed(self) -> None:
        """Until the plugin closed the connection (`CALL_TIMEOUT` at most)."""
        with trio.fail_after(CALL_TIMEOUT):
            await self.closed.wait()

    async def aclose(self) -> None:
        await self.stream.aclose()


class FakeNriRuntime:
    """Listens on a unix socket as containerd's NRI does; hands out plugin connections."""

    def __init__(self, path: str, nursery: trio.Nursery) -> None:
        self.path = path
        self._nursery = nursery
        self._accepted_send, self._accepted = trio.open_memory_channel[FakeRuntimeConnection](100)
        self.listener: trio.SocketListener | None = None

    async def listen(self) -> None:
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        await sock.bind(self.path)
        sock.listen(16)
        self.listener = trio.SocketListener(sock)
        self._nursery.start_soon(self._accept_loop, self.listener)

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        with contextlib.suppress(trio.ClosedResourceError):
            while True:
                stream = await listener.accept()
                self._accepted_send.send_nowait(FakeRuntimeConnection(stream, self._nursery))

    async def accept(self) -> FakeRuntimeConnection:
        """The next connection a plugin made (`CALL_TIMEOUT` at most)."""
        with trio.fail_after(CALL_TIMEOUT):
            return await self._accepted.receive()

    async def stop_listening(self) -> None:
        """Close the listening socket and remove its file (a runtime that went away)."""
        if self.listener is not None:
            await self.listener.aclose()
            self.listener = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@contextlib.asynccontextmanager
async def open_fake_nri_runtime(path: str, *, listen: bool = True) -> AsyncIterator[FakeNriRuntime]:
    """A `FakeNriRuntime` on `path` for the block (listening at once unless `listen` is False)."""
    async with trio.open_nursery() as nursery:
        runtime = FakeNriRuntime(path, nursery)
        if listen:
            await runtime.listen()
        try:
            yield runtime
        finally:
            await runtime.stop_listening()
            nursery.cancel_scope.cancel()


def _ok(response: Response) -> Response:
    if response.status.code is not Code.OK:
        raise AssertionError(f"the plugin answered {response.status}")
    return response
