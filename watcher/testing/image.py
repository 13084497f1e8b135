"""Test images built by hand, because no registry is reachable from the test machines.

An OCI image-layout tar (``oci-layout``, ``index.json``, ``blobs/sha256/*``) is written with the
standard library only: one uncompressed layer holding a static ``/bin/busybox`` and its applet
symlinks, and one small config per image. Two images share that layer but get *distinct*
configs (different ``history``), so containerd gives them distinct image ids and CRI records the
right image on each container. The configs carry no ``Labels``: image labels would leak into the
CRI container labels and spoil the "exactly the kubelet labels" property tests rely on.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PAUSE_IMAGE = "localhost/ws-watcher/pause:1"
"""The CRI ``sandbox_image``: any image whose entrypoint sleeps forever will do."""
WORKSPACE_IMAGE = "localhost/ws-watcher/workspace:1"
"""The default image of pod containers."""

BUSYBOX = Path("/bin/busybox")
APPLETS: tuple[str, ...] = (
    "sh", "sleep", "cat", "ls", "echo", "touch", "mkdir", "rm", "ps", "grep", "head", "tail",
    "env", "true", "false", "test", "id", "kill", "wc", "date", "hostname",
)  # fmt: skip
EMPTY_DIRS: tuple[str, ...] = ("tmp", "etc", "proc", "sys", "dev", "root", "workspace")

_MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
_MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
_MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
_CREATED = "2024-01-01T00:00:00Z"  # fixed: the same inputs give the same image ids
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64"}  # fmt: skip
"""``platform.machine()`` → the architecture's name in OCI (Go's ``GOARCH``)."""


@dataclass(frozen=True, kw_only=True)
class ImageDef:
    """One image of the tar: its full reference and a sentence that makes its config unique."""

    ref: str
    description: str
    entrypoint: Sequence[str] = ("/bin/sleep", "infinity")


DEFAULT_IMAGES: tuple[ImageDef, ...] = (
    ImageDef(ref=PAUSE_IMAGE, description="ws-watcher test rig: pause (sandbox) image"),
    ImageDef(ref=WORKSPACE_IMAGE, description="ws-watcher test rig: workspace image"),
)


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes | None = None) -> None:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def busybox_layer(busybox: Path = BUSYBOX, applets: Iterable[str] = APPLETS) -> bytes:
    """An uncompressed, reproducible layer tar: ``bin/busybox``, applet links, empty dirs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin", *EMPTY_DIRS):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name == "tmp" else 0o755
            _add(tar, info)
        data = busybox.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        _add(tar, info, data)
        for applet in applets:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            _add(tar, info)
    return buf.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes, media_type: str) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def build_image_layout(
    dest: Path, images: Sequence[ImageDef] = DEFAULT_IMAGES, busybox: Path = BUSYBOX
) -> Path:
    """Write an OCI image-layout tar with ``images`` to ``dest``; return ``dest``.

    Import it with ``ctr -n k8s.io images import --snapshotter S dest`` (S: CRI's snapshotter,
    e.g. ``overlayfs``); each manifest is annotated with ``io.containerd.image.name`` (the full
    reference ctr names the image by) and ``org.opencontainers.image.ref.name`` (the tag, for
    other OCI tools).
    """
    if not busybox.is_file():
        raise FileNotFoundError(f"{busybox} is missing: install busybox-static")
    blobs: dict[str, bytes] = {}
    layer = busybox_layer(busybox)
    layer_desc = _blob(blobs, layer, _MEDIA_LAYER)
    arch = GOARCH.get(platform.machine(), platform.machine())
    manifests = []
    for image in images:
        config = {
            "architecture": arch,
            "os": "linux",
            "created": _CREATED,
            "config": {"Entrypoint": list(image.entrypoint), "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
            "history": [{"created": _CREATED, "created_by": image.description}],
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": _MEDIA_MANIFEST,
            "config": _blob(blobs, _json(config), _MEDIA_CONFIG),
            "layers": [layer_desc],
        }
        desc = _blob(blobs, _json(manifest), _MEDIA_MANIFEST)
        desc["platform"] = {"architecture": arch, "os": "linux"}
        desc["annotations"] = {
            "io.containerd.image.name": image.ref,
            "org.opencontainers.image.ref.name": image.ref.rpartition(":")[2],
        }
        manifests.append(desc)
    index = {"schemaVersion": 2, "mediaType": _MEDIA_INDEX, "manifests": manifests}
    files = {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        "index.json": _json(index),
        **{f"blobs/sha256/{d.removeprefix('sha256:')}": b for d, b in blobs.items()},
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirname in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(dirname)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            _add(tar, info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            _add(tar, info, data)
    return dest
