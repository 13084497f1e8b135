"""ws-watcher's container image, made from its wheel without a registry or an image builder.

Synopsis::

    image = build_wheel_image()        # cached under ~/.cache/ws-watcher/image
    ctrd.ctr("images", "import", "--snapshotter", ctrd.snapshotter, str(image.tar))
    ...  # CreateContainer with image.ref

The top-level ``Containerfile`` is how the image is built for real (a python:3.11-slim base,
the wheel built in a first stage and installed into a venv). No registry and no container
builder can be used on the test machines, so this module makes the equivalent OCI image by
hand, from the same wheel:

* ``pip wheel --no-deps`` builds ws-watcher's wheel from the source tree; its dependencies
  are wheels fetched by ``pip download`` at the versions installed here (the versions the
  tests ran with), kept in the cache (PyPI is asked only for wheels the cache lacks);
* ``pip install --target`` installs them into a venv laid out as the Containerfile's,
  ``/opt/ws-watcher`` (``pyvenv.cfg``, ``bin/python`` → the interpreter, the console script
  ``bin/ws-watcher``, ``lib/python3.X/site-packages``);
* the interpreter is the one running this code (``sys.base_prefix``), relocated to
  ``/usr/local`` as in the python images: its binary, its standard library (without tests,
  IDLE, tkinter, ensurepip and the static library), ``libpython``, and the shared libraries
  the binary, ``lib-dynload`` and the installed extension modules link (``ldd``), plus
  ``libgcc_s`` (glibc loads it at a thread's exit), with an ``ld.so.cache`` made by
  ``ldconfig -r``;
* ``/etc/passwd`` and ``/etc/group`` name root and ``nonroot`` (65532, the Containerfile's
  user), and the image's config runs as 65532:65532, ``ws-watcher serve`` by default.

The differences from the Containerfile's image, none of which the watcher can see: no Debian
userland at all (no shell, no apt, no pip: ``ExecSync`` runs ``ws-watcher`` or ``python``), the
interpreter is this machine's (same minor version, another patch release and build), and
the system libraries are this machine's (Debian 12, as python:3.11-slim-bookworm's).

The image tar is cached by a key over everything that goes in (the wheels' contents, the
interpreter, this module's format), so a test session pays the build (~20 s) once per
change of the source tree.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from .errors import RigError
from .image import GOARCH

CACHE = Path.home() / ".cache" / "ws-watcher" / "image"
"""Dependency wheels (``wheels/``) and built image tars (``ws-watcher-*.tar``)."""
KEEP_IMAGES = 3
"""Image tars kept in the cache (the newest): one per recent state of the source tree."""
FORMAT = "2"
"""Part of the cache key: bump when what this module puts into the image changes."""
IMAGE_NAME = "localhost/ws-watcher/ws-watcher"
VENV = PurePosixPath("/opt/ws-watcher")
PREFIX = PurePosixPath("/usr/local")
"""Where the interpreter lives in the image, as in the python images."""
USER = "65532:65532"
"""The Containerfile's ``USER``: ``nonroot``, as distroless images name it."""
CMD = ("serve",)
_CREATED = "2024-01-01T00:00:00Z"  # fixed: the same inputs give the same image id
_STDLIB_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip"}
_DYNLOAD_SKIP = re.compile(
    r"^(_tkinter|_curses.*|readline|_test.*|_ctypes_test|xxlimited.*|_xxtestfuzz|nis|spwd|"
    r"ossaudiodev)\."
)  # modules for terminals, GUIs and CPython's own tests: their libraries stay out
_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")
_PASSWD = "root:x:0:0:root:/root:/usr/sbin/nologin\nnonroot:x:65532:65532::/nonexistent:/usr/sbin/nologin\n"  # noqa: E501
_GROUP = "root:x:0:\nnonroot:x:65532:\n"


@dataclass(frozen=True, kw_only=True)
class WheelImage:
    """A built image: an OCI layout tar holding one image, ``ref``."""

    ref: str
    tar: Path
    version: str  # ws-watcher's, from the wheel
    python: str  # the interpreter's version, e.g. "3.11.7"


def source_tree() -> Path:
    """The source tree this package was imported from (an editable install or a checkout)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise RigError(f"no source tree at {root}: the image is built from a checkout")
    return root


def build_wheel_image(source: Path | None = None, cache: Path = CACHE) -> WheelImage:
    """Build (or find in ``cache``) the image of the wheel built from ``source``.

    Raises:
        RigError: a build step failed (its output is in the message).
    """
    source = source or source_tree()
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wsw-image-") as scratch:
        work = Path(scratch)
        wheel = _build_wheel(source, work / "dist")
        deps = _dependency_wheels(wheel, wheels, work)
        version = _wheel_version(wheel)
        key = _key([wheel, *deps])
        ref = f"{IMAGE_NAME}:{version}-{key[:12]}"
        tar = cache / f"ws-watcher-{version}-{key[:16]}.tar"
        python = platform.python_version()
        if tar.is_file():
            return WheelImage(ref=ref, tar=tar, version=version, python=python)
        root = work / "root"
        _install(wheel, wheels, root, work)
        _add_interpreter(root)
        _add_libraries(root)
        _add_etc(root)
        layer = work / "layer.tar"
        _write_layer(root, layer)
        # whole or not at all (a killed build leaves no usable tar), and a name of its own
        # (two sessions may build the same image at once)
        partial = tar.with_name(f"{tar.name}.{os.getpid()}.partial")
        _write_layout(partial, layer, ref, version)
        partial.replace(tar)
    _prune(cache, keep=tar)
    return WheelImage(ref=ref, tar=tar, version=version, python=python)


# -- the wheels ---------------------------------------------------------------------------


def _pip(*args: str, what: str) -> str:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = done.stdout[-3000:] + done.stderr[-3000:]
        raise RigError(f"{what} failed ({' '.join(cmd)}):\n{output}")
    return done.stdout


SOURCES = ("pyproject.toml", "README.md", "LICENSE", "containerd_protos", "watcher")
"""What the wheel is built from: the Containerfile's ``COPY`` lines, the same files."""


def _build_wheel(source: Path, dist: Path) -> Path:
    # From a copy of what the Containerfile copies: an in-tree build reuses the tree's
    # build/ dir, whose build/lib keeps modules deleted from the tree since (setuptools
    # never prunes it), and they would ship.
    staged = dist.parent / "src"
    staged.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for name in SOURCES:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, staged / name, ignore=skip)
        elif path.exists():
            shutil.copy2(path, staged / name)
    # no build isolation: setuptools is installed here, and an isolated build would set one
    # up from the network every time
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(staged),
         what="building the wheel")  # fmt: skip
    found = sorted(dist.glob("ws_watcher-*.whl"))
    if len(found) != 1:
        raise RigError(f"expected one ws-watcher wheel in {dist}, found {found}")
    return found[0]


def _wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def _dependency_wheels(wheel: Path, wheels: Path, work: Path) -> list[Path]:
    """The wheels of ``wheel``'s dependencies, at the versions installed here, in ``wheels``.

    Offline from the cache when it has them all; else ``pip download`` fetches the missing
    ones from PyPI. Returns the files the resolution chose.
    """
    constraints = work / "constraints.txt"
    pins = sorted(
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in metadata.distributions()
        if dist.metadata["Name"] and _norm(dist.metadata["Name"]) != "ws-watcher"
    )
    constraints.write_text("\n".join(pins) + "\n")
    common = ("download", "--only-binary=:all:", "-d", str(wheels), "-c", str(constraints),
              str(wheel))  # fmt: skip
    try:
        out = _pip(*common, "--no-index", "--find-links", str(wheels), what="wheels from cache")
    except RigError:
        out = _pip(*common, "--find-links", str(wheels), what="downloading the dependency wheels")
    # pip 23 has no --report for download: what it chose is what it says it saved or had
    chosen = {
        Path(line.split(maxsplit=1)[1] if line.startswith("Saved ") else line[len(_HAD) :])
        for line in (raw.strip() for raw in out.splitlines())
        if line.startswith(("Saved ", _HAD))
    }
    for ours in wheels.glob("ws_watcher-*.whl"):  # pip download copies it there too
        ours.unlink()
    return sorted(wheels / p.name for p in chosen if not p.name.startswith("ws_watcher-"))


_HAD = "File was already downloaded "


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _key(wheels: Iterable[Path]) -> str:
    """A digest of what goes into the image: the wheels' members (not their zip metadata,
    which records build times), the interpreter, this module's format."""
    h = hashlib.sha256(f"{FORMAT}\0{sys.version}\0{os.path.realpath(sys.executable)}\0".encode())
    for wheel in wheels:
        h.update(wheel.name.encode() + b"\0")
        with zipfile.ZipFile(wheel) as z:
            for name in sorted(z.namelist()):
                h.update(name.encode() + b"\0" + hashlib.sha256(z.read(name)).digest())
    return h.hexdigest()


def _install(wheel: Path, wheels: Path, root: Path, work: Path) -> None:
    """The venv of the Containerfile, at ``/opt/ws-watcher`` under ``root``."""
    venv = root / VENV.relative_to("/")
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = venv / "lib" / pyver / "site-packages"
    _pip("install", "-q", "--no-index", "--find-links", str(wheels), "--target", str(site),
         "--no-warn-script-location", str(wheel), what="installing the wheel")  # fmt: skip
    shutil.rmtree(site / "bin", ignore_errors=True)  # scripts for this machine's python
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(
        f"home = {PREFIX}/bin\ninclude-system-site-packages = false\n"
        f"version = {platform.python_version()}\n"
    )
    for name in ("python", "python3", pyver):
        (venv / "bin" / name).symlink_to(f"{PREFIX}/bin/{pyver}")
    with zipfile.ZipFile(wheel) as z:
        entry_points = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
        scripts = _console_scripts(z.read(entry_points).decode())
    for name, (module, func) in scripts.items():
        script = venv / "bin" / name
        script.write_text(
            f"#!{VENV}/bin/python\nimport sys\nfrom {module} import {func}\n"
            f"if __name__ == '__main__':\n    sys.exit({func}())\n"
        )
        script.chmod(0o755)


def _console_scripts(text: str) -> dict[str, tuple[str, str]]:
    scripts: dict[str, tuple[str, str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and section == "console_scripts":
            name, _, target = (part.strip() for part in line.partition("="))
            module, _, func = target.partition(":")
            scripts[name] = (module.strip(), func.strip())
    return scripts


# -- the interpreter and its libraries ----------------------------------------------------


def _add_interpreter(root: Path) -> None:
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    prefix = root / PREFIX.relative_to("/")
    (prefix / "bin").mkdir(parents=True)
    shutil.copy2(os.path.realpath(sys.executable), prefix / "bin" / pyver)
    for name in ("python3", "python"):
        (prefix / "bin" / name).symlink_to(pyver)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dest = prefix / "lib" / pyver

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in _STDLIB_SKIP or n.startswith("config-")}
        skip |= {n for n in names if n.endswith((".opt-1.pyc", ".opt-2.pyc"))}
        if Path(directory).name == "lib-dynload":
            skip |= {n for n in names if _DYNLOAD_SKIP.match(n)}
        return skip

    shutil.copytree(stdlib, dest, symlinks=True, ignore=ignore)
    (dest / "site-packages").mkdir()


def _elf_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    yield path


def _ldd(path: Path) -> set[str]:
    done = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
    if "not found" in done.stdout:
        raise RigError(f"ldd {path}: a library is missing:\n{done.stdout}")
    found = set()
    for line in done.stdout.splitlines():
        if m := _LDD_LINE.match(line):
            found.add(m[1])
    return found


def _add_libraries(root: Path) -> None:
    """The shared libraries the image's ELF files link, at their real paths on this host
    (libpython under ``/usr/local/lib``), the merged-/usr links, and an ``ld.so.cache``."""
    needed: set[str] = set()
    for elf in _elf_files(root):
        needed |= _ldd(elf)
    gcc_s = _find_library("libgcc_s.so.1")
    needed.add(gcc_s)
    needed |= _ldd(Path(gcc_s))
    base_lib = os.path.realpath(os.path.join(sys.base_prefix, "lib"))
    for lib in sorted(needed):
        directory = os.path.realpath(os.path.dirname(lib))
        if directory == base_lib and sys.base_prefix != "/usr":
            directory = str(PREFIX / "lib")  # libpython, relocated with the interpreter
        target = root / directory.lstrip("/") / os.path.basename(lib)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(lib), target)
    for link in ("lib", "lib64", "bin", "sbin"):  # merged /usr, as on this host
        if os.path.islink(f"/{link}") and not (root / link).exists():
            (root / link).symlink_to(os.readlink(f"/{link}"))
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "ld.so.conf").write_text(f"{PREFIX}/lib\n")
    done = subprocess.run(["ldconfig", "-r", str(root)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RigError(f"ldconfig -r {root} failed:\n{done.stderr}")


def _find_library(soname: str) -> str:
    """Where the loader finds ``soname`` (``ldconfig -p``), for this machine's architecture."""
    done = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True)
    found = []
    for line in done.stdout.splitlines():
        left, _, path = line.strip().partition(" => ")
        name, _, kind = left.partition(" ")
        if name == soname:
            found.append((kind, path.strip()))
    if not found:
        raise RigError(f"{soname} not found by ldconfig -p")
    own = [path for kind, path in found if platform.machine().replace("_", "-") in kind]
    return (own or [found[0][1]])[0]


def _add_etc(root: Path) -> None:
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(_PASSWD)
    (etc / "group").write_text(_GROUP)
    for name, mode in (("tmp", 0o1777), ("proc", 0o555), ("sys", 0o555), ("dev", 0o755),
                       ("run", 0o755), ("run/ws-watcher", 0o755)):  # fmt: skip
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name).chmod(mode)


# -- the OCI layout -----------------------------------------------------------------------


def _write_layer(root: Path, dest: Path) -> None:
    """An uncompressed, reproducible layer tar of ``root`` (owner root, mtime 0)."""

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [root, *sorted(root.rglob("*"))]:
            name = "." if path == root else path.relative_to(root).as_posix()
            if name == ".":
                continue
            tar.add(path, arcname=name, recursive=False, filter=clean)


def _file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest(), path.stat().st_size


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _write_layout(dest: Path, layer: Path, ref: str, version: str) -> None:
    arch = GOARCH.get(platform.machine(), platform.machine())
    layer_digest, layer_size = _file_digest(layer)
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    config = _json({
        "architecture": arch,
        "os": "linux",
        "created": _CREATED,
        "config": {
            "User": USER,
            "Entrypoint": [f"{VENV}/bin/ws-watcher"],
            "Cmd": list(CMD),
            "Env": [
                f"PATH={VENV}/bin:{PREFIX}/bin:/usr/bin:/bin",
                "LANG=C.UTF-8",
                "PYTHONDONTWRITEBYTECODE=1",  # a read-only root file system
            ],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": _CREATED,
                     "created_by": f"ws-watcher {version} wheel on {pyver} (watcher.testing)"}],
    })  # fmt: skip
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    })  # fmt: skip
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = _json({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": ref.rpartition(":")[2]},
        }],
    })  # fmt: skip

    def add(tar: tarfile.TarFile, name: str, data: bytes | None = None) -> None:
        info = tarfile.TarInfo(name)
        info.mtime = 0
        if data is None:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        else:
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "blobs")
        add(tar, "blobs/sha256")
        add(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        add(tar, "index.json", index)
        add(tar, f"blobs/sha256/{manifest_digest.removeprefix('sha256:')}", manifest)
        add(tar, f"blobs/sha256/{config_digest.removeprefix('sha256:')}", config)
        info = tarfile.TarInfo(f"blobs/sha256/{layer_digest.removeprefix('sha256:')}")
        info.size, info.mode, info.mtime = layer_size, 0o644, 0
        with layer.open("rb") as f:
            tar.addfile(info, f)


def _prune(cache: Path, keep: Path) -> None:
    """Remove our older image tars (only files this module names ``ws-watcher-*.tar``)."""
    tars = sorted(cache.glob("ws-watcher-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [t for t in tars if t != keep][KEEP_IMAGES - 1 :]:
        old.unlink(missing_ok=True)
    for partial in cache.glob("ws-watcher-*.tar.*.partial"):
        if partial.stat().st_mtime < keep.stat().st_mtime - 3600:
            partial.unlink(missing_ok=True)
