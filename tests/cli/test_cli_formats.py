"""The habits of the ecosystem (issue 15), as a user meets them: `-o yaml|wide|name` on `ls`,
`wait` and `inspect`, `watch -o text`, durations, `-a`, `--log-format json`, `--version` and
the completion script — the real executable against the rig's private containerd."""

from __future__ import annotations

import importlib.metadata
import json
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from record_builders import WORKSPACE_FIELDS as FIELDS

from watcher.testing import Pod, Pods, mk1_labels, mk2_labels

if TYPE_CHECKING:  # the fixtures' classes (tests/ is not a package)
    from conftest import WsWatcher

WIDE = ["INSTANCE", "POD", "CONTAINER", "PID", "STATE", "AGE",
        "WORKSPACE", "OWNER", "SCHEME", "IMAGE"]  # fmt: skip


def workspace_pod(pods: Pods, scheme: str, iid: str) -> Pod:
    labels = (mk1_labels if scheme == "mk1" else mk2_labels)(iid, f"ws-{iid}", f"owner-{iid}")
    return pods.run_pod(f"ws-{iid}", labels=labels)


def running(pods: Pods, ws_watcher: WsWatcher, *iids: str) -> list[Pod]:
    made = [workspace_pod(pods, "mk1" if n % 2 else "mk2", iid) for n, iid in enumerate(iids)]
    for iid in iids:
        assert ws_watcher.run("wait", iid)[0] == 0
    return made


def ok(ws_watcher: WsWatcher, *args: str) -> list[str]:
    code, out, err = ws_watcher.run(*args)
    assert code == 0, err
    assert "Traceback" not in err
    return out


def test_version(ws_watcher: WsWatcher) -> None:
    code, out, err = ws_watcher.run("--version", address=None)
    assert (code, out) == (0, [f"ws-watcher {importlib.metadata.version('ws-watcher')}"]), err


def test_ls_as_yaml_wide_and_name(pods: Pods, ws_watcher: WsWatcher) -> None:
    assert ok(ws_watcher, "ls", "-o", "yaml") == []
    assert ok(ws_watcher, "ls", "-o", "name") == []
    assert ok(ws_watcher, "ls", "-o", "wide")[0].split() == WIDE
    a, b = running(pods, ws_watcher, "w-fmt-a", "w-fmt-b")

    as_json = json.loads(ok(ws_watcher, "ls", "-o", "json")[0])
    assert json.loads(ok(ws_watcher, "ls", "--json")[0]) == as_json
    docs = list(yaml.safe_load_all("\n".join(ok(ws_watcher, "ls", "-o", "yaml"))))
    assert docs == as_json  # a document per workspace, the same fields and values
    assert [list(doc) for doc in docs] == [FIELDS, FIELDS]

    assert ok(ws_watcher, "ls", "-o", "name") == ["w-fmt-a", "w-fmt-b"]

    header, *rows = ok(ws_watcher, "ls", "-o", "wide")
    assert header.split() == WIDE
    for row, pod, obj in zip(rows, (a, b), as_json, strict=True):
        cells = row.split()
        assert cells[:3] == [obj["instance_id"], f"default/{pod.name}", obj["container_id"][:12]]
        assert int(cells[3]) == obj["pid"] and cells[4] == "running"
        assert cells[6:] == [obj["workspace_id"], obj["owner_id"], obj["scheme"], obj["image"]]
    narrow = ok(ws_watcher, "ls")
    assert [r.split()[:5] for r in narrow[1:]] == [r.split()[:5] for r in rows]


def test_wait_and_inspect_as_yaml_wide_and_name(pods: Pods, ws_watcher: WsWatcher) -> None:
    running(pods, ws_watcher, "w-fmt-w")
    (line,) = ok(ws_watcher, "wait", "w-fmt-w")
    obj = json.loads(line)
    (doc,) = yaml.safe_load_all("\n".join(ok(ws_watcher, "wait", "w-fmt-w", "-o", "yaml")))
    assert doc == obj
    assert ok(ws_watcher, "wait", "w-fmt-w", "-o", "name") == ["w-fmt-w"]
    header, row = ok(ws_watcher, "wait", "w-fmt-w", "--output", "wide")
    assert header.split() == WIDE and row.split()[0] == "w-fmt-w"

    (inspected,) = yaml.safe_load_all("\n".join(ok(ws_watcher, "inspect", "w-fmt-w", "-o", "yaml")))
    assert inspected["task_info"]["pid"] == obj["pid"] and inspected["image_info"]["size"] > 0
    by_container = ok(ws_watcher, "inspect", obj["container_id"], "-o", "name")
    assert by_container == ["w-fmt-w"]


def test_wait_with_a_duration_and_short_options(pods: Pods, ws_watcher: WsWatcher) -> None:
    workspace_pod(pods, "mk2", "w-other")
    code, out, err = ws_watcher.run(
        "wait", "w-absent", "--timeout", "500ms", "-a", ws_watcher.address, "-n", "k8s.io",
        address=None,
    )  # fmt: skip
    assert (code, out) == (1, [])
    assert "timed out after 0.5s" in err and err.strip().count("\n") == 0
    code, out, err = ws_watcher.run("wait", "w-other", "--timeout", "1m")
    assert code == 0 and json.loads(out[0])["instance_id"] == "w-other"


def test_watch_as_text(pods: Pods, ws_watcher: WsWatcher) -> None:
    watching = ws_watcher.start("watch", "-o", "text", "--relist-interval", "5m")
    first = watching.line().split()
    assert first[1:] == ["synced", "0", "workspaces"]
    pod = workspace_pod(pods, "mk2", "w-text")
    while "running" not in (line := watching.line()):
        assert "created" in line and "w-text" in line
    assert "w-text" in line and f"default/{pod.name}" in line and " pid " in line
    pods.remove_pod(pod)
    while "removed" not in (line := watching.line()):
        pass
    assert all(not text.startswith("{") for text in watching.lines)  # no JSON
    watching.signal(signal.SIGTERM)
    assert watching.wait() == 0
    assert "Traceback" not in watching.stderr


def test_json_logs(pods: Pods, ws_watcher: WsWatcher) -> None:
    running(pods, ws_watcher, "w-logs")
    code, out, err = ws_watcher.run("--log-format", "json", "--log-level", "debug", "ls")
    assert code == 0 and out[1].split()[0] == "w-logs"
    records = [json.loads(line) for line in err.splitlines()]
    assert records, "debug logs expected"
    for record in records:
        assert list(record)[:4] == ["ts", "level", "logger", "message"], record
        assert isinstance(record["ts"], float) and isinstance(record["message"], str)
    assert any(record["logger"].startswith("watcher") for record in records)


def test_bash_completion_from_the_executable(ws_watcher: WsWatcher, tmp_path: Path) -> None:
    code, out, err = ws_watcher.run("completion", "bash", address=None)
    assert code == 0, err
    script = tmp_path / "ws-watcher.bash"
    script.write_text("\n".join(out) + "\n")
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    probe = (
        f'source {script}; COMP_WORDS=(ws-watcher ""); COMP_CWORD=1; _ws_watcher; '
        'echo "${COMPREPLY[*]}"'
    )
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    offered = set(done.stdout.split())
    assert offered >= {"watch", "wait", "wait-stop", "ls", "inspect", "demo", "completion"}
