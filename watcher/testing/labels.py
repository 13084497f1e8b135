"""Pod labels of the two Gitpod workspace generations, as ws-manager puts them on the pod.

They end up on the CRI *sandbox* only (containerd's app containers carry just the kubelet's
``io.kubernetes.*`` labels), which is exactly what the watcher has to cope with.
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
