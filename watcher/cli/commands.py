"""The commands' trio bodies: settings in, library calls, lines out.

Thin on purpose: every decision about *what* to print lives in `follow` and `output`; every
decision about containerd lives in the library. Each command returns its exit status; a
user's mistake surfaces as the library's `UsageError`/`ConnectError`, which `main` reports.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

import trio

from watcher.containerd_records import ImageInfo, TaskRecord
from watcher.errors import NotFound
from watcher.published import Change, InstanceId, Lagged, Workspace
from watcher.settings import NriSettings
from watcher.watcher import Settings, Watcher, open_watcher

from . import output
from .args import Options
from .follow import Follower
from .signals import cancelled_on_signal
from .writer import LineWriter

__all__ = [
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNKNOWN",
    "inspect",
    "ls",
    "printed",
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
#: writes lines to stdout without blocking the loop (see `writer`); awaited
Write = Callable[[Sequence[str]], Awaitable[None]]


def settings_of(opts: Options) -> Settings:
    """The library's settings for these options (raises `UsageError` for a bad value)."""
    return Settings(
        address=opts.address,
        namespace=opts.namespace,
        proc_root=opts.proc,
        path_map=opts.path_map,
        relist_interval=opts.relist_interval,
        schemes=opts.schemes,
        nri=None if opts.nri_socket is None else NriSettings(socket=opts.nri_socket),
    )


def line_printer(stream: TextIO | None = None) -> Emit:
    """Print one line and flush it at once: consumers read `watch` line by line."""

    def emit(line: str) -> None:
        out = stream or sys.stdout
        out.write(line + "\n")
        out.flush()

    return emit


async def follow_changes(
    settings: Settings,
    render: Callable[[Change], str | None],
    write: Write,
    *,
    initial: bool,
    task_status: trio.TaskStatus[Watcher] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a watcher and write `render(change)` for each change, in `Follower` order.

    Subscribes before the watcher starts, so the initial sync's changes are seen; runs until
    cancelled. `started(watcher)` once the initial sync is done. Lines are written in
    batches (what a burst queued while the last write ran); while a write waits for a slow
    reader, changes queue in the library's bounded buffer, and a follower that falls behind
    that (`Lagged`) is warned about on stderr and carries on.
    """
    watcher = Watcher(settings)
    follower = Follower(initial=initial)
    with watcher.changes() as changes:  # before serving: the initial sync's changes too
        async with trio.open_nursery() as nursery:
            task_status.started(await nursery.start(watcher.serve))
            try:
                async for first in changes:
                    lines: list[str] = []
                    for change in (first, *changes.take_ready()):
                        if isinstance(change, Lagged):
                            log.warning(
                                "too slow: %d changes were dropped; `ls` shows the state now",
                                change.missed,
                            )
                            continue
                        for item in follower.feed(change):
                            line = render(item)
                            if line is not None:
                                lines.append(line)
                    await write(lines)
            finally:
                watcher.close()
                nursery.cancel_scope.cancel()


async def watch(opts: Options, write: Write | None = None) -> int:
    """`ws-watcher watch`: one JSON line (or `-o text`: a line for people) per change until
    SIGINT/SIGTERM (then exit 0)."""
    settings = settings_of(opts)
    write = write or LineWriter().write

    def render(change: Change) -> str:
        if opts.output is output.Format.TEXT:
            return output.pretty_change(change, opts.path_map)
        return output.dumps(output.change_json(change, opts.path_map, opts.disclosure))

    async with cancelled_on_signal():
        await follow_changes(settings, render, write, initial=opts.initial)
    return EXIT_OK


async def interruptible(command: Callable[[], Awaitable[int]]) -> int:
    """Run a one-shot command; SIGINT/SIGTERM end it at once with 128 + the signal."""
    async with cancelled_on_signal() as interrupt:
        return await command()
    print("ws-watcher: interrupted", file=sys.stderr)
    return interrupt.exit_status


async def wait(opts: Options, write: Write | None = None) -> int:
    """`ws-watcher wait ID`: print the workspace once it runs (0), or time out (1)."""
    write = write or LineWriter().write
    with trio.move_on_after(opts.timeout):
        async with open_watcher(settings=settings_of(opts)) as w:
            ws = await w.wait_for_container(opts.instance_id)
        await write(printed([ws], opts, array=False))
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


def printed(
    found: Sequence[Workspace],
    opts: Options,
    *,
    array: bool,
    as_json: Callable[[Workspace], output.JSON] | None = None,
) -> list[str]:
    """`found` printed as `-o` says; JSON and YAML objects are `as_json`'s (by default the
    workspace object, with `opts`' path map and disclosure rule). `--server`'s commands
    print with this too, with their own `as_json`."""
    return output.render(
        found,
        opts.output,
        now=time.time(),
        as_json=as_json or (lambda ws: output.workspace_json(ws, opts.path_map, opts.disclosure)),
        array=array,
    )


async def ls(opts: Options, write: Write | None = None) -> int:
    """`ws-watcher ls [-o FORMAT]`: the workspaces now, newest container per instance."""
    write = write or LineWriter().write
    async with open_watcher(settings=settings_of(opts)) as w:
        found = sorted(w.workspaces().values(), key=lambda ws: (ws.instance_id, ws.container_id))
    await write(printed(found, opts, array=True))
    return EXIT_OK


async def inspect(opts: Options, write: Write | None = None) -> int:
    """`ws-watcher inspect ID`: the record plus task and image info as one JSON object (or as
    `-o` says: YAML has them too, `wide` and `name` print the workspace only).

    ID is an instance id or a container id; exit 1 (one line on stderr) when neither is on
    the node. Task and image are null when containerd has none (a task that ended, an image
    that was removed).
    """
    write = write or LineWriter().write
    async with open_watcher(settings=settings_of(opts)) as w:
        ws = w.workspaces().get(InstanceId(opts.target))
        if ws is None:
            try:
                ws = w.container(opts.target)
            except NotFound:
                print(f"ws-watcher: no workspace {opts.target!r} on this node", file=sys.stderr)
                return EXIT_UNKNOWN
        task: TaskRecord | None = None
        image: ImageInfo | None = None
        with contextlib.suppress(NotFound):
            task = await w.task_info(ws.container_id)
        with contextlib.suppress(NotFound):
            image = await w.image_info(ws.container_id)

    def as_json(ws: Workspace) -> output.JSON:
        return output.inspect_json(ws, task, image, opts.path_map, opts.disclosure)

    await write(printed([ws], opts, array=False, as_json=as_json))
    return EXIT_OK
