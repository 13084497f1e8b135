"""Label schemes as data: which pods are workspaces, and where their ids are.

Synopsis::

    ident = match(sandbox.labels)            # GITPOD_SCHEMES: mk1, then mk2
    if ident is not None:
        ident.scheme, ident.instance_id, ident.workspace_id, ident.owner_id
    own = pod_labels(sandbox.labels)         # without io.kubernetes.* / io.cri-containerd.*

    # another kind of workspace pod is configuration, not code:
    mine = LabelScheme.generic(
        name="devpods", require={"app": "devpod"}, instance_label="devpod/id",
        container_name="main",
    )
    match(labels, (*GITPOD_SCHEMES, mine))

Rules of this module:

* Only the *sandbox* labels (the pod's own labels, which CRI puts on the sandbox container) are
  matched; app containers carry no pod labels (see ``../shared/containerd-notes.md``).
* Schemes are tried in order; the first whose ``require``/``forbid`` hold **and** which finds a
  non-empty instance id wins. A pod without workspace labels matches nothing.
* Pure: no I/O, no clock.

Gitpod facts encoded here: a sandbox with ``gpwsman`` is from the older ws-manager ("mk1"),
instance id in ``workspaceID``, workspace id in ``metaID``. Otherwise ws-manager-mk2: instance
id in ``gitpod.io/instanceID``, workspace id in ``metaID``, falling back to ``workspaceID`` for
mk2 releases before February 2023 that had no ``metaID`` (Gitpod's own watcher always takes the
workspace id from ``workspaceID``, which holds the *instance* id on current mk2 pods — the
defect we do not copy). The owner is in ``owner`` for both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from watcher.cri import BOOKKEEPING_PREFIXES
from watcher.errors import UsageError
from watcher.published import InstanceId

__all__ = [
    "GITPOD_MK1",
    "GITPOD_MK2",
    "GITPOD_SCHEMES",
    "LabelScheme",
    "WorkspaceIdentity",
    "match",
    "pod_labels",
    "schemes_from_toml",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelScheme:
    """How one kind of workspace pod is recognised, and where its ids are.

    Attributes:
        name: a short name, reported on the identity (``"gitpod-mk1"``).
        require: sandbox labels that must be present; a value of None accepts any value,
            a string must be equal.
        forbid: sandbox labels that must be absent.
        instance_id: label keys tried in order; the first present non-empty value is the
            instance id. No value: the scheme does not match.
        workspace_id: label keys for the workspace id, first present non-empty wins (else None).
        owner_id: label keys for the owner id, likewise.
        container_name: the Kubernetes name of the main container; the pod's other containers
            are sidecars and never workspaces.
    """

    name: str
    require: Mapping[str, str | None]
    forbid: tuple[str, ...] = ()
    instance_id: tuple[str, ...]
    workspace_id: tuple[str, ...] = ()
    owner_id: tuple[str, ...] = ()
    container_name: str = "workspace"

    def __post_init__(self) -> None:
        if not self.name:
            raise UsageError("a label scheme needs a name")
        if not self.instance_id or not all(self.instance_id):
            raise UsageError(f"label scheme {self.name!r}: instance_id needs label keys")
        if not self.container_name:
            raise UsageError(f"label scheme {self.name!r}: container_name must not be empty")
        clash = set(self.require) & set(self.forbid)
        if clash:
            raise UsageError(
                f"label scheme {self.name!r}: labels both required and forbidden: {sorted(clash)}"
            )
        # own a read-only copy: a caller's dict changed later must not change the scheme
        object.__setattr__(self, "require", MappingProxyType(dict(self.require)))
        for attr in ("forbid", "instance_id", "workspace_id", "owner_id"):
            value = getattr(self, attr)
            if isinstance(value, str):  # a lone key instead of a tuple of keys
                raise UsageError(f"label scheme {self.name!r}: {attr} must be a tuple of keys")
            object.__setattr__(self, attr, tuple(value))

    @classmethod
    def generic(
        cls,
        *,
        name: str,
        require: Mapping[str, str | None],
        instance_label: str,
        workspace_label: str | None = None,
        owner_label: str | None = None,
        container_name: str = "workspace",
        forbid: Sequence[str] = (),
    ) -> LabelScheme:
        """ "Pods whose sandbox has these labels; the container named X is the workspace".

        The instance id is required: ``instance_label`` is always added to ``require``.
        """
        req: dict[str, str | None] = {instance_label: None}
        req.update(require)
        return cls(
            name=name,
            require=req,
            forbid=tuple(forbid),
            instance_id=(instance_label,),
            workspace_id=(workspace_label,) if workspace_label else (),
            owner_id=(owner_label,) if owner_label else (),
            container_name=container_name,
        )

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Do `require` and `forbid` hold for these sandbox labels? (ids not checked)"""
        for key, want in self.require.items():
            have = labels.get(key)
            if have is None or (want is not None and have != want):
                return False
        return not any(key in labels for key in self.forbid)

    def identify(self, labels: Mapping[str, str]) -> WorkspaceIdentity | None:
        """The identity these sandbox labels give under this scheme, or None."""
        if not self.matches(labels):
            return None
        instance = _first(labels, self.instance_id)
        if instance is None:
            return None
        return WorkspaceIdentity(
            scheme=self.name,
            instance_id=InstanceId(instance),
            workspace_id=_first(labels, self.workspace_id),
            owner_id=_first(labels, self.owner_id),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceIdentity:
    """Who a workspace pod is, by its sandbox labels."""

    scheme: str
    instance_id: InstanceId
    workspace_id: str | None
    owner_id: str | None


def _first(labels: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = labels.get(key)
        if value:
            return value
    return None


GITPOD_MK1 = LabelScheme(
    name="gitpod-mk1",
    require={"gpwsman": None},
    instance_id=("workspaceID",),
    workspace_id=("metaID",),
    owner_id=("owner",),
)
GITPOD_MK2 = LabelScheme(
    name="gitpod-mk2",
    require={"gitpod.io/instanceID": None},
    forbid=("gpwsman",),
    instance_id=("gitpod.io/instanceID",),
    # metaID on current mk2; early mk2 (before February 2023) had only workspaceID
    workspace_id=("metaID", "workspaceID"),
    owner_id=("owner",),
)
#: both Gitpod workspace-manager generations, told apart by `gpwsman` (as Gitpod does)
GITPOD_SCHEMES: tuple[LabelScheme, ...] = (GITPOD_MK1, GITPOD_MK2)


def match(
    labels: Mapping[str, str], schemes: Sequence[LabelScheme] = GITPOD_SCHEMES
) -> WorkspaceIdentity | None:
    """The identity of the first scheme these *sandbox* labels satisfy, or None."""
    for scheme in schemes:
        ident = scheme.identify(labels)
        if ident is not None:
            return ident
    return None


def pod_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The pod's own labels: without the kubelet's and CRI's bookkeeping labels."""
    return {k: v for k, v in labels.items() if not k.startswith(BOOKKEEPING_PREFIXES)}


# --- schemes as a file -------------------------------------------------------------------

_SCHEME_KEYS = {
    "name", "require", "forbid", "instance_label", "workspace_label", "owner_label", "container",
}  # fmt: skip


def schemes_from_toml(text: str, source: str = "<schemes>") -> tuple[LabelScheme, ...]:
    """Label schemes written as TOML, for platforms other than Gitpod::

        [[scheme]]
        name = "devpods"                       # reported on each workspace
        require = { app = "devpod" }           # sandbox labels; "*" accepts any value
        instance_label = "devpod/id"           # where the instance id is (required)
        workspace_label = "devpod/workspace"   # optional
        owner_label = "devpod/owner"           # optional
        container = "main"                     # the main container (default "workspace")
        forbid = ["devpod/paused"]             # optional: labels that must be absent

    Raises:
        UsageError: not TOML, or a scheme that cannot work; the message names `source`, the
            scheme and the key.
    """
    import tomllib  # only for this: the core's import stays light

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: not TOML: {exc}") from exc
    unknown = set(doc) - {"scheme"}
    if unknown:
        raise UsageError(f"{source}: unknown top-level keys {sorted(unknown)} (use [[scheme]])")
    entries = doc.get("scheme")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{source}: no [[scheme]] in it")
    schemes = tuple(_scheme(entry, f"{source}: scheme {i + 1}") for i, entry in enumerate(entries))
    names = [s.name for s in schemes]
    if len(set(names)) != len(names):
        raise UsageError(f"{source}: scheme names must differ: {names}")
    return schemes


def _scheme(entry: object, where: str) -> LabelScheme:
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: not a table")
    unknown = set(entry) - _SCHEME_KEYS
    if unknown:
        raise UsageError(f"{where}: unknown keys {sorted(unknown)}")

    def text(key: str, *, required: bool = False) -> str | None:
        value = entry.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise UsageError(f"{where}: {key} must be a non-empty string")
        return value

    require = entry.get("require", {})
    if not isinstance(require, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in require.items()
    ):
        raise UsageError(f'{where}: require must be a table of label = "value" (or "*")')
    forbid = entry.get("forbid", [])
    if not isinstance(forbid, list) or not all(isinstance(k, str) and k for k in forbid):
        raise UsageError(f"{where}: forbid must be a list of label keys")
    return LabelScheme.generic(
        name=text("name", required=True) or "",
        require={k: None if v == "*" else v for k, v in require.items()},
        instance_label=text("instance_label", required=True) or "",
        workspace_label=text("workspace_label"),
        owner_label=text("owner_label"),
        container_name=text("container") or "workspace",
        forbid=forbid,
    )
