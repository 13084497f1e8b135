"""A private containerd: its own config, dirs, socket and log, all under one base dir.

Synopsis::

    with PrivateContainerd() as ctrd:      # ensure_installed + start + import the test images
        ctrd.ctr("containers", "ls")       # ctr on our socket, namespace k8s.io
        ctrd.kill9()                       # SIGKILL containerd only: shims + containers live on
        ctrd.start()                       # same dirs: containerd picks the containers up again
    # cleanup(): containerd, shims, containers, mounts, cgroups and the base dir are gone

Why a private one: the watcher must be tested against the real thing (CRI labels, snapshots,
events, restarts), without touching a containerd the host may run.

Which containerd: the binaries of ``$WS_WATCHER_CONTAINERD_BIN`` (containerd, its runc shim,
ctr), else the system's; ``python -m watcher.testing.versions fetch 2.1`` makes such a dir
(see ``versions``). containerd runs with that dir first on its ``PATH``, so the shims it
starts are of its own version. Blocking calls are fine
here: this is test infrastructure, run around (not inside) the code under test.

Trust: the rig runs as root and ``reclaim_stale()`` cleans up dirs in ``/tmp``, where anyone
can put a ``wsw-*`` dir full of lies (a runc state naming any pid or cgroup, an address file
naming any path). So it acts only on what it provably made: a base dir is a real directory of
our euid, mode 0700 (nobody else can have written into it), holding the marker written at its
creation, which names that very directory; inside one, every path acted on is confined (no
symlink, no ``..``) to the base, to the shim sockets derived from our own address, or to the
cgroups the rig tracked; and a process is killed only when its command line (as us) or its
cgroup or its parentage ties it to the base, never because a file names its pid.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from . import host, versions
from .config import DEFAULT_SNAPSHOTTER, nri_socket_path, render_config
from .cri_client import CRIClient
from .errors import CRIError, RigError
from .image import DEFAULT_IMAGES, PAUSE_IMAGE, ImageDef, build_image_layout

NAMESPACE = "k8s.io"
"""The containerd namespace the CRI plugin works in."""
STARTUP_TIMEOUT = 30.0
"""containerd 1.6 answers CRI within ~1 s here; generous for loaded CI machines."""
STOP_TIMEOUT = 10.0
CLEANUP_CALL_TIMEOUT = 20.0
"""Per CRI call at clean-up: a wedged containerd must not hold the teardown for long."""
SHIM_SOCKET_DIRS = (Path("/run/containerd/s"), Path("/run/containerd"))
MAX_SOCKET_PATH = 100
MARKER_FILE = "rig.json"
"""Written once when the rig makes its base dir: what ``untrusted_reason`` checks."""
MARKER_KIND = "ws-watcher test rig"
OWNER_FILE = "owner"
CGROUPS_FILE = "cgroups"
"""The cgroups the rig makes (``track_cgroup``), one per line: all it may kill in and remove."""
MADE_PARENTS_FILE = "cgroups.made"
LAYOUT_FILE = "layout"
"""``node`` when the rig was made with ``node_layout`` (where its socket is, for ``reclaim``)."""
NODE_LAYOUT = "node"
"""Their ancestors that did not exist yet: removed at clean-up when empty, no others."""
BASE_PREFIX = "wsw-"  # sun_path is 108 bytes; containerd also needs "<socket>.ttrpc"
BASE_MODE = 0o700
NRI_DIR_MODE = 0o700
"""NRI's socket dir: as NRI makes a node's ``/var/run/nri`` (only root may pass)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _RuncContainer:
    """A container in runc's state under the base; its dir names are ours, its cgroup is not
    (``state.json`` says it: a claim, checked by ``_our_cgroups``)."""

    namespace: str
    id: str
    cgroup: str | None  # relative cgroup path, e.g. /kubepods/besteffort/pod<uid>/<id>


class PrivateContainerd:
    """One containerd process (restartable) over one base dir; see the module synopsis.

    Args:
        base: the base dir (created); default a fresh ``/tmp/wsw-XXXX`` (short, so the socket
            path stays well below the unix socket limit).
        images: the images ``import_images()`` builds and imports; the first is the sandbox
            (pause) image.
        snapshotter: CRI's snapshotter, and the one images are imported into: ``overlayfs``,
            or ``native`` for a node without an overlay upper layer.
        binaries: the directory of ``containerd``, ``containerd-shim-runc-v2`` and ``ctr``;
            default ``$WS_WATCHER_CONTAINERD_BIN``, else the system's (on ``PATH``).
        node_layout: lay the dirs out as on a node, for a pod that mounts them as a
            DaemonSet would (``tests/deploy``): the socket in the state dir (a node's
            ``/run/containerd/containerd.sock``), the state dir mode 0711 and a *shared* mount
            of its own (a node's ``/`` is shared under systemd; CRI refuses a HostToContainer
            mount of a private one), so the tasks' rootfs mounts made after a pod started
            propagate into it. Default: the socket beside the dirs, nothing mounted.
        socket_gid: containerd's ``[grpc] gid``: the group its socket is given (mode 0660),
            what lets a non-root watcher connect. Default: root's, as containerd's.
        nri: turn containerd's NRI on (1.7 and later; ``RigError`` before), its socket at
            ``nri_socket``, in a dir of its own (made by ``start``, mode 0700 as NRI makes a
            node's ``/var/run/nri``; there on 1.6 too, empty); ``nri_request_timeout``: how
            long containerd waits for a plugin's reply. Default: the version's (1.7 off,
            2.x on; 2 s).
    """

    def __init__(
        self,
        base: Path | None = None,
        *,
        images: tuple[ImageDef, ...] = DEFAULT_IMAGES,
        snapshotter: str = DEFAULT_SNAPSHOTTER,
        binaries: Path | None = None,
        node_layout: bool = False,
        socket_gid: int | None = None,
        nri: bool = False,
        nri_request_timeout: float | None = None,
    ) -> None:
        host.require_root()
        self.binaries = binaries if binaries is not None else versions.bin_dir()
        self.base = _own_base(base)
        layout = self.base / LAYOUT_FILE
        if base is not None and layout.exists():  # reclaim: the layout the rig was made with
            node_layout = _read_private(layout).strip() == NODE_LAYOUT
        elif node_layout:
            _write_private(layout, NODE_LAYOUT)
        self.node_layout = node_layout
        self.socket_gid = socket_gid
        self.nri = nri
        self.nri_request_timeout = nri_request_timeout
        # where the config puts it (1.7 and later), its dir a node's /var/run/nri
        self.nri_socket = nri_socket_path(self.base)
        self.state_dir = self.base / "state"  # a node's /run/containerd
        self.root_dir = self.base / "root"  # a node's /var/lib/containerd
        self.socket = (self.state_dir if node_layout else self.base) / "containerd.sock"
        _check_socket_path(self.socket, ".ttrpc")
        _check_socket_path(self.nri_socket)
        self.log_path = self.base / "containerd.log"
        self.config_path = self.base / "config.toml"
        self.pods_dir = self.base / "pods"  # pod log directories, as /var/log/pods
        self.images = images
        self.snapshotter = snapshotter
        self._proc: subprocess.Popen[bytes] | None = None
        self._cleaned = False
        # shims put their sockets in /run/containerd/s (not configurable in 1.6): remove the
        # dirs at clean-up when they did not exist before us and are empty again
        self._created_run_dirs = [p for p in SHIM_SOCKET_DIRS if not p.exists()]
        _write_private(self.base / OWNER_FILE, host.owner_record())  # for reclaim_stale()
        atexit.register(self._atexit)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The socket path, as given to ``ctr -a`` and to the watcher."""
        return str(self.socket)

    @property
    def pid(self) -> int | None:
        """The pid of the containerd we started, while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def version(self) -> versions.Version:
        """The version of the containerd this rig runs (``containerd --version``)."""
        return versions.version_of(self.binaries)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Start containerd on the base dir and return once CRI answers ``Version``.

        Raises:
            RigError: containerd exited or did not answer in time (with its log's tail).
        """
        if self.running:
            raise RigError("containerd is already running")
        host.ensure_installed(self.binaries)
        sandbox_image = self.images[0].ref if self.images else PAUSE_IMAGE
        config = render_config(
            self.base, self.socket, sandbox_image=sandbox_image, snapshotter=self.snapshotter,
            version=self.version, socket_gid=self.socket_gid, nri=self.nri,
            nri_request_timeout=self.nri_request_timeout,
        )  # fmt: skip
        self.config_path.write_text(config)
        if self.node_layout:
            self._lay_out_node()
        for sub in ("cni/bin", "cni/conf", "opt", "runc"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        # NRI's socket dir, before containerd (which would make it 0700 too): a pod may
        # mount it whether NRI is on or not, as a node's /var/run/nri (DirectoryOrCreate)
        self.nri_socket.parent.mkdir(mode=NRI_DIR_MODE, exist_ok=True)
        os.chmod(self.nri_socket.parent, NRI_DIR_MODE)  # whatever the umask
        # containerd's own parent of containers without a cgroup parent (/k8s.io/<id>)
        if not host.cgroup_exists(f"/{NAMESPACE}"):
            _write_private(self.base / MADE_PARENTS_FILE, f"/{NAMESPACE}\n", append=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [versions.tool("containerd", self.binaries), "--config", str(self.config_path)],
                env=versions.tool_env(self.binaries),  # its shims: of its own version
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # our ^C / process group signals must not reach it
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._cri_answers():
            if not self.running:
                raise RigError(f"containerd exited at start; log tail:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill9()
                raise RigError(f"containerd did not answer in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def _lay_out_node(self) -> None:
        # the pods' log dir exists before any pod, as a node's /var/log/pods (0755)
        self.pods_dir.mkdir(mode=0o755, exist_ok=True)
        # a bind mount of the state dir on itself, made shared: only our own dir, once (it
        # stays across restarts); unmount_all() at clean-up takes it away with the rest
        self.state_dir.mkdir(mode=0o711, exist_ok=True)
        os.chmod(self.state_dir, 0o711)  # a node's /run/containerd: others may only pass
        if str(self.state_dir) not in host.mounts_under(self.state_dir):
            host.bind_shared(self.state_dir)

    def _cri_answers(self) -> bool:
        if not self.socket.exists():
            return False
        with CRIClient(self.address, timeout=1) as client:
            try:
                client.version()
            except CRIError:
                return False  # not listening yet, or CRI "server is not initialized yet"
        return True

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM containerd (SIGKILL after ``timeout``); shims and containers keep running."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill9(self) -> None:
        """SIGKILL the containerd we started, and only it: the crash a watcher must survive."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def restart(self) -> None:
        """Stop (gracefully) and start again on the same dirs."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- tools ----------------------------------------------------------------------------

    def ctr(self, *args: str, namespace: str = NAMESPACE) -> str:
        """Run ``ctr -a SOCKET -n NAMESPACE ARGS...`` (this containerd's own ``ctr``); return its
        stdout (raise on failure)."""
        cmd = [versions.tool("ctr", self.binaries), "-a", self.address, "-n", namespace, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RigError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def import_images(self) -> None:
        """Build the test images (an OCI layout tar) and import them for CRI."""
        tar = build_image_layout(self.base / "images.tar", self.images)
        self.ctr("images", "import", "--snapshotter", self.snapshotter, str(tar))

    def container_info(self, container_id: str) -> dict[str, object]:
        """``ctr containers info ID`` as JSON: labels, spec, snapshot key, extensions."""
        info: dict[str, object] = json.loads(self.ctr("containers", "info", container_id))
        return info

    def track_cgroup(self, relative: str) -> None:
        """Declare a cgroup the rig is about to make (e.g. a pod's parent), before it exists.

        ``cleanup()`` kills what runs in it and removes it; of its ancestors, only those that
        do not exist yet (the rig makes them too) are removed, when empty. In files under the
        base, so that ``reclaim()`` knows them too.
        """
        clean = host.clean_cgroup(relative)
        if clean is None:
            raise RigError(f"not a cgroup path: {relative!r}")
        if made := host.missing_ancestors(clean):
            lines = "".join(f"{m}\n" for m in made)
            _write_private(self.base / MADE_PARENTS_FILE, lines, append=True)
        _write_private(self.base / CGROUPS_FILE, clean + "\n", append=True)

    @property
    def tracked_cgroups(self) -> set[str]:
        """The cgroups given to ``track_cgroup`` (by this or an earlier owner of the dir)."""
        return _read_cgroups(self.base / CGROUPS_FILE)

    # -- clean-up ---------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Leave nothing behind: containerd, shims, containers, mounts, cgroups, the base dir.

        Safe to call at any point (after a failed test, a kill9, twice). Steps: remove the
        pods through CRI while containerd still answers (shims then exit cleanly), stop
        containerd, SIGKILL our shims and whatever still runs in our containers' cgroups,
        unmount everything below the base dir, rmdir our cgroups, delete the base dir.

        Raises:
            RigError: listing every step that failed (all steps are attempted).
        """
        failures: list[str] = []

        def step(name: str, fn: Callable[..., object], *args: object) -> None:
            try:
                fn(*args)
            except Exception as exc:  # every step must run; all are reported below
                failures.append(f"{name}: {exc!r}")

        if self.running:
            step("remove pods via CRI", self._remove_pods_via_cri)
        step("stop containerd", self.stop)
        cgroups = self._our_cgroups(self._runc_containers())
        shim_sockets = self._shim_sockets()
        step("kill shims and containers", self._kill_leftovers, cgroups)
        for sock in shim_sockets:
            step(f"remove {sock}", _remove_socket, sock)
        for directory in self._created_run_dirs:
            with contextlib.suppress(OSError):  # not empty: someone else's shims use it
                directory.rmdir()
        step("unmount", host.unmount_all, self.base)
        for cgroup in sorted(cgroups, key=len, reverse=True):  # its parents: only made ones
            step(f"remove cgroup {cgroup}", host.remove_cgroup, cgroup, cgroup)
        made = _read_cgroups(self.base / MADE_PARENTS_FILE)
        for cgroup in sorted(made, key=lambda c: c.count("/"), reverse=True):
            step(f"remove cgroup {cgroup}", host.remove_empty_cgroup, cgroup)
        # never rm through a mount; rmtree refuses a symlink and follows none below
        if self.base.exists() and not host.mounts_under(self.base):
            step("remove base dir", shutil.rmtree, self.base)
        self._cleaned = True
        if failures:
            raise RigError("clean-up incomplete:\n  " + "\n  ".join(failures))

    def _remove_pods_via_cri(self) -> None:
        with CRIClient(self.address, timeout=CLEANUP_CALL_TIMEOUT) as client:
            for sandbox in client.list_pod_sandbox():
                client.stop_pod_sandbox(sandbox.id)
                client.remove_pod_sandbox(sandbox.id)

    def _runc_containers(self) -> list[_RuncContainer]:
        found = []
        for namespace, container_id in _subdirs2(self.base / "runc"):
            state = self.base / "runc" / namespace / container_id / "state.json"
            with contextlib.suppress(OSError, ValueError, AttributeError):
                cgroup = json.loads(_read_private(state))["config"]["cgroups"].get("path")
                found.append(_RuncContainer(
                    namespace, container_id, cgroup if isinstance(cgroup, str) else None,
                ))  # fmt: skip
        return found

    def _our_cgroups(self, containers: list[_RuncContainer]) -> set[str]:
        """The cgroups clean-up kills in and removes: those tracked, and the containers' ones
        below them or at containerd's default ``/<namespace>/<id>`` (derived from the names
        of our own runc dirs). Any other cgroup a ``state.json`` names is refused."""
        tracked = self.tracked_cgroups
        ours = set(tracked)
        for container in containers:
            if container.cgroup is None:
                continue
            clean = host.clean_cgroup(container.cgroup)
            default = f"/{container.namespace}/{container.id}"
            if clean is not None and (
                clean == default or any(host.cgroup_under(clean, t) for t in tracked)
            ):
                ours.add(clean)
            else:
                log.warning(
                    "%s: leaving cgroup %r of container %s alone: not one the rig made",
                    self.base, container.cgroup, container.id,
                )  # fmt: skip
        return ours

    def _shim_sockets(self) -> list[Path]:
        """Our shims' sockets (outside the base dir: ``/run/containerd/s/<hash>``).

        Derived as containerd names them, sha256 of ``<address>/<namespace>/<id>`` for each
        task under the base, never read from its ``address`` file: a file can name any path.
        """
        tasks = self.base / "state" / "io.containerd.runtime.v2.task"
        return [
            SHIM_SOCKET_DIRS[0] / hashlib.sha256(f"{self.address}/{ns}/{cid}".encode()).hexdigest()
            for ns, cid in _subdirs2(tasks)
        ]

    def _kill_leftovers(self, cgroups: set[str]) -> None:
        """SIGKILL what is tied to this base: a containerd on its config and shims on its
        socket (command lines, run as us), what the shims run (their descendants: they are the
        containers' subreaper), and whatever is in ``cgroups``."""
        config = ["--config", str(self.config_path)]  # whichever binary: any version's
        ctrd = host.identify(
            p for p in host.pids()
            if (argv := host.cmdline(p))[1:] == config and Path(argv[0]).name == "containerd"
            and host.runs_as_us(p)
        )  # fmt: skip
        host.kill_identified(ctrd)  # first: a live containerd would start shims anew
        shims = host.identify(host.shims_of(self.address))
        victims = {
            **shims,
            **host.identify(host.descendants(shims)),
            **host.identify(pid for cgroup in cgroups for pid in host.cgroup_procs(cgroup)),
        }
        host.kill_identified(victims)
        victims |= ctrd
        host.wait_until(
            "our containerd, shims and containers to die",
            lambda: not any(
                host.alive(p) and host.start_time(p) == t for p, t in victims.items()
            ), STOP_TIMEOUT,
        )  # fmt: skip

    @classmethod
    def reclaim(cls, base: Path) -> None:
        """Clean up the base dir of a rig whose owner died before its own clean-up ran.

        Raises:
            RigError: ``base`` is not a rig dir of ours (see ``untrusted_reason``), or the
                clean-up was incomplete.
        """
        cls(base).cleanup()

    def _atexit(self) -> None:
        if not self._cleaned:
            with contextlib.suppress(Exception):
                self.cleanup()

    def __enter__(self) -> PrivateContainerd:
        try:
            self.start()
            self.import_images()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.cleanup()

    def __repr__(self) -> str:
        where = self.binaries or "system"
        return f"<PrivateContainerd {self.address} {self.snapshotter} {where} pid={self.pid}>"


def reclaim_stale(parent: Path = Path("/tmp")) -> list[Path]:
    """Clean up rigs under ``parent`` whose owning process is gone (e.g. a SIGKILLed pytest).

    Only dirs the rig provably made are considered (``untrusted_reason``): any other
    ``wsw-*`` dir, which anyone may make in /tmp, is left alone with a warning. Rigs of live
    processes (a concurrent test session) are left alone too. Returns the base dirs reclaimed.
    """
    parent = parent.resolve()
    if reason := _unsafe_parent(parent):
        log.warning("not reclaiming rigs in %s: %s", parent, reason)
        return []
    reclaimed = []
    for name in sorted(os.listdir(parent)):
        if not name.startswith(BASE_PREFIX):
            continue
        base = parent / name
        if reason := untrusted_reason(base):
            log.warning("leaving %s alone, not a rig dir of ours: %s", base, reason)
            continue
        try:
            alive = host.owner_alive(_read_private(base / OWNER_FILE))
        except (OSError, ValueError) as exc:
            log.warning("leaving %s alone: no owner record (%s)", base, exc)
            continue
        if not alive:
            PrivateContainerd.reclaim(base)
            reclaimed.append(base)
    return reclaimed


def untrusted_reason(base: Path) -> str | None:
    """Why ``base`` is not provably a rig dir this rig made as us; None when it is one.

    Proof: a directory (not a symlink to one) of our euid with mode 0700, so nobody else can
    have written into it, holding the marker written when the rig made it, which names this
    very directory (path, device, inode): a marker copied into another dir does not count.
    """
    try:
        st = os.lstat(base)
    except OSError as exc:
        return f"cannot stat it ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by us ({os.geteuid()})"
    if stat.S_IMODE(st.st_mode) != BASE_MODE:
        return f"mode {stat.S_IMODE(st.st_mode):04o}, not {BASE_MODE:04o}"
    try:
        marker = json.loads(_read_private(base / MARKER_FILE))
    except (OSError, ValueError) as exc:
        return f"no rig marker ({exc})"
    mine = {"kind": MARKER_KIND, "path": str(base), "dev": st.st_dev, "ino": st.st_ino}
    if not isinstance(marker, dict) or any(marker.get(k) != v for k, v in mine.items()):
        return "its marker was not written for this directory"
    return None


def _own_base(base: Path | None) -> Path:
    """The base dir: made now (mode 0700, a marker), or an existing rig dir of ours."""
    if base is None:
        # a real path: the marker names it as reclaim_stale() (resolving its parent) sees it
        return _mark(Path(tempfile.mkdtemp(prefix=BASE_PREFIX, dir=os.path.realpath("/tmp"))))
    if base.name in ("", ".."):
        raise RigError(f"not a base dir path: {base}")
    base = base.parent.resolve() / base.name  # the dir itself is checked, not followed
    base.parent.mkdir(parents=True, exist_ok=True)
    try:
        base.mkdir(mode=BASE_MODE)
    except FileExistsError:
        if reason := untrusted_reason(base):
            raise RigError(f"{base} exists and is not a rig dir of ours: {reason}") from None
        return base
    return _mark(base)


def _mark(base: Path) -> Path:
    """Make the fresh dir ``base`` provably the rig's: 0700 whatever the umask, a marker."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():  # swapped for another's since our mkdir
            raise RigError(f"{base} is not ours (uid {st.st_uid})")
        os.fchmod(fd, BASE_MODE)
    finally:
        os.close(fd)
    marker = {
        "kind": MARKER_KIND, "path": str(base), "dev": st.st_dev, "ino": st.st_ino,
        "created": time.time(), "creator": host.owner_record(),
    }  # fmt: skip
    _write_private(base / MARKER_FILE, json.dumps(marker), exclusive=True)
    return base


def _unsafe_parent(parent: Path) -> str | None:
    # others able to rename entries of ``parent`` could swap a checked rig dir for their own
    st = os.stat(parent)
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return "writable by others, without the sticky bit"
    return None


def _check_socket_path(path: Path, suffix: str = "") -> None:
    # ``path`` (and ``path + suffix``, e.g. containerd's "<socket>.ttrpc") fits sun_path
    if len(str(path)) + len(suffix) > MAX_SOCKET_PATH:
        raise RigError(f"socket path too long for a unix socket: {path}{suffix}")


def _write_private(path: Path, text: str, *, append: bool = False, exclusive: bool = False) -> None:
    # never through a symlink; 0600
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
    flags |= os.O_APPEND if append else os.O_EXCL if exclusive else os.O_TRUNC
    with os.fdopen(os.open(path, flags, 0o600), "w") as f:
        f.write(text)


def _read_private(path: Path) -> str:
    # a regular file, not through a symlink (O_NONBLOCK: a FIFO must not hang the clean-up)
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)) as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"not a regular file: {path}")
        return f.read()


def _read_cgroups(path: Path) -> set[str]:
    # a cgroups record of the rig: one path per line; anything unclean is refused
    try:
        lines = _read_private(path).split()
    except FileNotFoundError:
        return set()
    except OSError as exc:  # e.g. a symlink: not a record of ours
        log.warning("%s: refusing the record: %s", path, exc)
        return set()
    found = set()
    for line in lines:
        if (clean := host.clean_cgroup(line)) is not None:
            found.add(clean)
        else:
            log.warning("%s: refusing %r: not a cgroup path", path, line)
    return found


def _subdirs2(root: Path) -> list[tuple[str, str]]:
    """``(a, b)`` for each directory ``root/a/b`` (``*/*``), symlinks not followed."""
    found = []
    with contextlib.suppress(OSError):
        for first in os.scandir(root):
            if first.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    for second in os.scandir(first.path):
                        if second.is_dir(follow_symlinks=False):
                            found.append((first.name, second.name))
    return found


def _remove_socket(path: Path) -> None:
    # a shim's socket: unlinked only if it is one, in the shims' dir (not through a symlink)
    if not host.within(path, SHIM_SOCKET_DIRS[0]):
        raise RigError(f"not in {SHIM_SOCKET_DIRS[0]}: {path}")
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            path.unlink()
