"""The JSON contract (`watcher.wire`) is stable: the same state is the same bytes whatever
order its maps came in (containerd's protobuf maps iterate in an order that varies from run
to run), on every route out — the CLI's JSON and YAML, the API's objects and feed lines."""

from __future__ import annotations

import itertools
import json

import yaml
from record_builders import workspace

from watcher.cli import output
from watcher.containerd_records import ImageInfo
from watcher.disclosure import Disclosure
from watcher.published import ChangeKind, WorkspaceChange
from watcher.wire import change_json, dumps, inspect_json, workspace_from_json, workspace_json

LABELS = {"workspaceID": "inst-1", "gpwsman": "true", "app": "ws", "Zeta": "1", "b": "2"}
#: allowed by the disclosure below, so that they are printed
ANNOTATIONS = {"gitpod/url": "u", "gitpod/id": "i", "a/x": "1", "io.kubernetes.pod.uid": "p"}
DISCLOSURE = Disclosure.with_extra(["a/*", "io.kubernetes.*"])


def orders(values: dict[str, str]) -> list[dict[str, str]]:
    """`values` in each order of its keys (as many runs might have read them)."""
    return [dict(p) for p in itertools.permutations(values.items())]


def test_label_and_annotation_maps_are_written_in_sorted_key_order() -> None:
    objs = [
        workspace_json(
            workspace(pod_labels=labels, pod_annotations=ann, container_annotations=ann),
            disclosure=DISCLOSURE,
        )
        for labels, ann in zip(orders(LABELS), itertools.cycle(orders(ANNOTATIONS)), strict=False)
    ]
    lines = {dumps(obj) for obj in objs}
    assert len(lines) == 1  # the same bytes whatever order the maps came in
    obj = objs[0]
    for key in ("pod_labels", "pod_annotations", "container_annotations"):
        got = obj[key]
        assert isinstance(got, dict)
        assert list(got) == sorted(got), key  # code point order: "Zeta" before "app"
    assert list(obj["pod_labels"]) == ["Zeta", "app", "b", "gpwsman", "workspaceID"]
    # the object's own fields keep the contract's order (not sorted)
    assert list(obj)[:2] == ["instance_id", "workspace_id"]


def test_an_images_maps_too_and_every_form_that_carries_them() -> None:
    def image(labels: dict[str, str], annotations: dict[str, str]) -> ImageInfo:
        return ImageInfo(
            name="ws:1", digest="sha256:d", media_type="m", id="sha256:i", size=1,
            annotations=annotations, labels=labels, created_at=None,
        )  # fmt: skip

    images = [
        image(labels, ann)
        for labels, ann in zip(orders(LABELS)[:24], orders(ANNOTATIONS), strict=True)
    ]
    inspected = {dumps(inspect_json(workspace(), None, image)) for image in images}
    assert len(inspected) == 1
    info = json.loads(inspected.pop())["image_info"]
    assert list(info["labels"]) == sorted(LABELS)
    assert list(info["annotations"]) == sorted(ANNOTATIONS)
    # a feed line and `watch`'s, and the YAML of `-o yaml`, carry the sorted maps as they are
    ws = workspace(pod_labels=dict(reversed(LABELS.items())))
    line = change_json(WorkspaceChange(kind=ChangeKind.RUNNING, ts=1.0, workspace=ws))
    assert list(line["pod_labels"]) == sorted(LABELS)
    document = yaml.safe_load(output.yaml_document(workspace_json(ws)))
    assert list(document["pod_labels"]) == sorted(LABELS)


def test_reading_back_keeps_the_maps() -> None:
    ws = workspace(pod_labels=dict(reversed(LABELS.items())))
    assert workspace_from_json(json.loads(dumps(workspace_json(ws)))).pod_labels == LABELS
