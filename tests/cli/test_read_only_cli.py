"""Read-only, proved against a real containerd for every command of `ws-watcher`.

Each command runs as a subprocess pointed (`--address`) at its own wiretap
(`tests/rpc_wiretap.py`): a proxy that forwards every call to the rig's containerd and records
its method at the socket, so the record holds whatever the process sent, allowed or not. Each
command must send only `ALLOWED_RPCS`, and what it needs for its job must be among what it sent.
The library's calls get the same proof in tests/integration/test_read_only_containerd.py.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest
from rpc_wiretap import (
    CONNECT,
    CONTAINERS_GET,
    CONTAINERS_LIST,
    CONTENT_READ,
    EVENTS_SUBSCRIBE,
    IMAGES_GET,
    SNAPSHOTS_MOUNTS,
    TASKS_GET,
    TASKS_LIST,
    VERSION,
    Wiretap,
)

from watcher.client import ALLOWED_RPCS
from watcher.testing import NAMESPACE, Pod, Pods, PrivateContainerd, mk2_labels

if TYPE_CHECKING:  # the fixtures' classes (tests/ is not a package)
    from conftest import WsWatcher

pytestmark = pytest.mark.containerd

DEADLINE = 20.0


def workspace_pod(pods: Pods, iid: str) -> Pod:
    return pods.run_pod(f"ws-{iid}", labels=mk2_labels(iid, f"ws-{iid}", f"owner-{iid}"))


def is_event(kind: str, iid: str | None = None) -> Callable[[dict[str, object]], bool]:
    return lambda o: o["event"] == kind and (iid is None or o.get("instance_id") == iid)


def wait_for(tap: Wiretap, method: str, count: int = 1) -> None:
    """Until the tap has seen `method` `count` times (a listing done: the command synced)."""
    deadline = time.monotonic() + DEADLINE
    while tap.count(method) < count:
        assert time.monotonic() < deadline, f"{method} not seen {count} times: {tap.calls()}"
        time.sleep(0.02)


def test_every_command_sends_only_allowed_rpcs(
    containerd: PrivateContainerd,
    pods: Pods,
    native_containerd: PrivateContainerd,
    native_pods: Pods,
    ws_watcher: WsWatcher,
    sockdir: str,
) -> None:
    sent: dict[str, set[str]] = {}

    @contextmanager
    def tapped(command: str, *needs: str, upstream: str = containerd.address) -> Iterator[Wiretap]:
        """A fresh tap for one command; afterwards, what it sent is allowed and covers `needs`."""
        with Wiretap(upstream, sockdir, f"{len(sent)}.sock") as tap:
            yield tap
        calls = tap.calls()
        methods = {c.method for c in calls}
        sent[command] = methods
        assert methods <= ALLOWED_RPCS, (command, methods - ALLOWED_RPCS)
        assert set(needs) <= methods, (command, set(needs) - methods)
        assert all(c.namespace == NAMESPACE for c in calls if c.method != VERSION), calls

    pod = workspace_pod(pods, "ro-a")
    cid = pod.containers["workspace"]

    with tapped("ls", *CONNECT) as tap:
        code, out, err = ws_watcher.run("ls", "--json", address=tap.address)
        assert code == 0, err
        assert [ws["container_id"] for ws in json.loads(out[0])] == [cid]

    with tapped("inspect", *CONNECT, TASKS_GET, IMAGES_GET, CONTENT_READ) as tap:
        code, out, err = ws_watcher.run("inspect", "ro-a", address=tap.address)
        assert code == 0, err
        obj = json.loads(out[0])
        assert obj["task_info"]["pid"] > 0 and obj["image_info"]["digest"]

    # found by the event stream: the new container's record is fetched
    with tapped("wait", *CONNECT, CONTAINERS_GET) as tap:
        waiting = ws_watcher.start("wait", "ro-b", "--timeout", str(DEADLINE), address=tap.address)
        wait_for(tap, TASKS_LIST)  # synced: from here on the stream tells
        b = workspace_pod(pods, "ro-b")
        assert json.loads(waiting.line())["container_id"] == b.containers["workspace"]
        assert waiting.wait() == 0, waiting.stderr

    with tapped("wait-stop", *CONNECT) as tap:
        stopping = ws_watcher.start(
            "wait-stop", "ro-b", "--timeout", str(DEADLINE), address=tap.address
        )
        wait_for(tap, TASKS_LIST)
        pods.remove_pod(b)
        assert stopping.wait() == 0, stopping.stderr

    # a lifecycle, safety relists, and a containerd restart (reconnect and resync)
    with tapped("watch", *CONNECT, CONTAINERS_GET) as tap:
        watching = ws_watcher.start(
            "watch", "--initial", "--relist-interval", "0.3", address=tap.address
        )
        watching.until(is_event("synced"))
        c = workspace_pod(pods, "ro-c")
        watching.until(is_event("running", "ro-c"))
        wait_for(tap, TASKS_LIST, 3)  # the initial listing and two relists
        containerd.kill9()
        watching.until(is_event("disconnected"))
        containerd.start()
        watching.until(is_event("synced"))
        pods.remove_pod(c)
        watching.until(is_event("removed", "ro-c"))
        watching.signal(signal.SIGTERM)
        assert watching.wait() == 0, watching.stderr
        assert tap.count(EVENTS_SUBSCRIBE) >= 2  # it did reconnect through the tap

    # a node without an overlay upper layer in its mount table (the native snapshotter): the
    # commands ask containerd's snapshotter for the workspace's mounts
    workspace_pod(native_pods, "ro-native")
    with tapped(
        "ls (native)", *CONNECT, SNAPSHOTS_MOUNTS, upstream=native_containerd.address
    ) as tap:
        code, out, err = ws_watcher.run("ls", "--json", address=tap.address)
        assert code == 0, err
        assert [ws["instance_id"] for ws in json.loads(out[0])] == ["ro-native"]

    # together, the commands use the whole list but the fallback for a containerd without
    # ListStream (unit-tested on the fake)
    assert set().union(*sent.values()) == ALLOWED_RPCS - {CONTAINERS_LIST}, sent
