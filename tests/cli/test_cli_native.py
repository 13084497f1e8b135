"""`ws-watcher` on a node without an overlay upper layer: CRI's snapshotter is ``native``.

Issue 12: `running` means the task runs; with no upper layer to find, `upperdir` is null and
`watch`/`wait` report the workspace all the same. (The rig's own facts about such a node are
checked in ``tests/integration/test_native_snapshotter.py``.)
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher.testing import Pod, Pods, PrivateContainerd, mk2_labels

if TYPE_CHECKING:  # the fixtures' classes (tests/ is not a package)
    from conftest import Running, WsWatcher

DEADLINE = 20.0


def native_pod(ctrd: PrivateContainerd, pods: Pods, iid: str) -> Pod:
    pod = pods.run_pod(f"ws-{iid}", labels=mk2_labels(iid, f"ws-{iid}", f"owner-{iid}"))
    assert ctrd.container_info(pod.containers["workspace"])["Snapshotter"] == "native"
    return pod


def check_running(obj: dict[str, Any], pod: Pod) -> None:
    assert obj["container_id"] == pod.containers["workspace"]
    assert obj["state"] == "running"
    assert isinstance(obj["pid"], int) and obj["pid"] > 0
    assert obj["cgroup_path"] == f"/kubepods/besteffort/pod{pod.uid}/{obj['container_id']}"
    assert obj["rootfs"].endswith(f"/{obj['container_id']}/rootfs")
    assert Path(obj["rootfs"], "bin", "busybox").exists()
    assert obj["upperdir"] is None


def next_event(watching: Running, kind: str, iid: str) -> dict[str, Any]:
    """The next `kind` line for `iid`; else fail naming every line `watch` printed."""
    try:
        return watching.until(
            lambda o: o["event"] == kind and o.get("instance_id") == iid, DEADLINE
        )[-1]
    except AssertionError as exc:
        events = [json.loads(line).get("event") for line in watching.lines]
        raise AssertionError(f"no `{kind}` line for {iid}; `watch` printed {events}") from exc


def test_watch_prints_running_and_removed(
    native_containerd: PrivateContainerd, native_pods: Pods, native_ws_watcher: WsWatcher
) -> None:
    watching = native_ws_watcher.start("watch")
    assert watching.event(DEADLINE)["event"] == "synced"
    pod = native_pod(native_containerd, native_pods, "w-native-watch")
    next_event(watching, "created", "w-native-watch")
    check_running(next_event(watching, "running", "w-native-watch"), pod)
    native_pods.remove_pod(pod)
    removed = next_event(watching, "removed", "w-native-watch")
    assert removed["container_id"] == pod.containers["workspace"]
    watching.signal(signal.SIGINT)
    assert watching.wait() == 0
    assert "Traceback" not in watching.stderr


def test_wait_prints_the_workspace(
    native_containerd: PrivateContainerd, native_pods: Pods, native_ws_watcher: WsWatcher
) -> None:
    waiting = native_ws_watcher.start(
        "wait", "w-native-wait", "--timeout", str(DEADLINE), "--log-level", "info"
    )
    waiting.stderr_line("synced")  # it is waiting before the pod exists
    pod = native_pod(native_containerd, native_pods, "w-native-wait")
    code = waiting.wait(DEADLINE + 10)  # its own --timeout ends it first
    out = waiting.rest()
    assert code == 0, f"`ws-watcher wait` exited {code}, printing {out}; stderr:\n{waiting.stderr}"
    assert len(out) == 1
    check_running(json.loads(out[0]), pod)
