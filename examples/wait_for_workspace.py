#!/usr/bin/env python3
"""Await a workspace by its instance id; print where it lives on the node.

    sudo python examples/wait_for_workspace.py INSTANCE_ID [--address SOCKET] [--timeout S]

Prints the cgroup path, PID, rootfs and upperdir of the workspace container once it runs
(exit 0), or exits 1 when it does not run within the timeout.
"""

from __future__ import annotations

import argparse
import sys

import trio

from watcher.watcher import open_watcher


async def show(instance_id: str, address: str) -> None:
    async with open_watcher(address) as w:
        ws = await w.wait_for_container(instance_id)  # running: PID, upperdir known
        cid = ws.container_id
        print(f"container  {cid}")
        print(f"cgroup     {w.container_cgroup_path(cid)}")
        print(f"pid        {w.container_pid(cid)}")
        print(f"rootfs     {await w.container_rootfs(cid)}")
        print(f"upperdir   {w.container_upperdir(cid)}")


async def main(args: argparse.Namespace) -> int:
    with trio.move_on_after(args.timeout):  # the caller's cancel scope decides how long
        await show(args.instance_id, args.address)
        return 0
    print(f"instance {args.instance_id} did not run within {args.timeout:g}s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("instance_id")
    parser.add_argument("--address", default="/run/containerd/containerd.sock")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    sys.exit(trio.run(main, args))
