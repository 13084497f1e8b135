"""Pod labels of the two Gitpod workspace generations, as ws-manager puts them on the pod, and
the labels the kubelet adds.

The pod's labels end up on the CRI *sandbox* only (containerd's app containers carry just the
kubelet's ``io.kubernetes.*`` labels), which is exactly what the watcher has to cope with.
Plain data, no I/O: the fake containerd, the demo and the tests' record builders take their
labels from here.
"""

from __future__ import annotations


def _common(owner: str) -> dict[str, str]:
    return {"app": "gitpod", "component": "workspace", "workspaceType": "regular", "owner": owner}


def mk1_labels(instance_id: str, workspace_id: str, owner: str) -> dict[str, str]:
    """Labels of an older ws-manager ("mk1") workspace pod: marked by ``gpwsman=true``."""
    return {
        **_common(owner),
        "gpwsman": "true",
        "workspaceID": instance_id,
        "metaID": workspace_id,
        "headless": "false",
    }


def mk2_labels(instance_id: str, workspace_id: str, owner: str) -> dict[str, str]:
    """Labels of a ws-manager-mk2 workspace pod: no ``gpwsman``; instance id in two places."""
    return {
        **_common(owner),
        "gitpod.io/managed-by": "ws-manager-mk2",
        "workspaceID": instance_id,
        "metaID": workspace_id,
        "gitpod.io/instanceID": instance_id,
        "gitpod.io/headless": "false",
    }


def kubelet_labels(pod_name: str, pod_namespace: str, pod_uid: str) -> dict[str, str]:
    """The pod's identity as CRI labels every container of the pod, sandbox included."""
    return {
        "io.kubernetes.pod.name": pod_name,
        "io.kubernetes.pod.namespace": pod_namespace,
        "io.kubernetes.pod.uid": pod_uid,
    }
