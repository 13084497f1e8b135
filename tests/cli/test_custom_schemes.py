"""Custom label schemes end to end (`--schemes FILE`), on a real containerd: a platform that is
not Gitpod — any pod with a label selector and a main container name — uses `ws-watcher`
without writing Python."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from watcher.testing import ContainerSpec, Pods, mk2_labels

if TYPE_CHECKING:  # the fixtures' classes (tests/ is not a package)
    from conftest import WsWatcher

DEADLINE = 20.0
SCHEMES = """
[[scheme]]
name = "devpods"
require = { app = "devpod" }
instance_label = "devpod/id"
owner_label = "devpod/owner"
container = "main"
"""


def devpod_labels(iid: str) -> dict[str, str]:
    return {"app": "devpod", "devpod/id": iid, "devpod/owner": "ann"}


def test_wait_and_watch_with_a_custom_scheme(
    pods: Pods, ws_watcher: WsWatcher, tmp_path: Path
) -> None:
    schemes = tmp_path / "schemes.toml"
    schemes.write_text(SCHEMES)
    watching = ws_watcher.start("watch", "--schemes", str(schemes), "--no-gitpod-schemes")
    assert watching.event(DEADLINE)["event"] == "synced"
    gitpod = pods.run_pod("ws-gp", labels=mk2_labels("gp-1", "ws-gp", "o"))  # not wanted now
    pod = pods.run_pod(
        "dev-1",
        labels=devpod_labels("dp-1"),
        containers=[ContainerSpec(name="main"), ContainerSpec(name="sidecar")],
    )
    code, out, err = ws_watcher.run(
        "wait", "dp-1", "--schemes", str(schemes), "--timeout", str(DEADLINE)
    )
    assert code == 0, err
    obj = json.loads(out[0])
    assert obj["scheme"] == "devpods" and obj["instance_id"] == "dp-1"
    assert obj["owner_id"] == "ann" and obj["workspace_id"] is None
    assert obj["container_id"] == pod.containers["main"] and obj["container_name"] == "main"
    lines = watching.until(lambda o: o["event"] == "running", DEADLINE)
    assert lines[-1]["instance_id"] == "dp-1" and lines[-1]["scheme"] == "devpods"
    # with Gitpod's schemes too (the default), both pods are workspaces
    code, out, _ = ws_watcher.run("ls", "--json", "--schemes", str(schemes))
    listed = {o["instance_id"]: o["scheme"] for o in json.loads(out[0])}
    assert code == 0 and listed == {"dp-1": "devpods", "gp-1": "gitpod-mk2"}
    watching.signal(signal.SIGTERM)
    assert watching.wait() == 0
    seen = [json.loads(line) for line in watching.lines]
    assert all(o.get("instance_id") != "gp-1" for o in seen)  # --no-gitpod-schemes
    assert gitpod.containers["workspace"] not in {o.get("container_id") for o in seen}
