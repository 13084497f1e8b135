"""`ws-watcher`: the command line over the watcher library.

Thin, as kopf's: parse (`args`) → settings → run the library (`commands`, `demo`) → print
(`output`). This module only wires them and turns outcomes into exit statuses:

* 0 done (also `watch` stopped by SIGINT/SIGTERM: a signal is how a watch ends, so a
  Ctrl-C that comes before its handler is in place, while modules load, is 0 too), 1 timed
  out (`wait`, `wait-stop`) or unknown (`inspect`);
* 2 a user's mistake: a bad option (argparse: usage line + one line), or the library's
  `UsageError` / `ConnectError` (socket missing, not a socket, permission denied, not
  containerd) and `ContainerdError` before the first sync: one line on stderr, no traceback;
* 128 + the signal when SIGINT/SIGTERM ends another command (`commands.interruptible`),
  and 130 for a Ctrl-C that reaches `main` itself: while the options are read (any
  command), or before the command's handler is in place. A SIGTERM that early ends the
  process by the signal's default action (the shell sees 143 all the same);
* anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from functools import partial

import trio

from watcher.errors import ConnectError, ContainerdError, UsageError

from . import logs
from .args import Command, Options, build_parser, parse

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "main", "run"]

EXIT_USAGE = 2
#: Ctrl-C of a command that is not meant to run until interrupted (the shell's convention)
EXIT_INTERRUPTED = 130
#: errors that mean "the user pointed us at the wrong thing", not "ws-watcher is broken"
USER_ERRORS = (UsageError, ConnectError, ContainerdError)


def completion(opts: Options) -> int:
    """`ws-watcher completion SHELL`: the script on stdout (no trio, no containerd)."""
    from .completion import script

    sys.stdout.write(script(build_parser(os.environ), opts.shell))
    sys.stdout.flush()
    return 0


async def run(opts: Options) -> int:
    """Run the command of `opts`; its exit status. Raises the library's errors."""
    if opts.command is Command.SERVE:
        from .serve import serve

        return await serve(opts)
    if opts.server is not None:  # a running `ws-watcher serve` answers instead of containerd
        from . import remote

        return await remote.run(opts)
    from . import commands  # the library (grpc, protobuf) only once the options are good

    if opts.command is Command.WATCH:
        return await commands.watch(opts)
    if opts.command is Command.WAIT:
        return await commands.interruptible(partial(commands.wait, opts))
    if opts.command is Command.WAIT_STOP:
        return await commands.interruptible(partial(commands.wait_stop, opts))
    if opts.command is Command.LS:
        return await commands.interruptible(partial(commands.ls, opts))
    if opts.command is Command.INSPECT:
        return await commands.interruptible(partial(commands.inspect, opts))
    from .demo import demo

    return await demo(opts)


def _only(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups, else `exc`."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _stdout_gone() -> None:
    # a reader that went away (`ws-watcher watch | head -1`) ends us like a signal would;
    # point stdout at /dev/null so the interpreter's final flush cannot fail again
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _interrupted() -> int:
    print("ws-watcher: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """The `ws-watcher` console script; returns the exit status."""
    try:
        opts = parse(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:  # e.g. while --schemes names a FIFO nobody writes
        return _interrupted()
    logs.configure(opts.log_level, opts.log_format)
    try:
        if opts.command is Command.COMPLETION:
            return completion(opts)
        return trio.run(run, opts)
    except BaseException as raised:  # sorted below; anything unknown is re-raised as it is
        exc = _only(raised)
        if isinstance(exc, USER_ERRORS):
            print(f"ws-watcher: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(exc, BrokenPipeError):
            _stdout_gone()
            return 0
        if isinstance(exc, KeyboardInterrupt):
            # before `watch` has its own handler (modules still loading): its usual end all
            # the same, as the README says
            return 0 if opts.command in (Command.WATCH, Command.SERVE) else _interrupted()
        raise
