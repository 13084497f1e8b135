"""A client of `ws-watcher serve`: the node's watcher, awaited from another process, on trio
or asyncio alike (anyio and httpx underneath).

Synopsis::

    from watcher.remote import connect

    async with connect("/run/ws-watcher/api.sock") as w:      # or "http://127.0.0.1:9100"
        ws = await w.wait_for_container(instance_id, timeout=60)   # a `Workspace`
        print(ws.pid, ws.cgroup_path, ws.upperdir)
        for iid, ws in (await w.workspaces()).items():
            ...
        async for change in w.changes():          # WorkspaceChange, Synced, Disconnected
            if isinstance(change, ResyncRequired):   # it missed some: re-list
                state = await w.workspaces()
        await w.wait_for_container_stop(instance_id)

    trio.run(main)  /  asyncio.run(main())

The same shape as the library's `Watcher`, and the same records: `Workspace`,
`WorkspaceChange`, `Synced`, `Disconnected` and `TaskRecord`/`ImageInfo` (`inspect`), decoded
from the API's JSON (`watcher.wire`) — holding what the service lets out (annotations on its
allow-list, paths as it maps them).

* Waits take an optional `timeout` (seconds): when it passes first they raise
  `WaitTimedOut` (a `TimeoutError`). Without one they wait as long as the caller's cancel
  scope allows, one long poll after another. Cancelling a wait closes its connection, and
  the service cancels its side.
* `changes()` follows `/v1/watch`. A dropped connection (the service restarted, a network
  blip) is resumed with the last `seq` read: nothing missed, nothing twice. When the
  service no longer holds what was missed (or is a new process), a `ResyncRequired`
  comes in its place: re-list with `workspaces()`.
* Errors are the library's: `UnknownId` (404), `UsageError` (400), `ConnectError` (the
  service cannot reach containerd), `ServiceUnreachable` (a `ConnectError`: no service at
  that address), `ServiceError` for anything else it answers.

Error handling: before the first answer, an unreachable service raises at once (a wrong
address is a mistake to report); after it, waits and `changes()` ride through the
service's restarts, reconnecting with back-off, as the library rides through containerd's.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from .containerd_records import ImageInfo, TaskRecord
from .errors import ConnectError, ContainerdError, RemoteError, UnknownId, UsageError, WatcherError
from .published import Change, InstanceId, Synced, Workspace
from .service.protocol import (
    FEED_HEADER,
    RESYNC_REQUIRED,
    SEQ,
    ErrorCode,
    ResyncRequired,
    WaitFor,
)
from .settings import (
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    CLIENT_GRACE,
    CLIENT_TIMEOUT,
    WAIT_TIMEOUT,
    check_id,
)
from .wire import (
    WireError,
    change_from_json,
    image_from_json,
    task_from_json,
    workspace_from_json,
)

__all__ = [
    "Changes",
    "Inspection",
    "RemoteWatcher",
    "ResyncRequired",
    "ServiceError",
    "ServiceUnreachable",
    "WaitTimedOut",
    "connect",
]

log = logging.getLogger("watcher.remote")

#: what the client sends as the Host of a unix socket's requests
_UNIX_HOST = "http://ws-watcher"


class ServiceUnreachable(ConnectError):
    """No ws-watcher service answers at that address (or the connection to it broke)."""


class ServiceError(RemoteError):
    """The service answered with an error; `status` and `error_code` say which."""

    def __init__(self, message: str, *, status: int, error_code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class WaitTimedOut(WatcherError, TimeoutError):
    """A wait's `timeout` passed before the workspace ran (or was gone)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Inspection:
    """`inspect`: the workspace, its task and its image now (None when containerd has none)."""

    workspace: Workspace
    task: TaskRecord | None
    image: ImageInfo | None


FeedItem = Change | ResyncRequired


@asynccontextmanager
async def connect(server: str) -> AsyncIterator[RemoteWatcher]:
    """A client of the service at `server`: its unix socket's path, or `http://HOST:PORT`.

    Raises `ServiceUnreachable` when nothing answers there (checked at once, with
    /healthz), `UsageError` for an address that is neither.
    """
    # the service speaks plain HTTP only (a unix socket, or TCP on loopback by default): no
    # TLS context, whose certificates would cost ~30 ms to load per client
    if server.startswith("http://"):
        transport = httpx.AsyncHTTPTransport(retries=0, verify=False)
        base_url = server.rstrip("/")
    else:
        path = server.removeprefix("unix://").removeprefix("unix:")
        if not path.startswith("/"):
            raise UsageError(f"not a socket's absolute path or an http:// URL: {server!r}")
        transport = httpx.AsyncHTTPTransport(uds=path, retries=0, verify=False)
        base_url = _UNIX_HOST
    http = httpx.AsyncClient(
        transport=transport,
        base_url=base_url,
        timeout=httpx.Timeout(CLIENT_TIMEOUT),
        verify=False,  # see above: nothing to verify
        trust_env=False,  # a node-local service: never through $HTTP_PROXY
        # every wait and follower holds a connection of its own (HTTP/1.1): no cap, but
        # only a few kept idle
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=16),
    )
    async with http:
        remote = RemoteWatcher(http, server)
        await remote._get("/healthz")
        yield remote


class RemoteWatcher:
    """The service at `server` (see the module's synopsis); made by `connect`."""

    def __init__(self, http: httpx.AsyncClient, server: str) -> None:
        self._http = http
        self.server = server

    # --- queries -------------------------------------------------------------------------

    async def workspaces(self) -> dict[InstanceId, Workspace]:
        """Each instance with its newest workspace container (`ls`), in the service's order."""
        found = await self._get("/v1/workspaces")
        if not isinstance(found, list):
            raise WireError("/v1/workspaces: not a JSON array")
        return {ws.instance_id: ws for ws in map(workspace_from_json, found)}

    async def workspace(self, id: str) -> Workspace:
        """One workspace by instance id or container id; `UnknownId` when none is. From the
        service's index (`inspect` asks containerd for the task and image too)."""
        check_id(id, "instance or container id")
        return workspace_from_json(
            await self._get(f"/v1/workspaces/{_segment(id)}", params={"details": "0"})
        )

    async def inspect(self, id: str) -> Inspection:
        """`inspect ID`: the workspace with its task and image as containerd has them now."""
        check_id(id, "instance or container id")
        obj = await self._get(f"/v1/workspaces/{_segment(id)}")
        ws = workspace_from_json(obj)
        return Inspection(
            workspace=ws,
            task=task_from_json(obj.get("task_info"), ws.container_id),
            image=image_from_json(obj.get("image_info")),
        )

    async def is_ready(self) -> bool:
        """The service is connected to containerd and synced (`/readyz`)."""
        try:
            await self._get("/readyz")
        except ServiceError as exc:
            if exc.error_code == ErrorCode.NOT_READY.value:
                return False
            raise
        return True

    # --- waiting -----------------------------------------------------------------------------

    # `timeout` is the service's (ASYNC109): it answers a timed-out wait itself, so the
    # connection stays usable; the caller's cancel scope works as well
    async def wait_for_container(
        self,
        instance_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Workspace:
        """The instance's workspace once its task runs (as `Watcher.wait_for_container`).

        Raises `WaitTimedOut` when `timeout` (seconds) passes first; without one, waits
        until the caller's cancel scope ends it.
        """
        return workspace_from_json(await self._wait(instance_id, WaitFor.RUNNING, timeout))

    async def wait_for_container_stop(
        self,
        instance_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> None:
        """Return once no workspace container of the instance is left (at once if none is)."""
        await self._wait(instance_id, WaitFor.GONE, timeout)

    async def _wait(
        self,
        instance_id: str,
        what: WaitFor,
        timeout: float | None,  # noqa: ASYNC109
    ) -> Any:
        check_id(instance_id, "instance id")
        if timeout is not None and not timeout > 0:
            raise UsageError(f"the timeout must be a positive number of seconds, not {timeout!r}")
        deadline = None if timeout is None else anyio.current_time() + timeout
        path = f"/v1/workspaces/{_segment(instance_id)}/wait"
        retry = _Retry(self.server)
        while True:
            poll = WAIT_TIMEOUT if deadline is None else deadline - anyio.current_time()
            if poll <= 0:
                break
            try:
                return await self._get(
                    path,
                    params={"for": what.value, "timeout": repr(poll)},
                    # the service answers a wait that timed out itself; a little longer
                    # for that answer to arrive
                    deadlines=httpx.Timeout(CLIENT_TIMEOUT, read=poll + CLIENT_GRACE),
                )
            except ServiceError as exc:
                if exc.error_code != ErrorCode.TIMEOUT.value:
                    raise
                # without a timeout of our own: the next long poll
            except ServiceUnreachable as exc:
                # the service restarted or went: a waiter keeps waiting, as the library's
                # waiters do while containerd is away
                await retry.after(exc, limit=None if deadline is None else deadline)
        goal = "to run" if what is WaitFor.RUNNING else "to stop"
        raise WaitTimedOut(
            f"timed out after {timeout:g}s waiting for instance {instance_id} {goal}"
        )

    # --- following ---------------------------------------------------------------------------

    def changes(
        self, since: int | None = None, *, initial: bool = False, feed: str | None = None
    ) -> Changes:
        """Follow the service's changes: `async for change in w.changes(): ...`.

        `since`/`feed`: resume after that `seq` of that feed (a `Changes`' `.seq` and `.feed`
        of an earlier run); None starts now. `initial`: first the workspaces already there
        (as `watch --initial`), then a `Synced`. Also an async context manager, which closes
        the stream at its end.
        """
        return Changes(self, since=since, initial=initial, feed=feed)

    # --- HTTP ------------------------------------------------------------------------------

    async def _get(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        deadlines: httpx.Timeout | None = None,
    ) -> Any:
        try:
            response = await self._http.get(
                path,
                params=params,
                timeout=deadlines if deadlines is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code != 200:
            raise _error(response)
        return _json(response)

    def _unreachable(self, exc: httpx.TransportError) -> ServiceUnreachable:
        if isinstance(exc, httpx.TimeoutException):
            return ServiceUnreachable(
                f"the ws-watcher service at {self.server} did not answer in time"
            )
        return ServiceUnreachable(
            f"no ws-watcher service at {self.server} ({exc or type(exc).__name__})"
        )

    async def _stream(self, params: Mapping[str, str]) -> httpx.Response:
        request = self._http.build_request(
            "GET", "/v1/watch", params=params, timeout=httpx.Timeout(CLIENT_TIMEOUT, read=None)
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code != 200:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise _error(response)
        return response


class Changes:
    """The service's changes as they come (see `RemoteWatcher.changes`).

    `seq` is the last sequence number read and `feed` the feed it belongs to: pass both to
    `changes(since=..., feed=...)` to resume later, in another connection or process.
    """

    def __init__(
        self, remote: RemoteWatcher, *, since: int | None, initial: bool, feed: str | None
    ) -> None:
        self._remote = remote
        self.seq = since
        self.feed = feed
        self._initial = initial
        self._fresh = since is None
        self._synced = False
        self._response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None
        self._pending: deque[FeedItem] = deque()
        #: the lines of a state (no `seq`), held until the `synced` line that ends it: a
        #: state cut off by a dropped connection is sent whole again, never twice in part
        self._state: list[Change] = []
        self._connected = False

    def __aiter__(self) -> Changes:
        return self

    async def __anext__(self) -> FeedItem:
        while not self._pending:
            await self._fill()
        return self._pending.popleft()

    def take_ready(self) -> list[FeedItem]:
        """Everything already read, without waiting: a consumer that writes in batches
        takes the rest of a burst with one call."""
        ready = list(self._pending)
        self._pending.clear()
        return ready

    async def __aenter__(self) -> Changes:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the stream (a `Changes` is then done)."""
        await self._drop()

    async def _fill(self) -> None:
        if self._lines is None:
            await self._open()
        assert self._lines is not None
        try:
            text = await self._lines.__anext__()
        except StopAsyncIteration:
            log.info("the ws-watcher service at %s ended the stream; resuming", self._remote.server)
            await self._drop()
            return
        except httpx.TransportError as exc:
            log.warning(
                "lost the ws-watcher service at %s (%s); resuming", self._remote.server, exc
            )
            await self._drop()
            return
        if text:
            self._read(text)

    async def _open(self) -> None:
        retry = _Retry(self._remote.server)
        while True:
            params = {"initial": "1" if self._initial else "0"}
            if self.seq is not None:
                params["since"] = str(self.seq)
                if self.feed:
                    params["feed"] = self.feed
            try:
                self._response = await self._remote._stream(params)
                break
            except ServiceUnreachable as exc:
                if not self._connected:
                    raise  # never reached: a wrong address is a mistake to report
                await retry.after(exc, limit=None)
        self._connected = True
        self.feed = self._response.headers.get(FEED_HEADER) or self.feed
        self._lines = self._response.aiter_lines()

    async def _drop(self) -> None:
        self._state.clear()
        lines, response = self._lines, self._response
        self._lines = self._response = None
        with anyio.CancelScope(shield=True):  # closing must finish, even while cancelled
            if lines is not None:
                await lines.aclose()  # type: ignore[attr-defined]
            if response is not None:
                await response.aclose()

    def _read(self, text: str) -> None:
        try:
            obj = json.loads(text)
        except ValueError:
            raise WireError(f"/v1/watch: a line that is not JSON: {text[:80]!r}") from None
        if not isinstance(obj, dict):
            raise WireError("/v1/watch: a line that is not a JSON object")
        seq = obj.get(SEQ)
        if seq is None:  # the state that opens a stream: held until its `synced`
            self._state.append(change_from_json(obj))
            return
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise WireError(f"/v1/watch: seq {seq!r} is not a number")
        if obj.get("event") == RESYNC_REQUIRED:
            since = obj.get("since")
            item: FeedItem = ResyncRequired(
                ts=float(obj.get("ts", 0.0)),
                seq=seq,
                since=since if isinstance(since, int) else None,
                reason=str(obj.get("reason", "")),
            )
            self._state.clear()
        else:
            change = change_from_json(obj, initial=self._fresh and not self._synced)
            if isinstance(change, Synced):
                self._synced = True
            self._pending.extend(self._state)
            self._state.clear()
            item = change
        self.seq = seq
        self._pending.append(item)


class _Retry:
    """Back-off between attempts to reach the service again; one warning per outage."""

    def __init__(self, server: str) -> None:
        self._server = server
        self._delay = BACKOFF_INITIAL
        self._warned = False

    async def after(self, exc: Exception, *, limit: float | None) -> None:
        if not self._warned:
            log.warning("%s; trying again", exc)
            self._warned = True
        delay = self._delay
        if limit is not None:
            delay = max(0.0, min(delay, limit - anyio.current_time()))
        await anyio.sleep(delay)  # back-off, not synchronisation: nothing to wait on
        self._delay = min(self._delay * 2, BACKOFF_MAX)


def _segment(id: str) -> str:
    """An id as one path segment (percent-encoded: an id is any text, "/" included)."""
    return quote(id, safe="")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise WireError(f"{response.request.url.path}: the answer is not JSON") from None


def _error(response: httpx.Response) -> WatcherError:
    """The library's error for an error answer."""
    try:
        body = response.json()
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("error") if isinstance(body, dict) else None
    message = str(message or f"HTTP {response.status_code} from {response.request.url.path}")
    if code == ErrorCode.UNKNOWN_ID.value:
        return UnknownId(message)
    if code == ErrorCode.BAD_REQUEST.value:
        return UsageError(message)
    if code == ErrorCode.UNAVAILABLE.value:
        return ConnectError(message)
    if code == ErrorCode.CONTAINERD_ERROR.value:
        return ContainerdError(message)
    return ServiceError(message, status=response.status_code, error_code=code)
