"""Memory of the watcher as examples/daemonset.yaml deploys it: idle, then with N workspaces.

    python -m benchmarks.deploy_rss [--pods 100]      # root; ~2 min for 100 pods

The DaemonSet's pod runs on a private containerd as in tests/deploy (the image made from the
wheel, the manifest's args, mounts and security context; ``watcher.testing.deployment``).
Its process's RSS (``VmRSS``) and peak (``VmHWM``) are read from the host's /proc once it
has synced (/readyz), and again once its API has reported every one of N workspace pods as
running; the
manifest's memory request and limit come from these figures.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from watcher.testing import Pods, PrivateContainerd, mk2_labels, reclaim_stale
from watcher.testing.deployment import daemonset_template, deploy, import_image
from watcher.testing.kubelet import http_get_probe
from watcher.testing.wheel_image import build_wheel_image

DEADLINE = 300.0


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def until(what: str, predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)  # a benchmark's observer of another process's log: polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    n = parser.parse_args().pods
    image = build_wheel_image()
    reclaim_stale()
    with PrivateContainerd(node_layout=True) as ctrd, Pods(ctrd) as pods:
        import_image(ctrd, image)
        watcher = deploy(ctrd, pods, image, daemonset_template())
        pid = watcher.host_pid()
        # synced: /readyz says so, as the kubelet's readiness probe asks
        probe = watcher.probe("readinessProbe")
        until("ready", lambda: _ok(lambda: http_get_probe(probe, "127.0.0.1")))
        idle = memory(pid)
        instances = []
        started = time.monotonic()
        for i in range(n):
            iid = f"rss-{uuid.uuid4().hex[:8]}"
            pods.run_pod(f"ws-{i}-{iid}", labels=mk2_labels(iid, f"ws-{iid}", "owner-1"))
            instances.append(iid)
        made = time.monotonic() - started
        for iid in instances:  # the service's own view, event-driven: its wait API
            status, _ = watcher.api_get(f"/v1/workspaces/{iid}/wait?for=running&timeout=120s")
            if status != 200:
                raise SystemExit(f"{iid}: {status}")
        loaded = memory(pid)
        print(json.dumps({
            "command": watcher.args[0], "image_python": image.python, "pods": n,
            "pods_made_in_s": round(made, 1), "idle_mib": idle, f"with_{n}_mib": loaded,
        }, indent=2))  # fmt: skip


def _ok(call: Callable[[], int]) -> bool:
    try:
        status = call()
    except OSError:
        return False
    return 200 <= status < 400


if __name__ == "__main__":
    main()
