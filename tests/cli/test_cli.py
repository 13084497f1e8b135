"""`ws-watcher` as a user runs it: the real executable, a private containerd, parsed stdout.

Issue 5's contract: the lines of `watch` with the right fields for mk1/mk2 pods and none for
unrelated pods or sidecars; `wait`/`wait-stop`/`ls` with their timeouts and exit codes; one
line and exit 2 for a user's mistake; the demo end to end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from record_builders import WORKSPACE_FIELDS as FIELDS

from containerd_protos.cri.runtime.v1 import api_pb2 as cri
from watcher.testing import (
    WORKSPACE_IMAGE,
    ContainerSpec,
    Pod,
    Pods,
    PrivateContainerd,
    mk1_labels,
    mk2_labels,
)

if TYPE_CHECKING:  # the fixtures' classes (tests/ is not a package)
    from conftest import Running, WsWatcher


def workspace_pod(pods: Pods, scheme: str, iid: str, *, sidecar: bool = False) -> Pod:
    labels = (mk1_labels if scheme == "mk1" else mk2_labels)(iid, f"ws-{iid}", f"owner-{iid}")
    containers = [ContainerSpec()]
    if sidecar:
        containers.append(ContainerSpec(name="sidecar"))
    return pods.run_pod(f"ws-{iid}", labels=labels, containers=containers)


def other_pod(pods: Pods, name: str = "web-0") -> Pod:
    return pods.run_pod(name, labels={"app": "web"})


def ids_of(pod: Pod) -> set[str]:
    return {pod.sandbox_id, *pod.containers.values(), *pod.exited}


def check_workspace(obj: dict[str, Any], pod: Pod, scheme: str) -> None:
    """The fields of a workspace object for `pod`'s workspace container."""
    iid = obj["instance_id"]
    assert [k for k in obj if k not in ("event", "ts")] == FIELDS
    assert obj["scheme"] == f"gitpod-{scheme}"  # which scheme made it a workspace
    assert obj["workspace_id"] == f"ws-{iid}"
    assert obj["owner_id"] == f"owner-{iid}"
    assert (obj["pod_name"], obj["pod_namespace"], obj["pod_uid"]) == (
        pod.name,
        pod.namespace,
        pod.uid,
    )
    assert obj["sandbox_id"] == pod.sandbox_id
    assert obj["container_id"] == pod.containers["workspace"]
    assert obj["image"] == WORKSPACE_IMAGE
    assert obj["pod_labels"] == dict(pod.labels)  # no io.kubernetes.* / io.cri-containerd.*
    assert ("gpwsman" in obj["pod_labels"]) == (scheme == "mk1")
    assert isinstance(obj["created_at"], float)
    assert obj["container_name"] == "workspace"
    assert obj["cgroup_path"].endswith(obj["container_id"])
    assert obj["cgroup_path"].startswith(f"/kubepods/besteffort/pod{pod.uid}")


def check_running(obj: dict[str, Any], containerd: PrivateContainerd) -> None:
    assert isinstance(obj["pid"], int) and obj["pid"] > 0
    assert obj["state"] == "running"
    assert obj["exit_status"] is None
    assert Path(obj["upperdir"]).is_dir()
    assert obj["upperdir"].startswith(str(containerd.base))
    assert obj["rootfs"].endswith(f"/{obj['container_id']}/rootfs")
    assert Path(obj["rootfs"], "bin", "busybox").exists()


def is_event(kind: str, iid: str | None = None) -> Any:
    return lambda o: o["event"] == kind and (iid is None or o.get("instance_id") == iid)


@pytest.fixture
def watching(ws_watcher: WsWatcher) -> Iterator[Running]:
    """`ws-watcher watch`, past its first `synced` line."""
    running = ws_watcher.start("watch")
    first = running.event()
    assert first["event"] == "synced" and isinstance(first["ts"], float)
    yield running


# --- watch ----------------------------------------------------------------------------------


def test_watch_mk1_and_mk2_lifecycles_and_nothing_else(
    containerd: PrivateContainerd, pods: Pods, watching: Running
) -> None:
    other = other_pod(pods)
    mk1 = workspace_pod(pods, "mk1", "w-mk1")
    mk2 = workspace_pod(pods, "mk2", "w-mk2", sidecar=True)
    for pod, scheme in ((mk1, "mk1"), (mk2, "mk2")):
        iid = pod.labels["workspaceID"]
        created = watching.until(is_event("created", iid))[-1]
        check_workspace(created, pod, scheme)
        running = watching.until(is_event("running", iid))[-1]
        check_workspace(running, pod, scheme)
        check_running(running, containerd)
        assert running["ts"] >= created["ts"]

    pods.remove_pod(other)  # first: anything about it would be printed before the rest
    for pod, scheme in ((mk1, "mk1"), (mk2, "mk2")):
        iid = pod.labels["workspaceID"]
        pods.remove_pod(pod)
        exited = watching.until(is_event("exited", iid))[-1]
        check_workspace(exited, pod, scheme)
        assert exited["exit_status"] == 137  # StopContainer with timeout 0: SIGKILL
        assert exited["state"] == "exited"
        removed = watching.until(is_event("removed", iid))[-1]
        check_workspace(removed, pod, scheme)

    events = [json.loads(line) for line in watching.lines]
    about = {o.get("container_id") for o in events} - {None}
    assert about == {mk1.containers["workspace"], mk2.containers["workspace"]}
    assert not about & (ids_of(other) | {mk2.containers["sidecar"], mk1.sandbox_id})
    kinds = [(o["instance_id"], o["event"]) for o in events if "instance_id" in o]
    for iid in ("w-mk1", "w-mk2"):
        assert [k for i, k in kinds if i == iid] == ["created", "running", "exited", "removed"]

    watching.signal(signal.SIGINT)
    assert watching.wait() == 0
    assert "Traceback" not in watching.stderr


def test_watch_exits_0_on_sigterm(watching: Running) -> None:
    watching.signal(signal.SIGTERM)
    assert watching.wait() == 0
    assert watching.rest() == []
    assert "Traceback" not in watching.stderr


def test_watch_initial(pods: Pods, ws_watcher: WsWatcher) -> None:
    mk2 = workspace_pod(pods, "mk2", "w-init-2")
    mk1 = workspace_pod(pods, "mk1", "w-init-1", sidecar=True)
    other_pod(pods)
    for iid in ("w-init-1", "w-init-2"):
        assert ws_watcher.run("wait", iid)[0] == 0  # both running

    plain = ws_watcher.start("watch")
    assert plain.event()["event"] == "synced"  # nothing before it without --initial

    initial = ws_watcher.start("watch", "--initial")
    lines = initial.until(is_event("synced"))
    synced = lines.pop()
    assert synced["workspaces"] == 2
    assert [(o["event"], o["instance_id"]) for o in lines] in (
        [("running", "w-init-2"), ("running", "w-init-1")],
        [("running", "w-init-1"), ("running", "w-init-2")],
    )
    for obj in lines:
        pod, scheme = (mk1, "mk1") if obj["instance_id"] == "w-init-1" else (mk2, "mk2")
        check_workspace(obj, pod, scheme)


def test_watch_initial_shows_an_exited_container_as_exited(
    pods: Pods, ws_watcher: WsWatcher
) -> None:
    pod = workspace_pod(pods, "mk1", "w-init-repl")
    pod = pods.replace_container(pod, "workspace")  # attempt 0 exited, 1 running
    old = pod.exited[0]
    pods.wait_container_state(old, cri.CONTAINER_EXITED)
    assert ws_watcher.run("wait", "w-init-repl")[0] == 0  # attempt 1 runs

    initial = ws_watcher.start("watch", "--initial")
    lines = initial.until(is_event("synced"))
    assert lines.pop()["workspaces"] == 1  # one per instance: the newest container
    by_container = {o["container_id"]: o for o in lines}
    assert len(by_container) == len(lines) == 2  # one line per container
    new = by_container[pod.containers["workspace"]]
    assert (new["event"], new["attempt"]) == ("running", 1)
    assert by_container[old]["attempt"] == 0
    assert by_container[old]["event"] == "exited"


def test_watch_rides_through_a_containerd_restart(
    containerd: PrivateContainerd, pods: Pods, watching: Running
) -> None:
    pod = workspace_pod(pods, "mk2", "w-restart")
    watching.until(is_event("running", "w-restart"))
    containerd.kill9()
    assert watching.event()["event"] == "disconnected"
    containerd.start()
    after = watching.until(is_event("synced"))
    assert [o["event"] for o in after] == ["synced"]  # once per outage; no re-announcements
    assert after[-1]["workspaces"] >= 1
    pods.remove_pod(pod)
    watching.until(is_event("removed", "w-restart"))


def test_watch_maps_host_paths(
    containerd: PrivateContainerd, pods: Pods, ws_watcher: WsWatcher
) -> None:
    base = str(containerd.base)
    watching = ws_watcher.start("watch", "--path-map", f"{base}=/host{base}")
    assert watching.event()["event"] == "synced"
    workspace_pod(pods, "mk1", "w-map")
    running = watching.until(is_event("running", "w-map"))[-1]
    assert running["upperdir"].startswith(f"/host{base}/root/")
    assert running["rootfs"].startswith(f"/host{base}/state/")
    binds = [m for m in running["mounts"] if m["type"] == "bind"]
    assert binds  # /etc/hosts, /etc/resolv.conf, ... from the sandbox's dirs
    assert all(m["source"].startswith(f"/host{base}/") for m in binds), binds
    assert {"source": "proc", "destination": "/proc", "type": "proc"} in running["mounts"]


# --- wait, wait-stop ------------------------------------------------------------------------


def test_wait_prints_the_workspace_once_running(
    containerd: PrivateContainerd, pods: Pods, ws_watcher: WsWatcher
) -> None:
    waiting = ws_watcher.start("wait", "w-wait", "--timeout", "30", "--log-level", "info")
    waiting.stderr_line("synced")  # it is waiting before the pod exists
    pod = workspace_pod(pods, "mk2", "w-wait")
    obj = waiting.event()
    assert waiting.wait() == 0
    assert waiting.rest() == []
    assert list(obj) == FIELDS
    check_workspace(obj, pod, "mk2")
    check_running(obj, containerd)
    # an instance already running: at once, the same object
    code, out, _ = ws_watcher.run("wait", "w-wait")
    assert code == 0 and len(out) == 1
    assert json.loads(out[0])["container_id"] == obj["container_id"]


def test_wait_times_out_with_exit_1(pods: Pods, ws_watcher: WsWatcher) -> None:
    other_pod(pods)
    workspace_pod(pods, "mk2", "w-other")
    code, out, err = ws_watcher.run("wait", "w-absent", "--timeout", "0.5")
    assert (code, out) == (1, [])
    assert err.strip().count("\n") == 0 and "timed out" in err and "w-absent" in err


def test_wait_stop(pods: Pods, ws_watcher: WsWatcher) -> None:
    # not there: at once
    assert ws_watcher.run("wait-stop", "w-never", "--timeout", "5")[:2] == (0, [])
    pod = workspace_pod(pods, "mk1", "w-stop")
    # there: it waits (and times out)
    code, out, err = ws_watcher.run("wait-stop", "w-stop", "--timeout", "0.5")
    assert (code, out) == (1, [])
    assert err.strip().count("\n") == 0 and "timed out" in err
    waiting = ws_watcher.start("wait-stop", "w-stop", "--timeout", "30", "--log-level", "info")
    waiting.stderr_line("synced")
    pods.remove_pod(pod)
    assert waiting.wait() == 0
    assert waiting.rest() == []


# --- ls -------------------------------------------------------------------------------------


def test_ls(pods: Pods, ws_watcher: WsWatcher) -> None:
    code, out, _ = ws_watcher.run("ls")
    assert code == 0
    assert out[0].split() == ["INSTANCE", "POD", "CONTAINER", "PID", "STATE", "AGE"]
    code, out, _ = ws_watcher.run("ls", "--json")
    assert (code, out) == (0, ["[]"])

    other_pod(pods)
    mk1 = workspace_pod(pods, "mk1", "w-ls-1")
    mk2 = workspace_pod(pods, "mk2", "w-ls-2", sidecar=True)
    mk2 = pods.replace_container(mk2, "workspace")
    for iid in ("w-ls-1", "w-ls-2"):
        assert ws_watcher.run("wait", iid)[0] == 0

    code, out, _ = ws_watcher.run("ls", "--json")
    assert code == 0 and len(out) == 1
    listed = json.loads(out[0])
    assert [o["instance_id"] for o in listed] == ["w-ls-1", "w-ls-2"]  # one per instance
    check_workspace(listed[0], mk1, "mk1")
    check_workspace(listed[1], mk2, "mk2")  # the newest container of the instance
    assert listed[1]["attempt"] == 1

    code, out, _ = ws_watcher.run("ls")
    assert code == 0
    header, *rows = out
    assert [row.split()[0] for row in rows] == ["w-ls-1", "w-ls-2"]
    row = rows[1].split()
    assert row[1] == f"default/{mk2.name}"
    assert row[2] == mk2.containers["workspace"][:12]
    assert int(row[3]) == listed[1]["pid"]
    assert row[4] == "running"
    assert row[5].endswith(("s", "m"))
    for col in ("POD", "CONTAINER", "PID", "STATE", "AGE"):  # aligned
        at = header.index(col)
        assert all(r[at - 1] == " " and r[at] != " " for r in rows)


# --- user errors: exit 2, one line -------------------------------------------------------


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def not_containerd(tmp_path: Path) -> Iterator[str]:
    """A unix socket where something listens that closes every connection at once."""
    path = tmp_path / "not-containerd.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    stop = False

    def serve() -> None:
        while not stop:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield str(path)
    finally:
        stop = True
        server.shutdown(socket.SHUT_RDWR)
        server.close()


@pytest.mark.parametrize("command", [["ls"], ["watch"], ["wait", "x"], ["wait-stop", "x"]])
def test_wrong_addresses(
    command: list[str], tmp_path: Path, not_containerd: str, ws_watcher: WsWatcher
) -> None:
    regular = tmp_path / "file"
    regular.write_text("")
    cases = {
        str(tmp_path / "missing.sock"): "no containerd socket",
        str(tmp_path): "is a directory",
        str(regular): "not a socket",
        # grpc's words for a peer that hangs up vary with timing; each is one clear line
        not_containerd: "not answering|not containerd|did not answer",
    }
    for address, message in cases.items():
        code, out, err = ws_watcher.run(*command, address=address)
        assert (code, out) == (2, []), (address, err)
        assert re.search(message, one_line(err)), (address, err)


#: root without the capabilities that let it open any file: what a non-root user meets
WITHOUT_DAC_OVERRIDE = (
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-all",
)


def test_permission_denied(not_containerd: str, ws_watcher: WsWatcher) -> None:
    os.chmod(not_containerd, 0)
    for command in (["ls"], ["watch"], ["wait", "x"]):
        code, out, err = ws_watcher.run(
            *command, address=not_containerd, prefix=WITHOUT_DAC_OVERRIDE
        )
        assert (code, out) == (2, [])
        assert "permission denied" in one_line(err)


@pytest.mark.parametrize(
    "args",
    [
        ["wait", "x", "--timeout", "-1"],
        ["wait", "x", "--timeout", "0"],
        ["wait-stop", "x", "--timeout", "-5"],
        ["wait", ""],
        ["wait-stop", ""],
        ["watch", "--path-map", "relative=/x"],
        ["watch", "--bogus"],
        ["frobnicate"],
    ],
)
def test_bad_options(args: list[str], ws_watcher: WsWatcher) -> None:
    code, out, err = ws_watcher.run(*args)
    assert (code, out) == (2, [])
    errors = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
    assert len(errors) == 1 and "error:" in errors[0], err
    assert "Traceback" not in err


# --- demo -----------------------------------------------------------------------------------


def test_demo_end_to_end(ws_watcher: WsWatcher) -> None:
    before = set(Path("/tmp").glob("wsw-*"))
    code, out, err = ws_watcher.run("demo", address=None, timeout=60)
    assert code == 0, err
    text = "\n".join(out)
    for iid in ("mk1-a", "mk1-b", "mk2-c", "mk2-d"):
        for event in ("created", "running", "exited", "removed"):
            assert any(event in line and iid in line for line in out), (event, iid, text)
    assert "web-0" not in text.replace("1 other pod", "")  # the unrelated pod: no lines
    assert "sidecar" not in "\n".join(line for line in out if not line.startswith("──"))
    events = [line.split()[1] for line in out if not line.startswith(("──", " "))]
    assert events.count("disconnected") == 1
    assert events[events.index("disconnected") + 1] == "synced"
    assert out[-1].endswith("done")
    assert set(Path("/tmp").glob("wsw-*")) <= before  # cleaned up


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_demo_interrupted_cleans_up(signum: int, ws_watcher: WsWatcher) -> None:
    demo = ws_watcher.start("demo", address=None)
    first = demo.line()
    assert first.startswith("── starting a private containerd at ")
    base = Path(first.split(" at ")[1]).parent
    while "creating" not in demo.line():  # the story is under way: pods are being made
        pass
    demo.signal(signum)
    assert demo.wait() == 0, demo.stderr
    assert demo.rest()[-1].endswith("interrupted; everything cleaned up")
    assert not base.exists()
    assert "Traceback" not in demo.stderr


# --- inspect -----------------------------------------------------------------------------


def test_inspect_by_instance_and_by_container(pods: Pods, ws_watcher: WsWatcher) -> None:
    pod = workspace_pod(pods, "mk2", "w-insp")
    assert ws_watcher.run("wait", "w-insp")[0] == 0
    cid = pod.containers["workspace"]

    by_instance = ws_watcher.run("inspect", "w-insp")
    by_container = ws_watcher.run("inspect", cid)
    for code, out, _ in (by_instance, by_container):
        assert code == 0 and len(out) == 1
        obj = json.loads(out[0])
        task, image = obj.pop("task_info"), obj.pop("image_info")
        check_workspace(obj, pod, "mk2")
        assert task["status"] == "running" and task["pid"] == obj["pid"] > 0
        assert task["exit_status"] is None
        assert image["name"] == obj["image"] and image["id"] == obj["image_ref"]
        assert image["digest"].startswith("sha256:") and image["size"] > 0


def test_no_secret_in_any_output(pods: Pods, ws_watcher: WsWatcher) -> None:
    """A real pod carrying Gitpod's owner token: watch, wait, ls --json and inspect leave it
    out (and everything else off the allow-list); --show-annotation adds a key, never a
    credential's."""
    token = "gp-owner-token-7f3a9c"
    watching = ws_watcher.start("watch", "--show-annotation", "example.com/*")
    assert watching.event()["event"] == "synced"
    labels = mk2_labels("w-secret", "ws-w-secret", "owner-w-secret")
    pods.run_pod(
        "ws-w-secret",
        labels=labels,
        annotations={
            "gitpod/ownerToken": token,
            "gitpod/id": "ws-w-secret",
            "example.com/team": "blue",
            "example.com/apiToken": token,
            "other.io/config": token,
        },
        containers=[ContainerSpec(annotations={"example.com/registry-password": token})],
    )
    lines = watching.until(is_event("running", "w-secret"))
    outputs = [ws_watcher.run(*cmd) for cmd in (
        ("wait", "w-secret"), ("ls", "--json"), ("inspect", "w-secret"), ("ls",),
    )]  # fmt: skip
    for code, out, err in outputs:
        assert code == 0
        assert token not in "\n".join(out) + err
    assert all(token not in line for line in watching.lines) and lines
    assert lines[-1]["pod_annotations"] == {"gitpod/id": "ws-w-secret", "example.com/team": "blue"}
    for out in (outputs[0][1][0], outputs[2][1][0]):
        obj = json.loads(out)
        assert obj["pod_annotations"] == {"gitpod/id": "ws-w-secret"}  # the default list
        assert obj["container_annotations"] == {"io.kubernetes.container.restartCount": "0"}
    watching.signal(signal.SIGTERM)
    assert watching.wait() == 0
    assert token not in watching.stderr


def test_inspect_unknown_is_exit_1(ws_watcher: WsWatcher) -> None:
    code, out, err = ws_watcher.run("inspect", "no-such-instance")
    assert code == 1 and out == []
    assert "no-such-instance" in one_line(err)
