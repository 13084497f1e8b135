"""1. Event latency against the floor: containerd's own client (`ctr events`).

A private containerd (the rig); PODS workspace pods made over CRI one at a time, then PODS
at once (one thread each); each batch deleted the same way. Four observers run side by side,
each in its own process so none shares a GIL with the driver, all on one clock (monotonic):

* floor: ``ctr -a SOCK events``, each line stamped on arrival (`/tasks/create`,
  `/containers/delete` of the pod's workspace container);
* library: an in-process watcher, `running` / `removed` stamped as `changes()` yields them;
* CLI: ``ws-watcher watch``, each stdout line stamped on arrival;
* polling: CRI ListContainers + ContainerStatus every second, as log agents do (a thread).

Per pod and observer: the difference to the floor (ms), and the ratio of latencies measured
from the CRI request (RunPodSandbox / StopContainer) — 1.00 means "as fast as ctr".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from benchmarks.common import (
    Lines,
    Stats,
    child_argv,
    event_is,
    now,
    print_table,
    stamped,
    watch_argv,
)

PODS = 50
POLL_INTERVAL = 1.0
SETTLE = 30.0  # seconds to wait for every observer to have seen every event

Key = tuple[str, str]  # (event: "running" | "removed", container id)


@dataclass
class Request:
    cid: str
    kind: str
    batch: str
    at: float  # when the CRI request was made


class Poller:
    """The polling peer: ListContainers + ContainerStatus every POLL_INTERVAL seconds."""

    def __init__(self, address: str) -> None:
        from watcher.testing import CRIClient

        self.seen: dict[Key, float] = {}
        self._cri = CRIClient(address)
        self._stop = threading.Event()
        self._known: set[str] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from containerd_protos.cri.runtime.v1 import api_pb2 as cri
        from watcher.testing import CRIError

        tick = now()
        while not self._stop.wait(max(0.0, tick - now())):
            tick += POLL_INTERVAL
            listed = [c for c in self._cri.list_containers() if c.metadata.name == "workspace"]
            ids = {c.id for c in listed}
            for c in listed:
                try:
                    status = self._cri.container_status(c.id)
                except CRIError:  # removed since the listing: the next poll tells
                    continue
                if status.state == cri.CONTAINER_RUNNING and ("running", c.id) not in self.seen:
                    self.seen["running", c.id] = now()
            for cid in self._known - ids:
                self.seen["removed", cid] = now()
            self._known = ids

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._cri.close()


def _ctr_times(lines: list[tuple[float, str]]) -> dict[Key, float]:
    """`ctr events` lines: ``DATE TIME +0000 UTC NAMESPACE TOPIC JSON``."""
    out: dict[Key, float] = {}
    for t, line in lines:
        fields = line.split(" ", 6)
        if len(fields) < 7:
            continue
        topic, body = fields[5], json.loads(fields[6])
        if topic == "/tasks/create":
            out.setdefault(("running", body["container_id"]), t)
        elif topic == "/containers/delete":
            out.setdefault(("removed", body["id"]), t)
    return out


def _watch_times(lines: list[tuple[float, str]]) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for t, line in lines:
        obj = json.loads(line)
        if obj.get("event") in ("running", "removed"):
            out.setdefault((obj["event"], obj["container_id"]), t)
    return out


def _probe_times(lines: list[tuple[float, str]]) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for t, line in lines:
        kind, _, cid = line.partition(" ")
        if kind in ("running", "removed"):
            out.setdefault((kind, cid), t)
    return out


def _drive(pods_api: Any, batch: str, parallel: bool, requests: list[Request]) -> None:
    from watcher.testing import mk2_labels

    def make(i: int) -> Any:
        at = now()
        pod = pods_api.run_pod(f"{batch}-{i}", labels=mk2_labels(f"{batch}-{i}", f"w{i}", "o"))
        requests.append(Request(pod.containers["workspace"], "running", batch, at))
        return pod

    def remove(pod: Any) -> None:
        at = now()
        pods_api.remove_pod(pod)
        requests.append(Request(pod.containers["workspace"], "removed", batch, at))

    if parallel:
        with ThreadPoolExecutor(PODS) as pool:
            made = list(pool.map(make, range(PODS)))
            list(pool.map(remove, made))
    else:
        made = [make(i) for i in range(PODS)]
        for pod in made:
            remove(pod)


def _wait_all(have: Callable[[], dict[Key, float]], keys: set[Key]) -> None:
    deadline = now() + SETTLE
    while not keys <= have().keys() and now() < deadline:
        threading.Event().wait(0.1)


def run() -> dict[str, Any]:
    from watcher.testing import Pods, PrivateContainerd

    requests: list[Request] = []
    with PrivateContainerd() as ctrd, Pods(ctrd) as pods_api:
        address = ctrd.address
        with (
            Lines(stamped(["ctr", "-a", address, "events"]), prestamped=True) as ctr,
            Lines(child_argv("probe", address), prestamped=True) as probe,
            Lines(stamped(watch_argv(address)), prestamped=True) as watch,
        ):
            probe.wait_for(lambda s: s.startswith("synced"), 60)
            watch.wait_for(event_is("synced"), 60)
            poller = Poller(address)
            try:
                _drive(pods_api, "seq", False, requests)
                _drive(pods_api, "par", True, requests)
                keys = {(r.kind, r.cid) for r in requests}
                for source in (
                    lambda: _ctr_times(ctr.lines),
                    lambda: _probe_times(probe.lines),
                    lambda: _watch_times(watch.lines),
                    lambda: dict(poller.seen),
                ):
                    _wait_all(source, keys)
            finally:
                poller.close()
            floor = _ctr_times(ctr.lines)
            observers = {
                "library": _probe_times(probe.lines),
                "cli": _watch_times(watch.lines),
                "polling": dict(poller.seen),
            }
    return _report(requests, floor, observers)


def _report(
    requests: list[Request], floor: dict[Key, float], observers: dict[str, dict[Key, float]]
) -> dict[str, Any]:
    result: dict[str, Any] = {"pods": PODS, "targets": {"median_ms": 2.0, "p99_ms": 20.0}}
    rows: list[tuple[str, str]] = []
    groups: dict[str, Callable[[Request], bool]] = {
        "all": lambda r: True,
        "one at a time": lambda r: r.batch == "seq",
        "50 at once": lambda r: r.batch == "par",
        "running": lambda r: r.kind == "running",
        "removed": lambda r: r.kind == "removed",
    }
    for name, seen in observers.items():
        result[name] = {}
        for group, pick in groups.items():
            chosen = [r for r in requests if pick(r) and (r.kind, r.cid) in floor]
            diffs = [
                (seen[r.kind, r.cid] - floor[r.kind, r.cid]) * 1000
                for r in chosen
                if (r.kind, r.cid) in seen
            ]
            ratios = [
                (seen[r.kind, r.cid] - r.at) / (floor[r.kind, r.cid] - r.at)
                for r in chosen
                if (r.kind, r.cid) in seen and floor[r.kind, r.cid] > r.at
            ]
            missed = len(chosen) - len(diffs)
            result[name][group] = {
                "minus_ctr_ms": Stats.of(diffs),
                "ratio_to_ctr": Stats.of(ratios),
                "missed": missed,
            }
            if group == "all" or name != "polling":
                rows.append(
                    (
                        f"{name:8} {group}",
                        f"{Stats.of(diffs).row()}  ratio {Stats.of(ratios).row('x', 3)}"
                        + (f"  MISSED {missed}" if missed else ""),
                    )
                )
    print_table(
        "1. latency minus ctr's arrival: median / p95 / p99 / max "
        "(target: library median <= 2 ms, p99 <= 20 ms)",
        rows,
    )
    return result


if __name__ == "__main__":
    run()
