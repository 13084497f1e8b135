"""A hostile-input fuzzer over what containerd hands the watcher: container records (labels,
OCI specs, CRI extensions) and event payloads — nested and huge JSON, invalid UTF-8, odd
Unicode, garbage bytes, wrong types. Decoding never raises; what comes out is a record the
index accepts, and other containers are not affected.

`WS_WATCHER_FUZZ_EXAMPLES` examples per fuzzer (300 in CI); `python -m benchmarks.hunt fuzz`
runs a long hunt.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from containerd_protos.services.containers.v1 import containers_pb2
from containerd_protos.types import event_pb2
from watcher import decode
from watcher.index import Index
from watcher.inputs import ContainerSeen

EVENT_TYPES = [*sorted(decode.KNOWN_EVENT_TYPES), "containerd.events.FromTheFuture", ""]
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)  # any Unicode, no surrogates
JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=30,
)
CRI_KEYS = [decode.CRI_CONTAINER_EXTENSION, decode.CRI_SANDBOX_EXTENSION]
#: examples per fuzzer in CI; `python -m benchmarks.fuzz` runs many more
EXAMPLES = int(os.environ.get("WS_WATCHER_FUZZ_EXAMPLES", "300"))


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def blobs(draw: st.DrawFn) -> bytes:
    """What a spec or an extension may hold: JSON of any shape, nested deep, huge, broken."""
    kind = draw(st.sampled_from(["json", "cri", "deep", "huge", "bytes", "bad-utf8", "empty"]))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "cri":  # the CRI shape with wrong types inside
        fields = ("Config", "SandboxID", "LogPath", "ImageRef")
        meta = {"Metadata": {name: draw(JSON_VALUES) for name in fields}}
        return json.dumps(meta).encode()
    if kind == "deep":
        return nested(draw(st.integers(900, 50_000)))
    if kind == "huge":
        return json.dumps({"annotations": {f"k{i}": "v" * 100 for i in range(20_000)}}).encode()
    if kind == "bad-utf8":
        return b'{"linux": {"cgroupsPath": "\xff\xfe/x"}, "mounts": [{"source": "\xc3("}]}'
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    return b""


@st.composite
def containers(draw: st.DrawFn) -> containers_pb2.Container:
    pb = containers_pb2.Container(
        id=draw(TEXT),
        labels=draw(st.dictionaries(TEXT, TEXT, max_size=6)),
        image=draw(TEXT),
        snapshotter=draw(TEXT),
        snapshot_key=draw(TEXT),
    )
    if draw(st.booleans()):
        pb.labels["io.cri-containerd.kind"] = draw(st.sampled_from(["sandbox", "container"]))
        pb.labels["io.kubernetes.container.name"] = "workspace"
    if draw(st.booleans()):
        pb.spec.type_url = draw(st.sampled_from([decode.SPEC_TYPE_URL, "x/y"]))
        pb.spec.value = draw(blobs())
    for key in draw(st.lists(st.sampled_from(CRI_KEYS), max_size=2, unique=True)):
        pb.extensions[key].value = draw(blobs())
    return pb


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile=st.lists(containers(), min_size=1, max_size=4))
def test_any_container_decodes_and_indexes(hostile: list[containers_pb2.Container]) -> None:
    index = Index()
    for pb in hostile:
        record = decode.container(pb)  # never raises
        assert record.id == pb.id
        index.apply(ContainerSeen(ts=1.0, container=record))  # and the index takes it


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    type_url=st.sampled_from(EVENT_TYPES),
    value=st.binary(max_size=300),
    topic=TEXT,
    namespace=TEXT,
)
def test_any_event_payload_decodes_or_is_skipped(
    type_url: str, value: bytes, topic: str, namespace: str
) -> None:
    pb = event_pb2.Envelope(topic=topic, namespace=namespace)
    pb.event.type_url = type_url
    pb.event.value = value
    env = decode.envelope(pb, ts=1.0)  # never raises
    assert env.topic == topic
    if env.event is not None:
        Index().apply(env.event)


def test_a_16_mib_spec_decodes(caplog: Any) -> None:
    pb = containers_pb2.Container(id="big", labels={"io.cri-containerd.kind": "container"})
    pb.spec.type_url = decode.SPEC_TYPE_URL
    pb.spec.value = json.dumps(
        {"linux": {"cgroupsPath": "/k8s.io/big"}, "pad": "x" * (16 * 1024 * 1024 - 100)}
    ).encode()
    assert decode.container(pb).cgroup_path == "/k8s.io/big"
