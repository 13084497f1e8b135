"""`ws-watcher serve`: the node service's command line (the service is `watcher.service`).

Once the API answers it prints one JSON line, where it serves — handy when `--listen` asked
for port 0 — and then serves until SIGINT/SIGTERM, which end it at once with exit 0: waits
and streams are cut (clients resume), the socket file is removed.
"""

from __future__ import annotations

import time

import trio

from watcher.service.server import serve_node
from watcher.wire import dumps

from .args import Options
from .commands import EXIT_OK, Write, settings_of
from .signals import cancelled_on_signal
from .writer import LineWriter

__all__ = ["serve"]


async def serve(opts: Options, write: Write | None = None) -> int:
    """Serve until a signal; `{"event": "serving", ...}` on stdout once answering."""
    write = write or LineWriter().write
    async with cancelled_on_signal(), trio.open_nursery() as nursery:
        serving = await nursery.start(serve_node, settings_of(opts), opts.service)
        where = {
            "event": "serving",
            "ts": time.time(),
            "socket": serving.socket,
            "listen": serving.listen,
            "metrics_listen": serving.metrics_listen,
        }
        await write([dumps(where)])
    return EXIT_OK
