"""The API's routes and handlers: the CLI's `ls`, `inspect`, `wait`, `wait-stop` and `watch`,
answered from the one watcher of the process (see `protocol` for the contract).

Synopsis::

    metrics = ServiceMetrics(fanout.feed)
    app = Api(watcher, fanout, metrics, path_map=settings.path_map, disclosure=disclosure)
    await hypercorn.trio.serve(app, config)             # or Api(..., probes_only=True)

The routes are data (`_routes`): a path pattern per handler, `{id}` matching one segment.
Every handler answers from the watcher's index, except `inspect`'s task and image, which
are asked of containerd as the CLI asks them. What leaves is `watcher.wire`'s JSON under
`watcher.disclosure`'s rule, exactly as the CLI prints it.

Waits and streams run inside `cancelled_on_disconnect`: a client that goes away cancels its
wait (`waits` counts those in flight) or ends its stream (`followers`). Every request is
counted in `metrics` (`ServiceMetrics`) by its route's pattern and its status, as its answer
starts (before a client can read it), or as it ends unanswered.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope

from watcher._nursery import single_errors
from watcher.containerd_records import ImageInfo, TaskRecord
from watcher.disclosure import Disclosure
from watcher.errors import ConnectError, ContainerdError, NotFound, UnknownId, UsageError
from watcher.pathmap import PathMap
from watcher.published import InstanceId, Workspace
from watcher.settings import check_id
from watcher.watcher import Watcher
from watcher.wire import JSONValue, inspect_json, workspace_json

from . import probes
from .asgi import (
    LineStream,
    Refusal,
    Request,
    answer_error,
    answer_json,
    cancelled_on_disconnect,
    request_of,
)
from .fanout import Fanout
from .metrics import UNROUTED, Outcome, ServiceMetrics
from .protocol import (
    FEED_HEADER,
    ErrorCode,
    WaitFor,
    parse_flag,
    parse_since,
    parse_timeout,
)

__all__ = ["Api"]

log = logging.getLogger("watcher.service")

Params = Mapping[str, str]
Handler = Callable[[Request, Params, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]
#: a path segment that matches any one segment, passed to the handler by this name
ID = "{id}"


class Api:
    """The ASGI app of `ws-watcher serve` (see the module's synopsis).

    `probes_only`: only /healthz, /readyz and /metrics (the `--metrics-listen` socket).
    """

    def __init__(
        self,
        watcher: Watcher,
        fanout: Fanout,
        metrics: ServiceMetrics,
        *,
        path_map: PathMap,
        disclosure: Disclosure,
        probes_only: bool = False,
    ) -> None:
        self._watcher = watcher
        self._fanout = fanout
        self.metrics = metrics
        self._path_map = path_map
        self._disclosure = disclosure
        #: waits in flight, and streams being served (tests and operators await these; the
        #: metrics' own, shared by the API and its probes-only listener)
        self.waits = metrics.waits
        self.followers = metrics.followers
        self._routes: list[tuple[tuple[str, ...], Handler]] = [
            (("healthz",), self._probe(probes.healthz)),
            (("readyz",), self._probe(probes.readyz)),
            (("metrics",), self._probe(probes.metrics)),
        ]
        if not probes_only:
            self._routes += [
                (("v1", "workspaces"), self.list_workspaces),
                (("v1", "workspaces", ID), self.get_workspace),
                (("v1", "workspaces", ID, "wait"), self.wait),
                (("v1", "watch"), self.watch),
            ]

    # --- ASGI --------------------------------------------------------------------------------

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            tracked = _Tracked(send, self.metrics)
            try:
                request = request_of(scope)
                with single_errors():  # one error out of the disconnect watcher's nursery
                    await self._dispatch(request, receive, tracked)
            except Exception as exc:  # every error becomes an answer, or a 500 and a log line
                await self._fail(exc, scope["method"], scope["path"], tracked)
            finally:
                if not tracked.started:  # its client left first, or the server stopped
                    self.metrics.answered(tracked.route, None)
        # websocket: not served; returning without accepting makes hypercorn refuse it

    async def _dispatch(
        self, request: Request, receive: ASGIReceiveCallable, send: _Tracked
    ) -> None:
        for pattern, handler in self._routes:
            params = _match(pattern, request.path)
            if params is None:
                continue
            send.route = "/" + "/".join(pattern)
            if request.method != "GET":
                raise Refusal(
                    ErrorCode.METHOD_NOT_ALLOWED,
                    f"{request.method} is not allowed here (the API is read-only: GET)",
                    headers=[(b"allow", b"GET")],
                )
            await handler(request, params, receive, send)
            return
        raise Refusal(ErrorCode.NOT_FOUND, f"no such route: /{'/'.join(request.path)}")

    async def _fail(self, exc: Exception, method: str, path: str, send: _Tracked) -> None:
        if isinstance(exc, Refusal):
            code, message, headers = exc.code, str(exc), exc.headers
        elif isinstance(exc, UnknownId):
            code, message, headers = ErrorCode.UNKNOWN_ID, str(exc), ()
        elif isinstance(exc, UsageError):
            code, message, headers = ErrorCode.BAD_REQUEST, str(exc), ()
        elif isinstance(exc, ConnectError):
            code, message, headers = ErrorCode.UNAVAILABLE, str(exc), ()
        elif isinstance(exc, ContainerdError):
            code, message, headers = ErrorCode.CONTAINERD_ERROR, str(exc), ()
        else:
            log.exception("%s %s failed", method, path)
            code, message, headers = ErrorCode.INTERNAL, "internal error (logged)", ()
        if send.started:
            # a stream already under way cannot turn into an error: ending the handler ends
            # the connection, and the client resumes with `since`
            log.warning("%s %s ended by an error: %s", method, path, exc)
            return
        await answer_error(send, code, message, headers)

    def _probe(
        self, probe: Callable[[Watcher, Request, ASGISendCallable], Awaitable[None]]
    ) -> Handler:
        async def handler(
            request: Request, params: Params, receive: ASGIReceiveCallable, send: ASGISendCallable
        ) -> None:
            _only_params(request)
            await probe(self._watcher, request, send)

        return handler

    # --- the workspaces --------------------------------------------------------------------------

    def _json(self, ws: Workspace) -> JSONValue:
        return workspace_json(ws, self._path_map, self._disclosure)

    async def list_workspaces(
        self, request: Request, params: Params, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """`ls --json`: newest container per instance, by instance id then container id."""
        _only_params(request)
        found = sorted(
            self._watcher.workspaces().values(), key=lambda ws: (ws.instance_id, ws.container_id)
        )
        await answer_json(send, [self._json(ws) for ws in found])

    async def get_workspace(
        self, request: Request, params: Params, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """`inspect ID`: by instance id, else container id; with task and image (null when
        containerd has none). `details=0`: the workspace alone, from the index (no call to
        containerd)."""
        _only_params(request, "details")
        details = parse_flag("details", request.query.get("details", "1"))
        target = check_id(params["id"], "instance or container id")
        ws = self._watcher.workspaces().get(InstanceId(target))
        if ws is None:
            try:
                ws = self._watcher.container(target)
            except UnknownId:
                raise UnknownId(f"no workspace {target!r} on this node") from None
        if not details:
            await answer_json(send, self._json(ws))
            return
        task: TaskRecord | None = None
        image: ImageInfo | None = None
        async with cancelled_on_disconnect(receive) as client:
            with contextlib.suppress(NotFound):
                task = await self._watcher.task_info(ws.container_id)
            with contextlib.suppress(NotFound):
                image = await self._watcher.image_info(ws.container_id)
        if not client.gone:
            obj = inspect_json(ws, task, image, self._path_map, self._disclosure)
            await answer_json(send, obj)

    async def wait(
        self, request: Request, params: Params, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """`wait` (`for=running`, the workspace) or `wait-stop` (`for=gone`) as a long poll
        of `timeout` (60 s unless given); 504 `timeout` when it passes first."""
        _only_params(request, "for", "timeout")
        instance_id = check_id(params["id"], "instance id")
        try:
            what = WaitFor(request.query.get("for", WaitFor.RUNNING.value))
        except ValueError:
            raise Refusal(ErrorCode.BAD_REQUEST, "for must be running or gone") from None
        timeout = parse_timeout(request.query.get("timeout"))
        found: Workspace | None = None
        with self.metrics.waiting(what) as waiting:
            async with cancelled_on_disconnect(receive) as client:
                with trio.move_on_after(timeout) as deadline:
                    if what is WaitFor.RUNNING:
                        found = await self._watcher.wait_for_container(instance_id)
                    else:
                        await self._watcher.wait_for_container_stop(instance_id)
            if not client.gone:
                waiting.outcome = Outcome.TIMEOUT if deadline.cancelled_caught else Outcome.DONE
        if client.gone:
            return  # nobody left to answer; the wait was cancelled with the block
        if deadline.cancelled_caught:
            goal = "to run" if what is WaitFor.RUNNING else "to stop"
            raise Refusal(
                ErrorCode.TIMEOUT,
                f"timed out after {timeout:g}s waiting for instance {instance_id} {goal}",
            )
        if found is not None:
            await answer_json(send, self._json(found))
        else:
            await answer_json(send, {"instance_id": instance_id, "gone": True})

    async def watch(
        self, request: Request, params: Params, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """`watch` as JSON lines with a `seq` each; `since=N&feed=F` resumes after N."""
        _only_params(request, "since", "initial", "feed")
        since_text = request.query.get("since")
        since = None if since_text is None else parse_since(since_text)
        initial = parse_flag("initial", request.query.get("initial", "0"))
        feed = self._fanout.feed
        cursor, first = feed.start(
            since=since, epoch=request.query.get("feed") or None, initial=initial, now=time.time()
        )
        stream = LineStream(send)
        with self.metrics.following():
            async with cancelled_on_disconnect(receive):
                await stream.open([(FEED_HEADER.encode(), feed.epoch.encode())])
                await stream.write(first)
                while (step := await self._fanout.next(cursor, initial=initial)) is not None:
                    cursor, lines = step
                    # a client that does not read holds only this task here: the feed and
                    # every other follower go on without it
                    await stream.write(lines)
                await stream.close()  # the server is stopping: a clean end, then resume


class _Tracked:
    """The ASGI `send`, noting whether the response has started (then no error answer), and
    counting the request by its route (set by the dispatch) and status as the answer starts."""

    def __init__(self, send: ASGISendCallable, metrics: ServiceMetrics) -> None:
        self._send = send
        self._metrics = metrics
        self.started = False
        self.route = UNROUTED

    async def __call__(self, message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self._metrics.answered(self.route, message["status"])
        await self._send(message)


def _match(pattern: tuple[str, ...], path: tuple[str, ...]) -> dict[str, str] | None:
    if len(pattern) != len(path):
        return None
    params: dict[str, str] = {}
    for want, got in zip(pattern, path, strict=True):
        if want == ID:
            params["id"] = got
        elif want != got:
            return None
    return params


def _only_params(request: Request, *known: str) -> None:
    """A query parameter the route does not take is a mistake (`?timout=5`), not ignored."""
    unknown = sorted(set(request.query) - set(known))
    if unknown:
        takes = f"it takes {', '.join(known)}" if known else "it takes none"
        raise Refusal(ErrorCode.BAD_REQUEST, f"unknown query parameter {unknown[0]!r} ({takes})")


async def _lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """ASGI's lifespan protocol: nothing to set up or tear down (the server owns the watcher)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
