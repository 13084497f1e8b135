"""What many waiting clients cost containerd: one `ws-watcher serve` versus a CLI per wait.

* serve: a `ws-watcher serve` process, its calls to containerd counted by a wiretap (the
  tests' `rpc_wiretap`: a gRPC proxy that records every method it forwards). CLIENTS clients
  (`watcher.remote`, each its own connection) wait at once for an instance that does not
  exist yet; then its pod is made; each client's latency is taken from the moment the pod's
  StartContainer returned. The calls counted are those made while the clients waited, beside
  those of the service's own start (its one listing).
* CLI: `ws-watcher wait INSTANCE` run CLI_RUNS times, one after another, for a workspace
  already running (its cheapest case): the calls and the wall time of one call (a process:
  interpreter, imports, connect, list, answer). CLIENTS of them cost CLIENTS times that.

Root (a private containerd). Prints figures; never fails on timing.

    python -m benchmarks.service_clients [--clients 100] [--cli-runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from typing import Any

import trio

from benchmarks.common import REPO, Stats, child_env, now, print_table, rounded

sys.path.insert(0, str(REPO / "tests"))  # the wiretap is the tests' (it proves read-only)

from rpc_wiretap import CONTAINERS_LIST, CONTAINERS_LIST_STREAM, TASKS_LIST, Wiretap

from watcher.remote import connect
from watcher.testing import Pods, PrivateContainerd, mk2_labels

LISTINGS = (CONTAINERS_LIST, CONTAINERS_LIST_STREAM)
DEADLINE = 120.0


def short(method: str) -> str:
    """`/containerd.services.tasks.v1.Tasks/List` → `Tasks/List`."""
    service, _, name = method.rpartition("/")
    return f"{service.rsplit('.', 1)[-1]}/{name}"


def counted(calls: Counter[str]) -> str:
    return ", ".join(f"{short(m)} {n}" for m, n in sorted(calls.items())) or "none"


def calls_since(tap: Wiretap, start: int) -> Counter[str]:
    return Counter(call.method for call in tap.calls()[start:])


async def clients_wait(socket_path: str, clients: int, pods: Pods) -> dict[str, Any]:
    """CLIENTS clients wait for an instance; its pod is made once all of them wait."""
    iid = "bench-late"
    latencies: list[float] = []
    ready = trio.Semaphore(0)
    made: dict[str, float] = {}

    async def client() -> None:
        async with connect(socket_path) as service:
            # the long poll is on its way once connected; the service answers it from its index
            ready.release()
            ws = await service.wait_for_container(iid, timeout=DEADLINE)
            assert ws.running
            latencies.append(now() - made["started"])

    started = now()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)
        for _ in range(clients):
            await ready.acquire()
        waiting = now() - started
        await trio.to_thread.run_sync(
            lambda: pods.run_pod("ws-bench-late", labels=mk2_labels(iid, "ws", "o"))
        )
        made["started"] = now()
    return {"clients": len(latencies), "connect_s": waiting, "latency": Stats.of(latencies)}


def run(clients: int, cli_runs: int) -> dict[str, Any]:
    results: dict[str, Any] = {"clients": clients, "cli_runs": cli_runs}
    with (
        PrivateContainerd() as ctrd,
        Pods(ctrd) as pods,
        tempfile.TemporaryDirectory(prefix="wsw-b", dir="/tmp") as directory,
    ):
        pods.run_pod("ws-bench-0", labels=mk2_labels("bench-0", "ws", "o"))
        with Wiretap(ctrd.address, directory) as tap:
            # --- one service, many clients --------------------------------------------------
            socket_path = os.path.join(directory, "api.sock")
            server = subprocess.Popen(
                [sys.executable, "-m", "watcher", "serve", "--address", tap.address,
                 "--socket", socket_path],
                stdout=subprocess.PIPE, env=child_env(), text=True,
            )  # fmt: skip
            try:
                assert server.stdout is not None
                line = server.stdout.readline()
                assert json.loads(line)["event"] == "serving", line
                start_calls = calls_since(tap, 0)
                mark = len(tap.calls())
                served = trio.run(clients_wait, socket_path, clients, pods)
                wait_calls = calls_since(tap, mark)
            finally:
                server.terminate()
                server.wait(DEADLINE)
            results["serve"] = {
                "start_calls": dict(start_calls),
                "start_listings": sum(start_calls[m] for m in LISTINGS),
                "wait_calls": dict(wait_calls),
                "wait_listings": sum(wait_calls[m] for m in LISTINGS),
                **served,
            }

            # --- the CLI, one process per wait --------------------------------------------------
            walls: list[float] = []
            per_call: list[Counter[str]] = []
            for _ in range(cli_runs):
                mark = len(tap.calls())
                started = now()
                done = subprocess.run(
                    [sys.executable, "-m", "watcher", "wait", "bench-0", "--address", tap.address],
                    capture_output=True, env=child_env(), timeout=DEADLINE, check=False,
                )  # fmt: skip
                walls.append(now() - started)
                assert done.returncode == 0, done.stderr
                per_call.append(calls_since(tap, mark))
            results["cli"] = {
                "wall": Stats.of(walls),
                "calls": dict(per_call[-1]),
                "rpcs": Stats.of([sum(c.values()) for c in per_call]).median,
                "listings": sum(per_call[-1][m] for m in LISTINGS),
                "tasks_lists": per_call[-1][TASKS_LIST],
            }
    return results


def report(results: dict[str, Any]) -> None:
    serve, cli = results["serve"], results["cli"]
    n = results["clients"]
    latency: Stats = serve["latency"]
    wall: Stats = cli["wall"]
    cli_rpcs = cli["rpcs"]
    print_table(
        f"{n} clients waiting at once on one `ws-watcher serve`, beside the CLI per call",
        [
            ("serve: its start (first sync)", counted(Counter(serve["start_calls"]))),
            (
                "serve: container listings, ever",
                str(serve["start_listings"] + serve["wait_listings"]),
            ),
            (f"serve: calls while {n} clients waited", counted(Counter(serve["wait_calls"]))),
            ("serve: clients answered", f"{serve['clients']} of {n}"),
            (
                f"serve: {n} clients connected and waiting after",
                f"{serve['connect_s'] * 1000:.0f} ms",
            ),
            (
                "serve: answer after the pod started",
                f"median {latency.median * 1000:.1f} ms, p99 {latency.p99 * 1000:.1f} ms, "
                f"last {latency.max * 1000:.1f} ms",
            ),
            ("CLI `wait`: calls of one call", counted(Counter(cli["calls"]))),
            ("CLI `wait`: container listings per call", str(cli["listings"])),
            (
                "CLI `wait`: wall time of one call",
                f"median {wall.median * 1000:.0f} ms (max {wall.max * 1000:.0f} ms, "
                f"{results['cli_runs']} runs)",
            ),
            (
                f"CLI `wait` x {n}",
                f"{cli_rpcs * n:.0f} calls, {cli['listings'] * n} container listings and "
                f"{cli['tasks_lists'] * n} task listings (each asks every shim), "
                f"~{wall.median * n:.0f} s of processes",
            ),
        ],
    )
    print(json.dumps(rounded(results, 4), default=lambda s: s.__dict__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--cli-runs", type=int, default=5)
    args = parser.parse_args()
    report(run(args.clients, args.cli_runs))


if __name__ == "__main__":
    main()
