"""Label schemes: which sandboxes are workspace pods, and where their ids are."""

from __future__ import annotations

import pytest

from watcher.errors import UsageError
from watcher.labels import (
    GITPOD_MK1,
    GITPOD_MK2,
    GITPOD_SCHEMES,
    LabelScheme,
    WorkspaceIdentity,
    match,
    pod_labels,
)
from watcher.published import InstanceId

BOOKKEEPING = {
    "io.cri-containerd.kind": "sandbox",
    "io.kubernetes.pod.name": "ws-abc",
    "io.kubernetes.pod.namespace": "default",
    "io.kubernetes.pod.uid": "uid-1",
}
COMMON = {"app": "gitpod", "component": "workspace", "workspaceType": "regular", "owner": "own-1"}
MK1 = {
    **BOOKKEEPING,
    **COMMON,
    "gpwsman": "true",
    "workspaceID": "inst-1",
    "metaID": "ws-1",
    "headless": "false",
}
MK2 = {
    **BOOKKEEPING,
    **COMMON,
    "gitpod.io/managed-by": "ws-manager-mk2",
    "workspaceID": "inst-2",
    "metaID": "ws-2",
    "gitpod.io/instanceID": "inst-2",
    "gitpod.io/headless": "false",
}
MK2_EARLY = {  # mk2 before February 2023: workspace id in workspaceID, no metaID
    **BOOKKEEPING,
    **COMMON,
    "gitpod.io/managed-by": "ws-manager-mk2",
    "workspaceID": "ws-3",
    "gitpod.io/instanceID": "inst-3",
}


def test_mk1() -> None:
    assert match(MK1) == WorkspaceIdentity(
        scheme="gitpod-mk1", instance_id=InstanceId("inst-1"), workspace_id="ws-1", owner_id="own-1"
    )


def test_mk2_takes_the_workspace_id_from_meta_id_not_workspace_id() -> None:
    # Gitpod's watcher reads workspaceID here, which is the *instance* id on current mk2
    ident = match(MK2)
    assert ident == WorkspaceIdentity(
        scheme="gitpod-mk2", instance_id=InstanceId("inst-2"), workspace_id="ws-2", owner_id="own-1"
    )
    assert ident is not None and ident.workspace_id != MK2["workspaceID"]


def test_early_mk2_falls_back_to_workspace_id() -> None:
    assert match(MK2_EARLY) == WorkspaceIdentity(
        scheme="gitpod-mk2", instance_id=InstanceId("inst-3"), workspace_id="ws-3", owner_id="own-1"
    )


def test_gpwsman_decides_the_generation() -> None:
    # a mk1 pod that also carries gitpod.io/instanceID is still mk1 (instance id workspaceID)
    ident = match({**MK1, "gitpod.io/instanceID": "other"})
    assert ident is not None
    assert (ident.scheme, ident.instance_id) == ("gitpod-mk1", "inst-1")


def test_mk1_without_instance_id_matches_nothing() -> None:
    labels = {k: v for k, v in MK1.items() if k != "workspaceID"}
    assert match(labels) is None
    assert match({**MK1, "workspaceID": ""}) is None  # empty is not an id


def test_mk2_without_instance_id_matches_nothing() -> None:
    labels = {k: v for k, v in MK2.items() if k != "gitpod.io/instanceID"}
    assert match(labels) is None


def test_missing_owner_and_workspace_id_are_none() -> None:
    ident = match({"gitpod.io/instanceID": "i"})
    assert ident == WorkspaceIdentity(
        scheme="gitpod-mk2", instance_id=InstanceId("i"), workspace_id=None, owner_id=None
    )


@pytest.mark.parametrize(
    "labels",
    [
        {},
        dict(BOOKKEEPING),
        {**BOOKKEEPING, "app": "gitpod", "component": "ws-daemon"},
        {**BOOKKEEPING, "workspaceID": "x"},  # neither gpwsman nor gitpod.io/instanceID
    ],
)
def test_other_pods_match_nothing(labels: dict[str, str]) -> None:
    assert match(labels) is None


def test_generic_scheme() -> None:
    scheme = LabelScheme.generic(
        name="devpods",
        require={"app": "devpod"},
        instance_label="devpod/id",
        workspace_label="devpod/ws",
        owner_label="devpod/owner",
        container_name="main",
    )
    assert scheme.container_name == "main"
    schemes = (*GITPOD_SCHEMES, scheme)
    labels = {"app": "devpod", "devpod/id": "d1", "devpod/ws": "w", "devpod/owner": "o"}
    assert match(labels, schemes) == WorkspaceIdentity(
        scheme="devpods", instance_id=InstanceId("d1"), workspace_id="w", owner_id="o"
    )
    assert match({**labels, "app": "other"}, schemes) is None  # required value differs
    assert match({"app": "devpod"}, schemes) is None  # no instance id
    assert match(labels) is None  # not among the default schemes


def test_require_any_value_and_forbid() -> None:
    scheme = LabelScheme(name="s", require={"a": None}, forbid=("b",), instance_id=("id1", "id2"))
    assert scheme.matches({"a": "anything"})
    assert not scheme.matches({"a": "x", "b": ""})  # present counts, whatever the value
    assert not scheme.matches({})
    # first present non-empty key wins
    ident = scheme.identify({"a": "", "id1": "", "id2": "second"})
    assert ident is not None and ident.instance_id == "second"


def test_first_matching_scheme_wins() -> None:
    one = LabelScheme(name="one", require={"x": None}, instance_id=("x",))
    two = LabelScheme(name="two", require={"x": None}, instance_id=("x",))
    ident = match({"x": "1"}, (one, two))
    assert ident is not None and ident.scheme == "one"
    # a scheme whose requirements hold but which finds no id lets the next one try
    three = LabelScheme(name="three", require={"x": None}, instance_id=("y",))
    ident = match({"x": "1"}, (three, two))
    assert ident is not None and ident.scheme == "two"


def test_scheme_owns_a_copy_of_require() -> None:
    require: dict[str, str | None] = {"a": None}
    scheme = LabelScheme(name="s", require=require, instance_id=("a",))
    require["b"] = None
    assert dict(scheme.require) == {"a": None}
    with pytest.raises(TypeError):
        scheme.require["c"] = None  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "", "require": {}, "instance_id": ("a",)},
        {"name": "s", "require": {}, "instance_id": ()},
        {"name": "s", "require": {}, "instance_id": ("",)},
        {"name": "s", "require": {}, "instance_id": "abc"},
        {"name": "s", "require": {"a": None}, "forbid": ("a",), "instance_id": ("a",)},
        {"name": "s", "require": {}, "instance_id": ("a",), "container_name": ""},
    ],
)
def test_invalid_schemes_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        LabelScheme(**kwargs)  # type: ignore[arg-type]


def test_gitpod_schemes() -> None:
    assert GITPOD_SCHEMES == (GITPOD_MK1, GITPOD_MK2)
    assert GITPOD_MK1.container_name == GITPOD_MK2.container_name == "workspace"


def test_pod_labels_drop_bookkeeping() -> None:
    labels = {**MK2, "io.cri-containerd.image": "managed", "io.kubernetes.container.name": "x"}
    own = pod_labels(labels)
    assert not any(k.startswith(("io.kubernetes.", "io.cri-containerd.")) for k in own)
    assert own["gitpod.io/instanceID"] == "inst-2"
    assert own["app"] == "gitpod"
    assert len(own) == len(MK2) - len(BOOKKEEPING)
