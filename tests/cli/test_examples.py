"""The examples of the README run as documented, against the rig's containerd."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from watcher.testing import Pods, PrivateContainerd, mk1_labels, mk2_labels

if TYPE_CHECKING:  # the fixture's class (tests/ is not a package)
    from conftest import WsWatcher

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_wait_for_workspace(
    containerd: PrivateContainerd, pods: Pods, ws_watcher: WsWatcher
) -> None:
    script = str(EXAMPLES / "wait_for_workspace.py")
    waiting = ws_watcher.spawn(sys.executable, script, "ex-1", "--address", containerd.address)
    pod = pods.run_pod("ws-ex-1", labels=mk2_labels("ex-1", "ws-ex", "owner"))
    lines = dict(waiting.line().split(maxsplit=1) for _ in range(5))
    assert waiting.wait() == 0
    cid = pod.containers["workspace"]
    assert lines["container"] == cid
    assert lines["cgroup"] == f"/kubepods/besteffort/pod{pod.uid}/{cid}"
    assert int(lines["pid"]) > 0
    assert lines["rootfs"].endswith(f"/{cid}/rootfs")
    assert Path(lines["upperdir"]).is_dir()

    code = ws_watcher.spawn(
        sys.executable, script, "absent", "--address", containerd.address, "--timeout", "0.3"
    ).wait()
    assert code == 1


def test_follow_deletions(containerd: PrivateContainerd, pods: Pods, ws_watcher: WsWatcher) -> None:
    script = str(EXAMPLES / "follow_deletions.py")
    following = ws_watcher.spawn(sys.executable, script, "--address", containerd.address)
    following.stderr_line("following deletions")
    pod = pods.run_pod("ws-ex-2", labels=mk1_labels("ex-2", "ws-ex", "owner"))
    pods.remove_pod(pod)
    line = following.line()
    assert " removed ex-2 default/ws-ex-2 " in line
    assert pod.containers["workspace"] in line
    following.signal(signal.SIGINT)
    assert following.wait() == 0
