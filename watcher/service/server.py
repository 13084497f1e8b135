"""`ws-watcher serve`, the library side: one watcher, its feed, and hypercorn's trio worker
serving the API over the sockets of `listeners`.

Synopsis::

    async with trio.open_nursery() as nursery:
        serving = await nursery.start(serve_node, Settings(address=...), ServiceSettings())
        print(serving.socket, serving.listen)       # answering from here on
        ...
        nursery.cancel_scope.cancel()               # ends it: connections cut, socket removed

Order, and why: the sockets are made first (a socket in use or a port taken is reported
before containerd is asked anything, and clients that connect early queue in the backlog);
the feed subscribes to the watcher before its first sync (so the feed starts with it); the
watcher syncs (a containerd that cannot be reached raises `ConnectError`, as
`open_watcher` does); then hypercorn serves, and `started(Serving)` says so.

Cancellation ends everything at once: streams and waits are cut off (clients resume), the
connections of clients that stopped reading are shut down (`cut_connections`), and the
socket file is removed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from watcher._nursery import single_errors
from watcher.disclosure import Disclosure
from watcher.pathmap import PathMap
from watcher.published import Change
from watcher.settings import SERVICE_BACKLOG, ServiceSettings, Settings
from watcher.watcher import Watcher
from watcher.wire import change_json

from .api import Api
from .fanout import Fanout
from .feed import Encode, line
from .listeners import Listener, Listeners, bound, cut_connections
from .metrics import ServiceMetrics
from .protocol import SEQ

__all__ = ["Serving", "serve_node"]

log = logging.getLogger("watcher.service")
#: hypercorn's own log: warnings and errors only (its "Running on" names the temporary
#: socket path; we say where we serve ourselves)
_http_log = logging.getLogger("watcher.service.http")
_http_log.setLevel(logging.WARNING)
#: one line per request, at INFO (`--log-level info`)
_access_log = logging.getLogger("watcher.service.access")


@dataclass(frozen=True, slots=True, kw_only=True)
class Serving:
    """A running service: what it serves, and where."""

    watcher: Watcher
    api: Api
    fanout: Fanout
    #: the unix socket's path
    socket: str
    #: `host:port` of `--listen` / `--metrics-listen` as bound (a port 0 asked becomes one)
    listen: str | None
    metrics_listen: str | None
    #: the sockets themselves (`listeners.cut_connections(serving.listeners.all())` drops
    #: every client's connection: tests of resuming)
    listeners: Listeners


async def serve_node(
    settings: Settings,
    service: ServiceSettings,
    *,
    task_status: trio.TaskStatus[Serving] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Watch containerd as `settings` say and serve the API as `service` says, until
    cancelled; `started(Serving)` once the API answers.

    Raises `UsageError` for sockets that cannot be made, `ConnectError` when containerd
    cannot be reached for the first sync.
    """
    with bound(service) as listeners:
        watcher = Watcher(settings)
        path_map = settings.path_map
        with watcher.changes() as changes, single_errors():
            fanout = Fanout(
                watcher,
                changes,
                history=service.feed_history,
                batch=service.feed_batch,
                encode=_encoder(path_map, service.disclosure),
            )
            metrics = ServiceMetrics(fanout.feed)
            watcher.metrics.include(metrics.collector())
            api = Api(watcher, fanout, metrics, path_map=path_map, disclosure=service.disclosure)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fanout.run)
                await nursery.start(watcher.serve)
                nursery.start_soon(_cut_when_cancelled, listeners.all())
                await nursery.start(_http, api, listeners.api)
                if listeners.metrics:
                    probes = Api(
                        watcher, fanout, metrics, path_map=path_map,
                        disclosure=service.disclosure, probes_only=True,
                    )  # fmt: skip
                    await nursery.start(_http, probes, listeners.metrics)
                tcp = listeners.api[1:]
                serving = Serving(
                    watcher=watcher,
                    api=api,
                    fanout=fanout,
                    socket=service.socket,
                    listen=tcp[0].name if tcp else None,
                    metrics_listen=listeners.metrics[0].name if listeners.metrics else None,
                    listeners=listeners,
                )
                log.info("serving the API on %s", ", ".join(item.name for item in listeners.all()))
                task_status.started(serving)


def _encoder(path_map: PathMap, disclosure: Disclosure) -> Encode:
    """A change as a feed line: the `watch` line, with its `seq` first."""

    def encode(change: Change, seq: int | None) -> bytes:
        obj = change_json(change, path_map, disclosure)
        return line(obj if seq is None else {SEQ: seq, **obj})

    return encode


async def _http(
    app: Api,
    listeners: list[Listener],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """hypercorn's trio worker serving `app` on `listeners` (each handed over as a duplicate
    of its descriptor: hypercorn closes its copy, `bound` ours)."""
    config = Config()
    config.bind = [f"fd://{os.dup(item.sock.fileno())}" for item in listeners]
    config.backlog = SERVICE_BACKLOG
    config.errorlog = _http_log
    config.accesslog = _access_log
    config.include_server_header = False
    await serve(app, config, mode="asgi", task_status=task_status)


async def _cut_when_cancelled(listeners: list[Listener]) -> None:
    try:
        await trio.sleep_forever()
    finally:
        cut = cut_connections(listeners)
        if cut:
            log.info("stopping: closed %d connections", cut)
