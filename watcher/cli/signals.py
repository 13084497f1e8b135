"""SIGINT and SIGTERM end every command promptly and cleanly.

Without a handler, SIGTERM killed `wait` and `ls` outright (killed by signal 15, nothing cleaned up)
and `watch` noticed it only between two changes. Here a task receives both signals and
cancels the command's block at once; the command says how it ends (`watch` and the demo
exit 0, the others 128 + the signal's number, 130 for Ctrl-C, as shells do).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

__all__ = ["Interrupt", "cancelled_on_signal"]

log = logging.getLogger("watcher.cli")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Interrupt:
    """Which signal cancelled the block (None while none came)."""

    signum: int | None = None

    @property
    def exit_status(self) -> int:
        return 128 + (self.signum or 0)


@asynccontextmanager
async def cancelled_on_signal() -> AsyncIterator[Interrupt]:
    """The block runs until it ends or SIGINT/SIGTERM cancels it; then `.signum` is set."""
    interrupt = Interrupt()
    async with trio.open_nursery() as nursery:

        async def receive(*, task_status: trio.TaskStatus[None]) -> None:
            with trio.open_signal_receiver(*SIGNALS) as signals:
                task_status.started()
                async for signum in signals:
                    log.info("%s: stopping", signal.Signals(signum).name)
                    interrupt.signum = signum
                    nursery.cancel_scope.cancel()
                    return

        await nursery.start(receive)
        yield interrupt
        nursery.cancel_scope.cancel()
