#!/usr/bin/env python3
"""Follow the watcher's changes and print each workspace container containerd deleted.

    sudo python examples/follow_deletions.py [--address SOCKET]

One line per deletion (time, instance, pod, container, exit status) until Ctrl-C. `removed`
comes only once containerd has deleted the container — including deletions found by a
resync after the watcher lost containerd for a while.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import trio

from watcher.published import ChangeKind, Disconnected, Lagged, Synced, WorkspaceChange
from watcher.watcher import open_watcher


async def main(address: str) -> None:
    """Until Ctrl-C or SIGTERM, which cancel the watcher: it closes its stream and channel
    before the process exits (a KeyboardInterrupt could land anywhere in that teardown)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow, address)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


async def follow(address: str) -> None:
    async with open_watcher(address) as w:
        with w.changes() as changes:  # registered now: nothing published after is missed
            print(f"following deletions at {address}", file=sys.stderr, flush=True)
            async for change in changes:
                if isinstance(change, WorkspaceChange) and change.kind is ChangeKind.REMOVED:
                    ws = change.workspace
                    when = time.strftime("%H:%M:%S", time.localtime(change.ts))
                    print(
                        f"{when} removed {ws.instance_id} {ws.pod_namespace}/{ws.pod_name} "
                        f"container {ws.container_id} exit status {ws.exit_status}",
                        flush=True,
                    )
                elif isinstance(change, Disconnected):
                    print(f"lost containerd: {change.error}", file=sys.stderr, flush=True)
                elif isinstance(change, Synced):
                    print(f"synced: {change.workspaces} workspaces", file=sys.stderr, flush=True)
                elif isinstance(change, Lagged):
                    print(f"too slow: missed {change.missed} changes", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="/run/containerd/containerd.sock")
    args = parser.parse_args()
    trio.run(main, args.address)
