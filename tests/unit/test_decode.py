"""protobuf → records, including the malformed inputs decode must tolerate."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from google.protobuf.any_pb2 import Any as AnyPb

from containerd_protos.events import container_pb2, task_pb2
from containerd_protos.services.containers.v1 import containers_pb2
from containerd_protos.types import event_pb2, mount_pb2
from containerd_protos.types.task import task_pb2 as task_types_pb2
from watcher import decode, resolve
from watcher.containerd_records import ContainerId, LayerMount, TaskStatus
from watcher.cri import ContainerKind, kind_of
from watcher.inputs import (
    ContainerChanged,
    ContainerDeleted,
    TaskCreated,
    TaskDeleted,
    TaskExited,
    TaskStarted,
)

CID = "c" * 64


def _container(spec: bytes | None = None, **extensions: bytes) -> containers_pb2.Container:
    pb = containers_pb2.Container(
        id=CID,
        labels={"io.cri-containerd.kind": "container"},
        image="localhost/ws:1",
        snapshotter="overlayfs",
        snapshot_key=CID,
    )
    pb.created_at.seconds = 1700000000
    pb.created_at.nanos = 500_000_000
    if spec is not None:
        pb.spec.type_url = decode.SPEC_TYPE_URL
        pb.spec.value = spec
    for key, value in extensions.items():
        pb.extensions[key.replace("_", ".")].value = value
    return pb


SPEC = json.dumps(
    {
        "linux": {"cgroupsPath": "/kubepods/besteffort/pod1/" + CID},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    }
).encode()


def test_container_with_spec() -> None:
    rec = decode.container(_container(SPEC))
    assert rec.id == CID
    assert kind_of(rec.labels) is ContainerKind.CONTAINER
    assert rec.created_at == pytest.approx(1700000000.5)
    assert rec.cgroup_path == "/kubepods/besteffort/pod1/" + CID
    assert rec.mounts[0].destination == "/proc"
    assert rec.cri_container is None and rec.cri_sandbox is None
    with pytest.raises(TypeError):  # records are shared into published workspaces
        rec.labels["injected"] = "1"  # type: ignore[index]


@pytest.mark.parametrize("spec", [None, b"not json", b"[1]", b'{"linux": 3}', b"{}"])
def test_bad_spec_is_a_warning_not_a_dropped_container(
    spec: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        rec = decode.container(_container(spec))
    assert rec.id == CID and rec.cgroup_path is None
    assert CID in caplog.text


def test_cri_extensions() -> None:
    meta = {
        "Version": "v1",
        "Metadata": {
            "ID": CID,
            "SandboxID": "s" * 64,
            "ImageRef": "sha256:abc",
            "LogPath": "/var/log/pods/x/workspace/1.log",
            "Config": {
                "metadata": {"name": "workspace", "attempt": 1},
                "annotations": {"io.kubernetes.container.restartCount": "1"},
            },
        },
    }
    sandbox = {
        "Version": "v1",
        "Metadata": {
            "Config": {
                "metadata": {"name": "ws-1", "namespace": "default", "uid": "u1", "attempt": 0},
                "annotations": {"a": "b"},
            }
        },
    }
    pb = _container(SPEC)
    pb.extensions[decode.CRI_CONTAINER_EXTENSION].value = json.dumps(meta).encode()
    rec = decode.container(pb)
    assert rec.cri_container is not None and rec.cri_sandbox is None
    assert rec.cri_container.name == "workspace" and rec.cri_container.attempt == 1
    assert rec.cri_container.sandbox_id == "s" * 64
    assert rec.cri_container.image_ref == "sha256:abc"
    assert rec.cri_container.log_path == "/var/log/pods/x/workspace/1.log"
    assert rec.cri_container.annotations == {"io.kubernetes.container.restartCount": "1"}

    sandbox_pb = _container(b"not even json")  # a sandbox's spec is not read at all
    sandbox_pb.labels["io.cri-containerd.kind"] = "sandbox"
    sandbox_pb.extensions[decode.CRI_SANDBOX_EXTENSION].value = json.dumps(sandbox).encode()
    sandbox_rec = decode.container(sandbox_pb)
    assert sandbox_rec.cri_sandbox is not None and sandbox_rec.cri_container is None
    assert sandbox_rec.cri_sandbox.uid == "u1" and sandbox_rec.cri_sandbox.annotations == {"a": "b"}
    assert sandbox_rec.cgroup_path is None and sandbox_rec.mounts == ()


@pytest.mark.parametrize("raw", [b"garbage", b"[]", b'{"Metadata": 1}'])
def test_malformed_extension_is_tolerated(raw: bytes, caplog: pytest.LogCaptureFixture) -> None:
    pb = _container(SPEC)
    pb.extensions[decode.CRI_CONTAINER_EXTENSION].value = raw
    with caplog.at_level(logging.WARNING):
        rec = decode.container(pb)
    assert rec.cri_container is None and rec.cgroup_path is not None
    assert CID in caplog.text


def test_task_from_list_uses_id() -> None:
    pb = task_types_pb2.Process(id=CID, pid=42, status=task_types_pb2.Status.RUNNING)
    rec = decode.task(pb)
    assert rec.container_id == CID and rec.pid == 42 and rec.status is TaskStatus.RUNNING
    assert rec.exit_status is None
    stopped = decode.task(
        task_types_pb2.Process(
            container_id=CID, status=task_types_pb2.Status.STOPPED, exit_status=137
        )
    )
    assert stopped.status is TaskStatus.STOPPED and stopped.exit_status == 137


def _envelope(msg: object, topic: str, namespace: str = "k8s.io") -> event_pb2.Envelope:
    env = event_pb2.Envelope(topic=topic, namespace=namespace)
    env.timestamp.seconds = 1700000001
    payload = AnyPb()
    payload.type_url = msg.DESCRIPTOR.full_name  # type: ignore[attr-defined]
    payload.value = msg.SerializeToString()  # type: ignore[attr-defined]
    env.event.CopyFrom(payload)
    return env


def test_bare_type_url_events_decode() -> None:
    create = task_pb2.TaskCreate(
        container_id=CID,
        pid=7,
        bundle="/run/containerd/io.containerd.runtime.v2.task/k8s.io/" + CID,
        rootfs=[
            mount_pb2.Mount(
                type="overlay",
                source="overlay",
                options=["index=off", "workdir=/w", "upperdir=/u/fs", "lowerdir=/l"],
            )
        ],
    )
    env = decode.envelope(_envelope(create, "/tasks/create"), ts=5.0)
    assert env.type_name == "containerd.events.TaskCreate"
    assert env.timestamp == 1700000001
    assert isinstance(env.event, TaskCreated)
    assert env.event.pid == 7 and env.event.ts == 5.0
    assert env.event.rootfs_mounts[0].type == "overlay"
    assert env.event.upperdir is None and not env.event.located  # decode computes nothing
    # resolution reads the event: the mount type is "overlay", the snapshotter "overlayfs":
    # the upper layer is found by option, not by type; the rootfs is the bundle's
    located = resolve.locate(env.event)
    assert located.located and located.upperdir == "/u/fs"
    assert located.rootfs == f"/run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/rootfs"


def test_a_task_on_a_snapshotter_without_upper_layer_is_located_without_upperdir() -> None:
    bind = LayerMount(type="bind", source="/var/lib/c/native/snapshots/7", options=("rbind",))
    event = TaskCreated(
        ts=1.0, container_id=ContainerId(CID), pid=3, rootfs_mounts=(bind,), bundle="/b"
    )
    located = resolve.locate(event)
    assert located.located and located.upperdir is None and located.rootfs == "/b/rootfs"
    bare = TaskCreated(ts=1.0, container_id=ContainerId(CID), pid=3)  # no mounts: ask the node
    assert resolve.locate(bare) is bare


def test_all_modelled_events() -> None:
    cases = [
        (container_pb2.ContainerCreate(id=CID), ContainerChanged),
        (container_pb2.ContainerUpdate(id=CID), ContainerChanged),
        (container_pb2.ContainerDelete(id=CID), ContainerDeleted),
        (task_pb2.TaskStart(container_id=CID, pid=3), TaskStarted),
        (task_pb2.TaskExit(container_id=CID, id="exec1", exit_status=2), TaskExited),
        (task_pb2.TaskDelete(container_id=CID, exit_status=137), TaskDeleted),
    ]
    for msg, kind in cases:
        env = decode.envelope(_envelope(msg, "/x"), ts=1.0)
        assert isinstance(env.event, kind), msg
    exited = decode.envelope(_envelope(cases[4][0], "/tasks/exit"), ts=1.0).event
    assert isinstance(exited, TaskExited) and exited.exec_id == "exec1"


def test_unknown_and_garbage_events_are_skipped() -> None:
    env = event_pb2.Envelope(topic="/snapshot/prepare", namespace="k8s.io")
    env.event.type_url = "containerd.events.SnapshotPrepare"
    env.event.value = b"\x0a\x03abc"
    assert decode.envelope(env, ts=1.0).event is None
    env.event.type_url = "containerd.events.TaskCreate"
    env.event.value = b"\xff\xff\xff"
    assert decode.envelope(env, ts=1.0).event is None


def test_go_zero_time_is_no_time() -> None:
    pb = task_types_pb2.Process(id=CID, pid=1, status=task_types_pb2.Status.RUNNING)
    pb.exited_at.seconds = -62135596800  # Go's time.Time{} as containerd sends it
    assert decode.task(pb).exited_at is None


def test_a_container_that_cannot_be_decoded_keeps_its_id_and_labels(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(pb: object) -> object:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(decode, "_container", boom)
    rec = decode.container(_container(b"{}"))
    assert rec.id == CID and rec.labels == {"io.cri-containerd.kind": "container"}
    assert rec.cgroup_path is None and rec.cri_container is None
    assert CID in caplog.text and "cannot be decoded" in caplog.text


def test_deeply_nested_json_is_a_warning_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    rec = decode.container(_container(deep, **{decode.CRI_CONTAINER_EXTENSION: deep}))
    assert rec.cgroup_path is None and rec.cri_container is None
    assert "not JSON we can read" in caplog.text


def test_shared_label_strings_are_not_immortal(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sys.intern` keeps strings for good from CPython 3.12: decode shares them through a
    table of its own, bounded."""
    monkeypatch.setattr(decode, "SHARED_STRINGS", 10)
    monkeypatch.setattr(decode, "_shared", {})
    values = []
    for i in range(50):
        pb = _container(b"{}")
        pb.labels["io.kubernetes.pod.uid"] = "".join(["uid-", str(i), "-unique"])
        values.append(decode.container(pb).labels["io.kubernetes.pod.uid"])
        assert len(decode._shared) <= 10
    copy = "".join(["uid-", "7", "-unique"])
    assert sys.intern(copy) is not values[7]  # never interned by decode
    # the same value decoded twice in a row is one object
    pb = _container(b"{}")
    a = decode.container(pb).labels["io.cri-containerd.kind"]
    assert decode.container(pb).labels["io.cri-containerd.kind"] is a
