"""The commands a running `ws-watcher serve` answers (`--server`, `$WS_WATCHER_SERVER`):
`wait`, `wait-stop`, `ls`, `inspect` and `watch`, with the same output and exit statuses as
when they ask containerd themselves (`commands`).

Thin as `commands`: the service's answers are decoded into the library's records
(`watcher.remote`) and printed by the same `output` functions. What the service sent is
already what may leave (its own `--show-annotation` and `--path-map` applied), so it is
printed as it came: every annotation it sent, paths as it mapped them.
"""

from __future__ import annotations

import logging
import sys
from functools import partial

from watcher.disclosure import Disclosure
from watcher.errors import UnknownId
from watcher.published import Change, Workspace
from watcher.remote import ResyncRequired, WaitTimedOut, connect

from . import output
from .args import Command, Options
from .commands import EXIT_OK, EXIT_TIMEOUT, EXIT_UNKNOWN, Write, interruptible, printed
from .signals import cancelled_on_signal
from .writer import LineWriter

__all__ = ["run"]

log = logging.getLogger("watcher.cli")

#: the service has applied its disclosure rule: print every annotation it sent (a key that
#: looks like a credential is still never printed: `Disclosure.allows` refuses those first)
AS_SENT = Disclosure(frozenset(), ("",))


async def run(opts: Options) -> int:
    """Run the command of `opts` against the service at `opts.server`."""
    assert opts.server is not None
    if opts.command is Command.WATCH:
        return await watch(opts)
    command = {
        Command.WAIT: wait,
        Command.WAIT_STOP: wait_stop,
        Command.LS: ls,
        Command.INSPECT: inspect,
    }[opts.command]
    return await interruptible(partial(command, opts))


def _as_sent(ws: Workspace) -> output.JSON:
    """The workspace object as the service sent it (its path map and rule applied)."""
    return output.workspace_json(ws, None, AS_SENT)


async def wait(opts: Options, write: Write | None = None) -> int:
    write = write or LineWriter().write
    assert opts.server is not None
    async with connect(opts.server) as service:
        try:
            ws = await service.wait_for_container(opts.instance_id, timeout=opts.timeout)
        except WaitTimedOut as exc:
            print(f"ws-watcher: {exc}", file=sys.stderr)
            return EXIT_TIMEOUT
    await write(printed([ws], opts, array=False, as_json=_as_sent))
    return EXIT_OK


async def wait_stop(opts: Options) -> int:
    assert opts.server is not None
    async with connect(opts.server) as service:
        try:
            await service.wait_for_container_stop(opts.instance_id, timeout=opts.timeout)
        except WaitTimedOut as exc:
            print(f"ws-watcher: {exc}", file=sys.stderr)
            return EXIT_TIMEOUT
    return EXIT_OK


async def ls(opts: Options, write: Write | None = None) -> int:
    write = write or LineWriter().write
    assert opts.server is not None
    async with connect(opts.server) as service:
        found = list((await service.workspaces()).values())
    await write(printed(found, opts, array=True, as_json=_as_sent))
    return EXIT_OK


async def inspect(opts: Options, write: Write | None = None) -> int:
    write = write or LineWriter().write
    assert opts.server is not None
    async with connect(opts.server) as service:
        try:
            got = await service.inspect(opts.target)
        except UnknownId:
            print(f"ws-watcher: no workspace {opts.target!r} on this node", file=sys.stderr)
            return EXIT_UNKNOWN

    def as_json(ws: Workspace) -> output.JSON:
        return output.inspect_json(ws, got.task, got.image, None, AS_SENT)

    await write(printed([got.workspace], opts, array=False, as_json=as_json))
    return EXIT_OK


async def watch(opts: Options, write: Write | None = None) -> int:
    """Lines as `commands.watch` prints them, until SIGINT/SIGTERM (exit 0). A service that
    restarts is resumed; one that cannot give what was missed is warned about on stderr
    (then `ls` tells the state), as a lagging follower is."""
    write = write or LineWriter().write
    assert opts.server is not None

    def render(change: Change) -> str:
        if opts.output is output.Format.TEXT:
            return output.pretty_change(change)
        return output.dumps(output.change_json(change, None, AS_SENT))

    async with (
        cancelled_on_signal(),
        connect(opts.server) as service,
        service.changes(initial=opts.initial) as changes,
    ):
        async for first in changes:
            lines = []
            for item in (first, *changes.take_ready()):
                if isinstance(item, ResyncRequired):
                    log.warning("changes were missed (%s); `ls` shows the state now", item.reason)
                else:
                    lines.append(render(item))
            await write(lines)
    return EXIT_OK
