"""What the CLI prints: the JSON contract of issues 5 and 7, the `ls` table, `--initial`."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml
from record_builders import CID, RUN, STATE, workspace
from record_builders import WORKSPACE_FIELDS as FIELDS

from watcher.cli import output
from watcher.cli.follow import Follower
from watcher.containerd_records import ContainerId
from watcher.disclosure import Disclosure
from watcher.pathmap import PathMap
from watcher.published import (
    ChangeKind,
    Disconnected,
    InstanceId,
    Lagged,
    Synced,
    Workspace,
    WorkspaceChange,
    WorkspaceState,
)


def test_workspace_object_has_exactly_the_contract_fields_in_order() -> None:
    obj = output.workspace_json(workspace())
    assert list(obj) == FIELDS
    assert obj["pid"] == 4242
    assert obj["pod_labels"] == {"gpwsman": "true", "workspaceID": "inst-1"}
    assert obj["created_at"] == 1_700_000_000.25
    assert obj["state"] == "running"
    assert obj["exit_status"] is None and obj["exited_at"] is None
    assert obj["mounts"][1] == {  # type: ignore[index]
        "destination": "/workspace",
        "source": f"{STATE}/vols/w",
        "type": "bind",
    }
    # one JSON line, and it round-trips
    line = output.dumps(obj)
    assert "\n" not in line
    assert json.loads(line) == obj


def test_no_secret_leaves_in_any_output() -> None:
    token = "gp-bearer-s3cr3t"
    ws = workspace(
        pod_labels={"gpwsman": "true", "auth-token": token},
        pod_annotations={"gitpod/ownerToken": token, "gitpod/id": "ws-1", "team": "a"},
        container_annotations={"io.kubernetes.container.restartCount": "0", "apiKey": token},
    )
    change = WorkspaceChange(kind=ChangeKind.RUNNING, ts=1.0, workspace=ws)
    for obj in (output.workspace_json(ws), output.change_json(change)):
        assert token not in output.dumps(obj)
        assert obj["pod_annotations"] == {"gitpod/id": "ws-1"}
        assert obj["container_annotations"] == {"io.kubernetes.container.restartCount": "0"}
        assert obj["pod_labels"] == {"gpwsman": "true"}
    assert token not in repr(replace(ws, pod_labels={})) + output.pretty_change(change)
    shown = output.workspace_json(ws, disclosure=Disclosure.with_extra(["team"]))
    assert shown["pod_annotations"] == {"gitpod/id": "ws-1", "team": "a"}


def test_unknown_facts_are_null() -> None:
    ws = workspace(
        pid=None,
        upperdir=None,
        rootfs=None,
        cgroup_path=None,
        created_at=None,
        workspace_id=None,
        owner_id=None,
        container_name=None,
        attempt=None,
        image_ref=None,
        log_path=None,
        started_at=None,
        mounts=(),
        state=WorkspaceState.CREATED,
    )
    obj = json.loads(output.dumps(output.workspace_json(ws)))
    for key in ("pid", "upperdir", "rootfs", "cgroup_path", "created_at", "workspace_id",
                "owner_id", "container_name", "attempt", "image_ref", "log_path",
                "started_at"):  # fmt: skip
        assert obj[key] is None, key
    assert obj["mounts"] == []
    assert obj["state"] == "created"


def test_path_map_rewrites_host_paths_only() -> None:
    pm = PathMap.parse([f"{STATE}=/host/var/lib/containerd", f"{RUN}=/host/run/containerd"])
    ws = workspace()
    obj = output.workspace_json(ws, pm)
    assert (
        obj["upperdir"]
        == "/host/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/7/fs"
    )
    assert (
        obj["rootfs"] == f"/host/run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/rootfs"
    )
    mounts = obj["mounts"]
    assert isinstance(mounts, list)
    assert [m["source"] for m in mounts] == [  # type: ignore[index,call-overload]
        "proc",  # not a host path
        "/host/var/lib/containerd/vols/w",  # a bind source under a mapped prefix
        "/etc/hosts",  # a bind source under no prefix stays
    ]
    # cgroup paths are not file system paths of the host's containerd dirs
    assert obj["cgroup_path"] == ws.cgroup_path
    # the record itself is untouched
    assert ws.upperdir is not None and ws.upperdir.startswith(STATE)


def test_change_lines() -> None:
    ws = workspace()
    line = output.change_json(WorkspaceChange(kind=ChangeKind.RUNNING, ts=12.5, workspace=ws))
    assert list(line) == ["event", "ts", *FIELDS]
    assert (line["event"], line["ts"], line["instance_id"]) == ("running", 12.5, "inst-1")
    for kind in ChangeKind:
        change = WorkspaceChange(kind=kind, ts=1.0, workspace=ws)
        assert output.change_json(change)["event"] == kind.value
    assert output.change_json(Synced(ts=3.0, workspaces=2, initial=True)) == {
        "event": "synced",
        "ts": 3.0,
        "workspaces": 2,
    }
    assert output.change_json(Disconnected(ts=4.0, error="gone")) == {
        "event": "disconnected",
        "ts": 4.0,
        "error": "gone",
    }


def test_change_line_maps_paths() -> None:
    pm = PathMap.parse([f"{STATE}=/h"])
    line = output.change_json(
        WorkspaceChange(kind=ChangeKind.RUNNING, ts=1.0, workspace=workspace()), pm
    )
    assert line["upperdir"] == "/h/io.containerd.snapshotter.v1.overlayfs/snapshots/7/fs"


@pytest.mark.parametrize(
    ("seconds", "age"),
    [(None, "-"), (-3, "0s"), (0, "0s"), (59.9, "59s"), (119, "119s"), (120, "2m"),
     (7199, "119m"), (7200, "2h"), (2 * 86400 - 1, "47h"), (2 * 86400, "2d")],
)  # fmt: skip
def test_age(seconds: float | None, age: str) -> None:
    assert output.format_age(seconds) == age


def test_table_is_aligned() -> None:
    rows = [
        workspace(),
        workspace(
            instance_id=InstanceId("a-much-longer-instance"),
            pod_name="p",
            container_id=ContainerId("abc"),
            pid=None,
            state=WorkspaceState.EXITED,
            created_at=None,
        ),
    ]
    text = output.table(rows, now=1_700_000_000.25 + 300)
    lines = text.splitlines()
    assert lines[0].split() == ["INSTANCE", "POD", "CONTAINER", "PID", "STATE", "AGE"]
    assert lines[1].split() == ["inst-1", "default/ws-inst-1", CID[:12], "4242", "running", "5m"]
    assert lines[2].split() == ["a-much-longer-instance", "default/p", "abc", "-", "exited", "-"]
    # every column starts at the same offset on every line
    for header in ("POD", "CONTAINER", "PID", "STATE", "AGE"):
        col = lines[0].index(header)
        assert all(line[col - 2 : col] == "  " for line in lines), header
        assert all(line[col] != " " for line in lines), header


def test_table_of_nothing_is_the_header() -> None:
    assert output.table([], now=0).split() == [
        "INSTANCE",
        "POD",
        "CONTAINER",
        "PID",
        "STATE",
        "AGE",
    ]


def test_pretty_lines_name_the_event_and_the_instance() -> None:
    ws = workspace()
    created = output.pretty_change(WorkspaceChange(kind=ChangeKind.CREATED, ts=1.0, workspace=ws))
    assert "created" in created and "inst-1" in created and "gitpod-mk1" in created
    running = output.pretty_change(WorkspaceChange(kind=ChangeKind.RUNNING, ts=1.0, workspace=ws))
    assert "pid 4242" in running and CID[:12] in running
    exited = output.pretty_change(
        WorkspaceChange(kind=ChangeKind.EXITED, ts=1.0, workspace=replace(ws, exit_status=137))
    )
    assert "exit status 137" in exited
    assert "2 workspaces" in output.pretty_change(Synced(ts=1.0, workspaces=2, initial=False))
    assert "boom" in output.pretty_change(Disconnected(ts=1.0, error="boom"))
    assert "missed 5" in output.pretty_change(Lagged(ts=1.0, missed=5))


# --- the order of `watch` lines -----------------------------------------------------------


def change(kind: ChangeKind, cid: str, ts: float = 1.0) -> WorkspaceChange:
    return WorkspaceChange(kind=kind, ts=ts, workspace=workspace(container_id=ContainerId(cid)))


def initial_sync() -> list[WorkspaceChange | Synced]:
    return [
        change(ChangeKind.CREATED, "a"),
        change(ChangeKind.CREATED, "b"),
        change(ChangeKind.CREATED, "c"),
        change(ChangeKind.EXITED, "b"),
        change(ChangeKind.RUNNING, "a"),
        Synced(ts=2.0, workspaces=3, initial=True),
    ]


def test_without_initial_the_initial_sync_is_only_synced() -> None:
    follower = Follower(initial=False)
    out = [line for c in initial_sync() for line in follower.feed(c)]
    assert out == [Synced(ts=2.0, workspaces=3, initial=True)]
    assert follower.synced
    later = change(ChangeKind.CREATED, "d")
    assert follower.feed(later) == [later]


def test_with_initial_each_container_once_in_its_state_then_synced() -> None:
    follower = Follower(initial=True)
    out = [line for c in initial_sync() for line in follower.feed(c)]
    kinds = [
        (c.kind.value, c.workspace.container_id) if isinstance(c, WorkspaceChange) else "synced"
        for c in out
    ]
    assert kinds == [("running", "a"), ("exited", "b"), ("created", "c"), "synced"]


def test_after_the_first_sync_everything_passes_in_order() -> None:
    follower = Follower(initial=True)
    for c in initial_sync():
        follower.feed(c)
    later = [
        change(ChangeKind.EXITED, "a"),
        Disconnected(ts=3.0, error="x"),
        Synced(ts=4.0, workspaces=2, initial=False),
        change(ChangeKind.REMOVED, "a"),
    ]
    assert [line for c in later for line in follower.feed(c)] == later


# --- -o json|yaml|wide|name, watch -o text (issue 15) ----------------------------------------


def render(found: list[Workspace], fmt: output.Format, *, array: bool) -> list[str]:
    return output.render(
        found, fmt, now=1_700_000_000.25 + 300, as_json=output.workspace_json, array=array
    )


def two() -> list[Workspace]:
    return [
        workspace(),
        workspace(instance_id=InstanceId("inst-2"), container_id=ContainerId("c2" * 32)),
    ]


def test_json_is_an_array_for_ls_and_a_line_per_object_otherwise() -> None:
    found = two()
    assert render(found, output.Format.JSON, array=True) == [
        output.dumps([output.workspace_json(ws) for ws in found])
    ]
    assert render([], output.Format.JSON, array=True) == ["[]"]
    lines = render(found[:1], output.Format.JSON, array=False)
    assert lines == [output.dumps(output.workspace_json(found[0]))]


def test_yaml_is_a_document_per_object_with_the_json_contract() -> None:
    found = two()
    docs = render(found, output.Format.YAML, array=True)
    assert len(docs) == 2 and all(doc.startswith("---\n") and doc[-1] != "\n" for doc in docs)
    loaded = list(yaml.safe_load_all("\n".join(docs)))
    assert loaded == [json.loads(output.dumps(output.workspace_json(ws))) for ws in found]
    assert list(loaded[0]) == FIELDS  # the contract's order, not sorted
    assert render([], output.Format.YAML, array=True) == []


def test_yaml_keeps_odd_values_whole_and_ascii() -> None:
    odd = "line one\nline: two # not a comment\u00e9 " + "x" * 200
    ws = workspace(pod_labels={"gpwsman": "true", "note": odd})
    (doc,) = render([ws], output.Format.YAML, array=False)
    assert doc.isascii()
    assert yaml.safe_load(doc)["pod_labels"]["note"] == odd


def test_name_is_one_instance_id_per_line() -> None:
    assert render(two(), output.Format.NAME, array=True) == ["inst-1", "inst-2"]
    assert render([], output.Format.NAME, array=True) == []


def test_wide_adds_columns_after_the_table_s_own() -> None:
    (text,) = render(two(), output.Format.WIDE, array=True)
    header, first, _ = text.splitlines()
    assert header.split() == ["INSTANCE", "POD", "CONTAINER", "PID", "STATE", "AGE",
                              "WORKSPACE", "OWNER", "SCHEME", "IMAGE"]  # fmt: skip
    ws = workspace()
    assert first.split() == [
        *["inst-1", "default/ws-inst-1", CID[:12], "4242", "running", "5m"],
        *[str(ws.workspace_id), str(ws.owner_id), "gitpod-mk1", ws.image],
    ]
    (narrow,) = render(two(), output.Format.TABLE, array=True)
    assert narrow == output.table(two(), now=1_700_000_000.25 + 300)


def test_a_table_cell_is_one_word_whatever_the_label_said() -> None:
    ws = workspace(workspace_id="evil\ninst-9  default/forged", owner_id=None)
    (text,) = render([ws], output.Format.WIDE, array=True)
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[1].split()[6:8] == ["evil?inst-9??default/forged", "-"]


def test_no_secret_in_yaml_wide_or_name() -> None:
    token = "gp-bearer-s3cr3t"
    ws = workspace(
        pod_labels={"gpwsman": "true", "auth-token": token},
        pod_annotations={"gitpod/ownerToken": token},
        container_annotations={"apiKey": token},
    )
    for fmt in (output.Format.YAML, output.Format.WIDE, output.Format.NAME, output.Format.JSON):
        assert token not in "\n".join(render([ws], fmt, array=True)), fmt


def test_watch_text_is_the_human_line() -> None:
    change = WorkspaceChange(kind=ChangeKind.RUNNING, ts=1.0, workspace=workspace())
    with pytest.raises(ValueError, match="text"):
        render([workspace()], output.Format.TEXT, array=True)  # not a form of workspaces
    assert "running" in output.pretty_change(change)
