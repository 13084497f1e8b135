"""The observe-only NRI plugin, on trio: connect, register, answer at once, queue, reconnect.

Synopsis::

    async with open_nri_plugin(NriSettings(socket="/var/run/nri/nri.sock")) as plugin:
        async for item in plugin.events:    # PodSandboxEvent | ContainerEvent | Synchronized
            ...
        plugin.stats                        # NriStats: registrations, delivered, dropped, ...
        await plugin.registrations.wait_value(lambda n: n >= 1)   # (tests, health)

How it talks (containerd/nri `pkg/stub/stub.go` is the model): one unix socket to the
runtime's NRI socket, multiplexed (`watcher.nri.mux`) into connection 1, on which the plugin
serves NRI's `Plugin` service (ttrpc server), and connection 2, on which it calls the
`Runtime` service's `RegisterPlugin` (ttrpc client). The runtime answers `RegisterPlugin`
and calls `Configure` — possibly before its answer arrives, so the reader runs from the start —
then `Synchronize` (every pod and container, perhaps in chunks), then the subscribed events.

Observe only: `Configure` is answered with the event mask, `Synchronize` with no update, every
event with the empty message, `Shutdown` with `Empty`; any other method with Unimplemented.
Nothing this plugin sends can adjust, update or evict a container (`watcher.nri.api` builds
every reply).

Never holding the runtime up: containerd serialises all NRI calls behind one lock, and waits
for a plugin's reply up to its request timeout (2 s by default), so a plugin's latency is
added to every pod operation on the node. Each call is answered as soon as its envelope is
read (for `Synchronize`, once its `more` flag is), before the event is decoded into a record
and queued; the queue (`NriSettings.event_buffer`) never blocks: when the consumer falls
behind, events are dropped and counted (`NriStats.dropped`) — the event stream and relists
make up for them. A reply that cannot go out within `reply_timeout`, or goes out after the
runtime's deadline, ends the connection (the runtime has given up on it).

Failure handling: a broken frame, a lost socket, a refused or timed-out registration end the
connection, with one log line; the plugin connects again with back-off (`backoff_initial` to
`backoff_max` while the socket refuses: containerd restarting), or every `unavailable_retry`
seconds while there is no socket at all (containerd 1.6, NRI off). An NRI that is not there is
not an error: it is said once, at INFO. Programming errors propagate.

Cancellation: cancelling `run` (or leaving `open_nri_plugin`) closes the socket at once; the
runtime sees a plugin that went away, which costs it nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import trio
from trio_util import AsyncValue

from watcher._nursery import errors_of, single_errors
from watcher.errors import Code
from watcher.settings import NriSettings

from . import api
from .errors import BadMessage, ConnectionCut, LateReply, ProtocolError, RegistrationError
from .events import NriItem, Synchronized, event_mask
from .mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Mux
from .ttrpc import (
    OK,
    Answer,
    Call,
    ClientConnection,
    Ignored,
    Refused,
    Request,
    ServerConnection,
    Status,
)

log = logging.getLogger(__name__)

#: what ends one connection to the runtime and is handled by connecting again
_SESSION_ENDS: Final = (
    ProtocolError,
    ConnectionCut,
    RegistrationError,
    LateReply,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NriStats:
    """Counters of the plugin since it was made (a snapshot)."""

    #: completed registrations (RegisterPlugin answered OK and Configure answered)
    registrations: int
    #: registered now
    registered: bool
    #: items put on `NriPlugin.events`
    delivered: int
    #: events and listings not delivered: the consumer was behind (or gone)
    dropped: int
    #: connections closed for a broken frame
    protocol_errors: int
    #: calls whose payload could not be decoded (answered all the same)
    bad_messages: int
    #: replies that went out after the runtime's deadline (the connection was renewed)
    late_replies: int


class NriPlugin:
    """One observe-only NRI plugin: `run` it in a nursery, read `events`.

    Args:
        settings: where the NRI socket is, the plugin's name and index, the queue's size,
            back-off and timeouts (`watcher.settings.NriSettings`).

    `events` is the receive end of a bounded trio memory channel; `registered` (bool) and
    `registrations` (int) are `trio_util.AsyncValue`s that waiters may watch.
    """

    def __init__(self, settings: NriSettings | None = None) -> None:
        self.settings = settings if settings is not None else NriSettings()
        self._send, self.events = trio.open_memory_channel[NriItem](self.settings.event_buffer)
        self.registered = AsyncValue(False)
        self.registrations = AsyncValue(0)
        self._delivered = 0
        self._dropped = 0
        self._dropping = False
        self._protocol_errors = 0
        self._bad_messages = 0
        self._late_replies = 0
        self._said_unavailable = False
        self._lost = False
        self._last_end: str | None = None  # why the last connection ended, when warned of

    @property
    def name(self) -> str:
        """As the runtime logs the plugin: ``<index>-<name>``."""
        return f"{self.settings.plugin_index}-{self.settings.plugin_name}"

    @property
    def stats(self) -> NriStats:
        return NriStats(
            registrations=self.registrations.value,
            registered=self.registered.value,
            delivered=self._delivered,
            dropped=self._dropped,
            protocol_errors=self._protocol_errors,
            bad_messages=self._bad_messages,
            late_replies=self._late_replies,
        )

    async def run(
        self, *, task_status: trio.TaskStatus[NriPlugin] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, register and serve, again after every loss, until cancelled.

        `task_status.started(self)` comes at once, not after a registration: NRI may never
        be there (containerd 1.6), and nothing should wait for it.
        """
        task_status.started(self)
        settings = self.settings
        backoff = settings.backoff_initial
        while True:
            cap = settings.backoff_max
            try:
                stream = await self._connect()
            except _Unavailable as exc:
                self._unavailable(exc)
                if exc.slow:
                    cap = settings.unavailable_retry
            else:
                if await self._serve(stream):
                    backoff = settings.backoff_initial
            await trio.sleep(backoff)  # back-off between attempts, not a synchronisation
            backoff = min(backoff * 2, cap)

    async def _connect(self) -> trio.SocketStream:
        path = self.settings.socket
        try:
            with trio.fail_after(self.settings.registration_timeout):
                return await trio.open_unix_socket(path)
        except trio.TooSlowError:
            raise _Unavailable(f"connecting to {path} timed out", slow=False) from None
        except ConnectionRefusedError:
            # the socket file is there, nobody listens: containerd killed, or restarting
            raise _Unavailable(f"{path} refuses connections", slow=False) from None
        except FileNotFoundError:
            raise _Unavailable(f"there is no socket at {path}", slow=True) from None
        except OSError as exc:  # permission denied, not a socket, ...: not going away soon
            raise _Unavailable(f"cannot connect to {path}: {exc.strerror}", slow=True) from None

    def _unavailable(self, exc: _Unavailable) -> None:
        if self._lost or self._said_unavailable:
            log.debug("NRI: %s", exc)
            return
        self._said_unavailable = True
        log.info(
            "NRI is not available: %s (containerd before 1.7, NRI turned off in its config, "
            "or containerd not running); going on without it, looking again every %g s",
            exc, self.settings.unavailable_retry,
        )  # fmt: skip

    async def _serve(self, stream: trio.SocketStream) -> bool:
        """One connection, from registration to its end; True if it got registered."""
        session = _Session(self, stream)
        ended: BaseException | None = None
        try:
            async with stream:
                await session.run()
        except _SESSION_ENDS as exc:
            ended = exc
        except BaseExceptionGroup as group:
            errors = errors_of(group)
            ends = [e for e in errors if isinstance(e, _SESSION_ENDS)]
            if not ends or len(ends) < len(errors):
                raise
            ended = ends[0]
        finally:
            if session.registered:
                self.registered.value = False
        self._log_end(session, ended)
        return session.registered

    def _log_end(self, session: _Session, ended: BaseException | None) -> None:
        """One warning per cause in a row: a runtime that keeps refusing, or keeps sending
        what cannot be read, is said once, not every back-off (the counters keep counting)."""
        if isinstance(ended, ConnectionCut):
            # what a runtime killed mid-write leaves: said as the closed connection it is
            log.debug("NRI: %s", ended)
            ended = None
        if isinstance(ended, ProtocolError):
            self._protocol_errors += 1
        if isinstance(ended, ProtocolError | RegistrationError | LateReply):
            said = str(ended) == self._last_end
            self._last_end = str(ended)
            what = f"closing the connection to {self.settings.socket}: {ended}"
            log.log(logging.DEBUG if said else logging.WARNING, "NRI: %s", what)
        if not session.registered:
            log.debug("NRI: connection ended before registration: %s", ended or "closed")
        elif session.shutdown and ended is None:
            log.info("NRI: %s shut down; registering again when it is back", session.runtime)
            self._lost = True
        elif not self._lost:
            self._lost = True
            log.warning(
                "NRI: connection to containerd lost (%s); registering again when it is "
                "back, the event stream carries on meanwhile", ended or "closed by containerd",
            )  # fmt: skip

    # -- called by the session -------------------------------------------------------------

    def _registered_now(self, runtime: str) -> None:
        count = self.registrations.value + 1
        again = " again" if count > 1 else ""
        log.info(
            "NRI: registered%s with %s at %s as %s", again, runtime, self.settings.socket, self.name
        )
        self._lost = False
        self._last_end = None
        self.registered.value = True
        self.registrations.value = count

    def _deliver(self, item: NriItem) -> None:
        """Queue `item` for the consumer without ever waiting: drop and count when full."""
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self._dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "NRI: events are not read fast enough (%d queued): dropping them; the "
                    "event stream and relists make up for what is dropped",
                    self.settings.event_buffer,
                )  # fmt: skip
        except trio.BrokenResourceError:  # the consumer closed its end: nobody to tell
            self._dropped += 1
        else:
            self._delivered += 1
            if self._dropping:
                self._dropping = False
                log.info("NRI: events are read again; %d dropped so far", self._dropped)


class _Unavailable(Exception):
    """No connection to the NRI socket; `slow`: not worth trying again soon."""

    def __init__(self, message: str, *, slow: bool) -> None:
        super().__init__(message)
        self.slow = slow


class _Session:
    """One connection to the runtime: registration, then serving until it ends."""

    def __init__(self, plugin: NriPlugin, stream: trio.SocketStream) -> None:
        self.plugin = plugin
        self.settings = plugin.settings
        self.mux = Mux(stream)
        self.server = ServerConnection()
        self.client = ClientConnection()
        self.configured = trio.Event()
        self.runtime = "the runtime"
        self.registered = False
        self.shutdown = False  # the runtime said it is going down (NRI's Shutdown)
        self._answers: dict[int, Answer] = {}
        self._answered: dict[int, trio.Event] = {}
        self._sync: list[api.SyncChunk] = []
        self._sync_start: tuple[float, float] | None = None  # (ts, mono) of its first chunk
        self._ignored: set[str] = set()  # what was ignored and said (once per connection)

    async def run(self) -> None:
        """Until the runtime closes the connection (returns) or it breaks (raises)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._register)
            await self._read()
            nursery.cancel_scope.cancel()  # closed: a registration in flight is moot

    # -- registration ----------------------------------------------------------------------

    async def _register(self) -> None:
        settings = self.settings
        timeout = settings.registration_timeout
        request = Request(
            service=api.RUNTIME_SERVICE,
            method=api.REGISTER_PLUGIN,
            payload=api.register_request(settings.plugin_name, settings.plugin_index),
            timeout_nano=int(timeout * 1e9),
        )
        stream_id, frame = self.client.call(request)
        answered = self._answered[stream_id] = trio.Event()
        with trio.move_on_after(timeout):
            await self._send(RUNTIME_SERVICE_CONN, frame)
            await answered.wait()
            status = self._answers.pop(stream_id).response.status
            if status.code is not Code.OK:
                raise RegistrationError(
                    f"containerd refused to register {self.plugin.name}: "
                    f"{status.code.name}: {status.message}"
                )
            await self.configured.wait()
            self.registered = True
            self.plugin._registered_now(self.runtime)
            return
        raise RegistrationError(f"containerd did not register the plugin within {timeout:g} s")

    # -- reading ---------------------------------------------------------------------------

    async def _read(self) -> None:
        # no deadline on reading: an idle node sends nothing for hours, and a runtime that
        # went away shows as the end of the socket (or a reset), not as silence
        while segments := await self.mux.receive():
            for segment in segments:
                if segment.conn_id == PLUGIN_SERVICE_CONN:
                    for event in self.server.receive(segment.data):
                        await self._on_server_event(event)
                elif segment.conn_id == RUNTIME_SERVICE_CONN:
                    for answer in self.client.receive(segment.data):
                        self._on_answer(answer)
                else:  # as NRI's own reader: frames for a connection nobody opened are dropped
                    log.debug(
                        "NRI: %d bytes for connection %d dropped",
                        len(segment.data),
                        segment.conn_id,
                    )
        # the socket can end between the multiplexer's frames but inside a ttrpc one:
        # ConnectionCut as well
        self.server.end()
        self.client.end()

    def _say_ignored(self, event: Ignored, where: str) -> None:
        # a newer runtime may send what this plugin does not know on every call: said once
        said = event.reason in self._ignored
        self._ignored.add(event.reason)
        level = logging.DEBUG if said else logging.WARNING
        log.log(level, "NRI: ignored on stream %d%s: %s", event.stream_id, where, event.reason)

    def _on_answer(self, event: Answer | Ignored) -> None:
        if isinstance(event, Ignored):
            self._say_ignored(event, " of the runtime's service")
            return
        self._answers[event.stream_id] = event
        if (waiter := self._answered.pop(event.stream_id, None)) is not None:
            waiter.set()

    async def _on_server_event(self, event: Call | Refused | Ignored) -> None:
        if isinstance(event, Call):
            await self._call(event)
        elif isinstance(event, Refused):
            log.warning(
                "NRI: refused a call on stream %d: %s", event.stream_id, event.status.message
            )
            await self._send(
                PLUGIN_SERVICE_CONN, ServerConnection.respond(event.stream_id, event.status)
            )
        else:
            self._say_ignored(event, "")

    # -- serving ---------------------------------------------------------------------------

    async def _call(self, call: Call) -> None:
        """Answer first, then decode and queue."""
        mono, ts = trio.current_time(), time.time()
        request = call.request
        timeout = request.timeout_nano / 1e9
        deadline = mono + timeout if timeout > 0 else None
        method = request.method if request.service == api.PLUGIN_SERVICE else None
        if method is None or method not in api.SERVED:
            what = (
                f"method {request.method}" if method is not None else f"service {request.service}"
            )
            log.debug("NRI: answering Unimplemented to %s", what)
            unimplemented = Status(code=Code.UNIMPLEMENTED, message=what)
            await self._reply(call, deadline, b"", unimplemented)
            return
        if method == api.CONFIGURE:
            await self._reply(call, deadline, api.configure_response(event_mask()))
            self._configured(request.payload)
        elif method == api.SYNCHRONIZE:
            await self._synchronize(call, deadline, ts, mono)
        elif method == api.SHUTDOWN:
            await self._reply(call, deadline, api.empty_response(method))
            self.shutdown = True
            log.debug("NRI: %s is shutting down", self.runtime)
        else:
            await self._reply(call, deadline, api.empty_response(method))
            try:
                item = api.event(method, request.payload, ts=ts, mono=mono)
            except BadMessage as exc:
                self._bad_message(exc)
                return
            if item is not None:
                self.plugin._deliver(item)

    def _configured(self, payload: bytes) -> None:
        try:
            info = api.configure_request(payload)
        except BadMessage as exc:
            self._bad_message(exc)
        else:
            self.runtime = f"{info.runtime_name or 'the runtime'} {info.runtime_version}".strip()
        self.configured.set()

    async def _synchronize(
        self, call: Call, deadline: float | None, ts: float, mono: float
    ) -> None:
        try:
            chunk = api.synchronize_request(call.request.payload)
        except BadMessage as exc:
            # `more` unknown: answering False makes a runtime that split its listing drop
            # the plugin (and it registers afresh), which is what an unreadable listing needs
            await self._reply(call, deadline, api.synchronize_response(False))
            self._bad_message(exc)
            self._sync.clear()
            return
        await self._reply(call, deadline, api.synchronize_response(chunk.more))
        if self._sync_start is None:
            self._sync_start = (ts, mono)
        self._sync.append(chunk)
        if chunk.more:
            return
        (ts, mono), chunks = self._sync_start, self._sync
        self._sync_start, self._sync = None, []
        self.plugin._deliver(
            Synchronized(
                pods=tuple(p for c in chunks for p in c.pods),
                containers=tuple(c for chunk in chunks for c in chunk.containers),
                ts=ts,
                mono=mono,
            )
        )

    def _bad_message(self, exc: BadMessage) -> None:
        self.plugin._bad_messages += 1
        log.warning("NRI: %s (answered all the same)", exc)

    async def _reply(
        self, call: Call, deadline: float | None, payload: bytes, status: Status = OK
    ) -> None:
        """Send the response; raise `LateReply` if it went out after the runtime's deadline."""
        await self._send(
            PLUGIN_SERVICE_CONN, ServerConnection.respond(call.stream_id, status, payload)
        )
        if deadline is not None and (late := trio.current_time() - deadline) > 0:
            self.plugin._late_replies += 1
            raise LateReply(
                f"the reply to {call.request.method} went out {late * 1000:.3f} ms after "
                f"{self.runtime}'s deadline"
            )

    async def _send(self, conn_id: int, data: bytes) -> None:
        with trio.move_on_after(self.settings.reply_timeout):
            await self.mux.send(conn_id, data)
            return
        # cut off mid-frame, perhaps: the connection is unusable either way
        raise LateReply(
            f"{self.runtime} took nothing from the socket for {self.settings.reply_timeout:g} s"
        )


@asynccontextmanager
async def open_nri_plugin(settings: NriSettings | None = None) -> AsyncIterator[NriPlugin]:
    """Run an `NriPlugin` in the background for the block; stop it (closing its socket) after.

    Yields at once: the plugin registers whenever the runtime lets it (`registrations`).
    """
    with single_errors():
        async with trio.open_nursery() as nursery:
            plugin: NriPlugin = await nursery.start(NriPlugin(settings).run)
            try:
                yield plugin
            finally:
                nursery.cancel_scope.cancel()


async def serve_nri_plugin(
    settings: NriSettings | None = None,
    *,
    task_status: trio.TaskStatus[NriPlugin] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`NriPlugin(settings).run()`, for `nursery.start`: the started value is the plugin."""
    await NriPlugin(settings).run(task_status=task_status)
