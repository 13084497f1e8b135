"""The commands' trio bodies: settings in, library calls, lines out.

Thin on purpose: every decision about *what* to print lives in `follow` and `output`; every
decision about containerd lives in the library. Each command returns its exit status; a
user's mistake surfaces as the library's `UsageError`/`ConnectError`, which `main` reports.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import TextIO

import trio

from watcher.changes import Lagged
from watcher.errors import NotFound
from watcher.records import Change, ImageInfo, InstanceId, TaskRecord
from watcher.watcher import Settings, Watcher, open_watcher

from . import output
from .args import Options
from .follow import Follower

__all__ = [
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNKNOWN",
    "inspect",
    "ls",
    "settings_of",
    "wait",
    "wait_stop",
    "watch",
]

log = logging.getLogger("watcher.cli")

EXIT_OK = 0
EXIT_TIMEOUT = 1
EXIT_UNKNOWN = 1

Emit = Callable[[str], None]


def settings_of(opts: Options) -> Settings:
    """The library's settings for these options (raises `UsageError` for a bad value)."""
    return Settings(
        address=opts.address,
        namespace=opts.namespace,
        proc_root=opts.proc,
        path_map=opts.path_map,
        relist_interval=opts.relist_interval,
    )


def line_printer(stream: TextIO | None = None) -> Emit:
    """Print one line and flush it at once: consumers read `watch` line by line."""

    def emit(line: str) -> None:
        out = stream or sys.stdout
        out.write(line + "\n")
        out.flush()

    return emit


async def _cancel_on_signal(scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.info("%s: stopping", signal.Signals(signum).name)
            scope.cancel()
            return


async def follow_changes(
    settings: Settings,
    render: Callable[[Change], str | None],
    emit: Emit,
    *,
    initial: bool,
    task_status: trio.TaskStatus[Watcher] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a watcher and emit `render(change)` for each change, in `Follower` order.

    Subscribes before the watcher starts, so the initial sync's changes are seen; runs until
    cancelled. `started(watcher)` once the initial sync is done. A follower that falls
    behind (`Lagged`) is warned about on stderr and carries on.
    """
    watcher = Watcher(settings)
    follower = Follower(initial=initial)
    with watcher.changes() as changes:  # before serving: the initial sync's changes too
        async with trio.open_nursery() as nursery:
            task_status.started(await nursery.start(watcher.serve))
            try:
                async for change in changes:
                    if isinstance(change, Lagged):
                        log.warning(
                            "too slow: %d changes were dropped; `ls` shows the state now",
                            change.missed,
                        )
                        continue
                    for item in follower.feed(change):
                        line = render(item)
                        if line is not None:
                            emit(line)
            finally:
                watcher.close()
                nursery.cancel_scope.cancel()


async def watch(opts: Options, emit: Emit | None = None) -> int:
    """`ws-watcher watch`: one JSON line per change until SIGINT/SIGTERM (then exit 0)."""
    settings = settings_of(opts)
    emit = emit or line_printer()

    def render(change: Change) -> str:
        return output.dumps(output.change_json(change, opts.path_map, opts.disclosure))

    async with trio.open_nursery() as nursery:
        await nursery.start(_cancel_on_signal, nursery.cancel_scope)
        await follow_changes(settings, render, emit, initial=opts.initial)
    return EXIT_OK


async def wait(opts: Options, emit: Emit | None = None) -> int:
    """`ws-watcher wait ID`: print the workspace once it runs (0), or time out (1)."""
    emit = emit or line_printer()
    with trio.move_on_after(opts.timeout):
        async with open_watcher(settings=settings_of(opts)) as w:
            ws = await w.wait_for_container(opts.instance_id)
        emit(output.dumps(output.workspace_json(ws, opts.path_map, opts.disclosure)))
        return EXIT_OK
    _timed_out(opts, "to run")
    return EXIT_TIMEOUT


async def wait_stop(opts: Options) -> int:
    """`ws-watcher wait-stop ID`: exit 0 once the workspace container is gone, 1 on timeout."""
    with trio.move_on_after(opts.timeout):
        async with open_watcher(settings=settings_of(opts)) as w:
            await w.wait_for_container_stop(opts.instance_id)
        return EXIT_OK
    _timed_out(opts, "to stop")
    return EXIT_TIMEOUT


def _timed_out(opts: Options, what: str) -> None:
    print(
        f"ws-watcher: timed out after {opts.timeout:g}s waiting for instance "
        f"{opts.instance_id} {what}",
        file=sys.stderr,
    )


async def ls(opts: Options, emit: Emit | None = None) -> int:
    """`ws-watcher ls [--json]`: the workspaces now, newest container per instance."""
    emit = emit or line_printer()
    async with open_watcher(settings=settings_of(opts)) as w:
        found = sorted(w.workspaces().values(), key=lambda ws: (ws.instance_id, ws.container_id))
    if opts.json:
        rows: list[output.JSONValue] = [
            output.workspace_json(ws, opts.path_map, opts.disclosure) for ws in found
        ]
        emit(output.dumps(rows))
    else:
        emit(output.table(found, now=time.time()))
    return EXIT_OK


async def inspect(opts: Options, emit: Emit | None = None) -> int:
    """`ws-watcher inspect ID`: the record plus task and image info as one JSON object.

    ID is an instance id or a container id; exit 1 (one line on stderr) when neither is on
    the node. Task and image are null when containerd has none (a task that ended, an image
    that was removed).
    """
    emit = emit or line_printer()
    async with open_watcher(settings=settings_of(opts)) as w:
        ws = w.workspaces().get(InstanceId(opts.instance_id))
        if ws is None:
            try:
                ws = w.workspace(opts.instance_id)
            except NotFound:
                print(
                    f"ws-watcher: no workspace {opts.instance_id!r} on this node", file=sys.stderr
                )
                return EXIT_UNKNOWN
        task: TaskRecord | None = None
        image: ImageInfo | None = None
        with contextlib.suppress(NotFound):
            task = await w.task_info(ws.container_id)
        with contextlib.suppress(NotFound):
            image = await w.image_info(ws.container_id)
    emit(output.dumps(output.inspect_json(ws, task, image, opts.path_map, opts.disclosure)))
    return EXIT_OK
