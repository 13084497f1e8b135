"""The CRI pod join: workspace sandboxes, and the app containers that join them.

Synopsis::

    pods = PodJoin(schemes)
    sandbox = pods.add(record)          # a sandbox record that matches a scheme, else None
    pods.attach(cid, facts, record)     # an app container's join keys, and it as a child
    pods.workspace(cid, facts)          # its visible Workspace snapshot, or None
    pods.children(sandbox)              # the containers whose snapshot a sandbox change moves
    pods.detach(cid, facts)             # it left (deleted, relabelled, re-attached)
    pods.release(facts)                 # ... so the deleted sandboxes it joined may go
    pods.drop(sandbox)                  # a sandbox that no longer matches, or was replaced

Rules of this module (the index's rules about the join live here):

* **Sandboxes carry the pod.** CRI puts the pod's labels on the sandbox (pause) container
  only; the first scheme they satisfy makes it a workspace sandbox, else it is not kept.
  App containers carry only their container name and pod name/namespace/uid.
* **An app container joins its sandbox** by the CRI metadata's `sandbox_id`, else by pod
  uid (the newest sandbox of that uid: highest attempt, latest creation, id).
* **Visible.** A container is a visible workspace iff its record is known, it is named like
  its sandbox's scheme's `container_name`, and that sandbox is known. Sidecars and other pods
  are never visible.
* **Either side may come first.** The join is recomputed whenever either side changes
  (`children` says whose), so no second pass over a listing is needed.
* **A deleted sandbox stays while a live container joins it** (the kubelet deletes the
  containers first, a reordered delivery must not matter); it is purged with the last one.
* **Cost.** `workspace` is O(1) (O(sandboxes of the uid) for a uid join); `children` is
  O(containers of the pod).

The join keeps no task facts and publishes nothing (`watcher.facts`, `watcher.publishing`).
No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from watcher.containerd_records import (
    EMPTY_MAP,
    ContainerId,
    ContainerRecord,
    SandboxId,
    frozen_map,
)
from watcher.cri import POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL
from watcher.facts import Facts, container_name
from watcher.labels import LabelScheme, WorkspaceIdentity, pod_labels
from watcher.published import Workspace

__all__ = ["PodJoin", "Sandbox"]

K = TypeVar("K")
V = TypeVar("V")


def _discard(sets: dict[K, set[V]], key: K, member: V) -> None:
    """Take `member` out of the set at `key`; an emptied set goes (memory stays bounded)."""
    members = sets.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del sets[key]


@dataclass(slots=True)
class Sandbox:
    """A known sandbox that matches a scheme."""

    id: SandboxId
    record: ContainerRecord
    scheme: LabelScheme
    identity: WorkspaceIdentity
    uid: str | None
    pod_name: str
    pod_namespace: str
    pod_labels: Mapping[str, str]
    pod_annotations: Mapping[str, str]
    order: tuple[int, float, str]  # newest sandbox of a uid = max
    deleted: bool = False
    touched: int = 0  # `Index.mark()` of the last input about it (see `Relisted.since`)


class PodJoin:
    """Workspace sandboxes, and the app containers that refer to them (joined or not yet).

    The indexes are public to the index that owns the join (and its tests): read them,
    change them only through the methods.
    """

    def __init__(self, schemes: Sequence[LabelScheme]) -> None:
        self.schemes = schemes
        self.sandboxes: dict[SandboxId, Sandbox] = {}
        self.by_uid: dict[str, set[SandboxId]] = {}  # sandboxes of a pod uid
        # the app containers that refer to a sandbox: by its id, or by the pod uid when
        # their CRI metadata names no sandbox
        self.children_by_sid: dict[SandboxId, set[ContainerId]] = {}
        self.children_by_uid: dict[str, set[ContainerId]] = {}

    # --- sandboxes -------------------------------------------------------------------------

    def add(self, rec: ContainerRecord) -> Sandbox | None:
        """Keep a sandbox record that matches a scheme (the first that does); None if none."""
        for scheme in self.schemes:
            identity = scheme.identify(rec.labels)
            if identity is not None:
                break
        else:
            return None
        sid = SandboxId(rec.id)
        cri = rec.cri_sandbox
        labels = rec.labels
        uid = labels.get(POD_UID_LABEL) or (cri.uid if cri is not None else None)
        sandbox = Sandbox(
            id=sid,
            record=rec,
            scheme=scheme,
            identity=identity,
            uid=uid,
            pod_name=labels.get(POD_NAME_LABEL) or (cri.name if cri and cri.name else ""),
            pod_namespace=(
                labels.get(POD_NAMESPACE_LABEL) or (cri.namespace if cri and cri.namespace else "")
            ),
            pod_labels=frozen_map(pod_labels(labels)),
            # read-only whoever made the record: published workspaces share these maps
            pod_annotations=frozen_map(cri.annotations) if cri is not None else EMPTY_MAP,
            order=(
                cri.attempt if cri is not None and cri.attempt is not None else -1,
                float("-inf") if rec.created_at is None else rec.created_at,
                sid,
            ),
        )
        self.sandboxes[sid] = sandbox
        if uid:
            self.by_uid.setdefault(uid, set()).add(sid)
        return sandbox

    def drop(self, sandbox: Sandbox) -> None:
        """Forget a sandbox (its children stay, unjoined)."""
        del self.sandboxes[sandbox.id]
        if sandbox.uid:
            _discard(self.by_uid, sandbox.uid, sandbox.id)

    def children(self, sandbox: Sandbox) -> set[ContainerId]:
        """The app containers that refer to this sandbox (by id or by its pod uid)."""
        children = set(self.children_by_sid.get(sandbox.id, ()))
        if sandbox.uid:
            children.update(self.children_by_uid.get(sandbox.uid, ()))
        return children

    def purge(self, sandbox: Sandbox) -> None:
        """Forget a deleted sandbox once no live container can join it."""
        if not sandbox.deleted or self.children_by_sid.get(sandbox.id):
            return
        if sandbox.uid and self.children_by_uid.get(sandbox.uid):
            return
        self.drop(sandbox)

    def purge_all(self) -> None:
        """`purge` every sandbox (after a listing re-attached what is left)."""
        for sandbox in list(self.sandboxes.values()):
            self.purge(sandbox)

    # --- app containers --------------------------------------------------------------------

    def attach(self, cid: ContainerId, facts: Facts, rec: ContainerRecord) -> None:
        """Make `rec` the container's record: derive its join keys, and count it as a child
        of the sandbox it refers to (known or not yet)."""
        facts.record = rec
        facts.name = container_name(rec)
        cri = rec.cri_container
        facts.sandbox_ref = cri.sandbox_id if cri is not None and cri.sandbox_id else None
        facts.uid_ref = None
        if facts.sandbox_ref is not None:
            self.children_by_sid.setdefault(facts.sandbox_ref, set()).add(cid)
        else:
            uid = rec.labels.get(POD_UID_LABEL)
            if uid:
                facts.uid_ref = uid
                self.children_by_uid.setdefault(uid, set()).add(cid)

    def detach(self, cid: ContainerId, facts: Facts) -> None:
        """No longer count the container as a child of the sandbox it refers to."""
        if facts.sandbox_ref is not None:
            _discard(self.children_by_sid, facts.sandbox_ref, cid)
        elif facts.uid_ref is not None:
            _discard(self.children_by_uid, facts.uid_ref, cid)

    def release(self, facts: Facts) -> None:
        """A detached container is gone: purge the deleted sandboxes it could join."""
        if facts.sandbox_ref is not None:
            joined = self.sandboxes.get(facts.sandbox_ref)
            if joined is not None:
                self.purge(joined)
        elif facts.uid_ref is not None:
            for sid in list(self.by_uid.get(facts.uid_ref, ())):
                self.purge(self.sandboxes[sid])

    def sandbox_of(self, facts: Facts) -> Sandbox | None:
        """The sandbox the container joins, if known."""
        if facts.sandbox_ref is not None:
            return self.sandboxes.get(facts.sandbox_ref)
        if facts.uid_ref is not None:
            sids = self.by_uid.get(facts.uid_ref)
            if sids:
                if len(sids) == 1:
                    return self.sandboxes[next(iter(sids))]
                return max((self.sandboxes[s] for s in sids), key=lambda s: s.order)
        return None

    def workspace(self, cid: ContainerId, facts: Facts) -> Workspace | None:
        """The container's visible snapshot from its facts, or None if it is not visible."""
        rec = facts.record
        if rec is None:
            return None
        sandbox = self.sandbox_of(facts)
        if sandbox is None or facts.name != sandbox.scheme.container_name:
            return None
        identity = sandbox.identity
        labels = rec.labels
        cri = rec.cri_container
        return Workspace(
            instance_id=identity.instance_id,
            workspace_id=identity.workspace_id,
            owner_id=identity.owner_id,
            pod_name=labels.get(POD_NAME_LABEL) or sandbox.pod_name,
            pod_namespace=labels.get(POD_NAMESPACE_LABEL) or sandbox.pod_namespace,
            pod_uid=labels.get(POD_UID_LABEL) or sandbox.uid or "",
            sandbox_id=sandbox.id,
            container_id=cid,
            image=rec.image,
            pod_labels=sandbox.pod_labels,
            created_at=rec.created_at,
            state=facts.state(),
            pid=facts.pid,
            upperdir=facts.upperdir,
            cgroup_path=rec.cgroup_path,
            rootfs=facts.rootfs,
            exit_status=facts.exit_status,
            container_name=facts.name,
            attempt=cri.attempt if cri is not None else None,
            image_ref=cri.image_ref if cri is not None else None,
            log_path=cri.log_path if cri is not None else None,
            mounts=rec.mounts,
            pod_annotations=sandbox.pod_annotations,
            container_annotations=frozen_map(cri.annotations) if cri is not None else EMPTY_MAP,
            started_at=facts.started_at,
            exited_at=facts.exited_at,
            scheme=identity.scheme,
        )
