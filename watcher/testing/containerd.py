"""A private containerd: its own config, dirs, socket and log, all under one base dir.

Synopsis::

    with PrivateContainerd() as ctrd:      # ensure_installed + start + import the test images
        ctrd.ctr("containers", "ls")       # ctr on our socket, namespace k8s.io
        ctrd.kill9()                       # SIGKILL containerd only: shims + containers live on
        ctrd.start()                       # same dirs: containerd picks the containers up again
    # cleanup(): containerd, shims, containers, mounts, cgroups and the base dir are gone

Why a private one: the watcher must be tested against the real thing (CRI labels, snapshots,
events, restarts), without touching a containerd the host may run. Blocking calls are fine
here: this is test infrastructure, run around (not inside) the code under test.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from . import host
from .config import DEFAULT_SNAPSHOTTER, render_config
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
OWNER_FILE = "owner"
CGROUPS_FILE = "cgroups"
BASE_PREFIX = "wsw-"  # sun_path is 108 bytes; containerd also needs "<socket>.ttrpc"


@dataclass(frozen=True)
class _RuncContainer:
    """What runc's ``state.json`` tells about a container the shims may have left running."""

    id: str
    pid: int
    start_time: int | None
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
    """

    def __init__(
        self,
        base: Path | None = None,
        *,
        images: tuple[ImageDef, ...] = DEFAULT_IMAGES,
        snapshotter: str = DEFAULT_SNAPSHOTTER,
    ) -> None:
        host.require_root()
        if base is None:
            base = Path(tempfile.mkdtemp(prefix=BASE_PREFIX, dir="/tmp"))
        self.base = base.resolve()
        self.base.mkdir(parents=True, exist_ok=True)
        self.socket = self.base / "containerd.sock"
        if len(str(self.socket)) + len(".ttrpc") > MAX_SOCKET_PATH:
            raise RigError(f"socket path too long for a unix socket: {self.socket}")
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
        (self.base / OWNER_FILE).write_text(host.owner_record())  # for reclaim_stale()
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
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Start containerd on the base dir and return once CRI answers ``Version``.

        Raises:
            RigError: containerd exited or did not answer in time (with its log's tail).
        """
        if self.running:
            raise RigError("containerd is already running")
        host.ensure_installed()
        sandbox_image = self.images[0].ref if self.images else PAUSE_IMAGE
        config = render_config(
            self.base, self.socket, sandbox_image=sandbox_image, snapshotter=self.snapshotter
        )
        self.config_path.write_text(config)
        for sub in ("cni/bin", "cni/conf", "opt", "runc"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                ["containerd", "--config", str(self.config_path)],
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
        """Run ``ctr -a SOCKET -n NAMESPACE ARGS...``; return its stdout (raise on failure)."""
        cmd = ["ctr", "-a", self.address, "-n", namespace, *args]
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
        """Remember a cgroup (e.g. a pod's parent) for ``cleanup()`` to remove when empty."""
        with (self.base / CGROUPS_FILE).open("a") as f:  # a file, so reclaim() sees it too
            f.write(relative + "\n")

    @property
    def tracked_cgroups(self) -> set[str]:
        """The cgroups given to ``track_cgroup`` (by this or an earlier owner of the dir)."""
        try:
            return set((self.base / CGROUPS_FILE).read_text().split())
        except OSError:
            return set()

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
        leftovers = self._runc_containers()
        shim_sockets = self._shim_sockets()
        step("kill shims and containers", self._kill_leftovers, leftovers)
        for sock in shim_sockets:
            step(f"remove {sock}", lambda p: p.unlink(missing_ok=True), sock)
        for directory in self._created_run_dirs:
            with contextlib.suppress(OSError):  # not empty: someone else's shims use it
                directory.rmdir()
        step("unmount", host.unmount_all, self.base)
        cgroups = {c.cgroup for c in leftovers if c.cgroup} | self.tracked_cgroups
        for cgroup in sorted(cgroups, key=len, reverse=True):
            step(f"remove cgroup {cgroup}", host.remove_cgroup, cgroup)
        if self.base.exists() and not host.mounts_under(self.base):  # never rm through a mount
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
        for state in (self.base / "runc").glob("*/*/state.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                data = json.loads(state.read_text())
                cgroup = (data.get("config") or {}).get("cgroups", {}).get("path")
                found.append(_RuncContainer(
                    id=data["id"], pid=int(data["init_process_pid"]),
                    start_time=data.get("init_process_start"), cgroup=cgroup or None,
                ))  # fmt: skip
        return found

    def _shim_sockets(self) -> list[Path]:
        """The shims' sockets (outside the base dir: ``/run/containerd/s/<hash>``)."""
        sockets = []
        for address in (self.base / "state").glob("io.containerd.runtime.v2.task/*/*/address"):
            with contextlib.suppress(OSError):
                path = Path(address.read_text().strip().removeprefix("unix://"))
                if path.is_relative_to(SHIM_SOCKET_DIRS[0]):
                    sockets.append(path)
        return sockets

    def _kill_leftovers(self, leftovers: list[_RuncContainer]) -> None:
        # a containerd started on this base dir by an earlier (crashed) owner: kill it first
        ours = ["containerd", "--config", str(self.config_path)]
        victims = {pid for pid in host.pids() if host.cmdline(pid) == ours}
        host.kill(victims)
        shims = host.shims_of(self.address)
        host.kill(shims)
        victims |= set(shims)
        for container in leftovers:
            started = host.start_time(container.pid)
            if container.start_time in (None, started):  # not a reused pid
                victims.add(container.pid)
        for cgroup in {c.cgroup for c in leftovers if c.cgroup} | self.tracked_cgroups:
            victims |= host.cgroup_procs(cgroup)
        host.kill(victims)
        host.wait_until(
            "our shims and containers to die",
            lambda: not any(host.alive(p) for p in victims), STOP_TIMEOUT,
        )  # fmt: skip

    @classmethod
    def reclaim(cls, base: Path) -> None:
        """Clean up the base dir of a rig whose owner died before its own clean-up ran."""
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
        return f"<PrivateContainerd {self.address} {self.snapshotter} pid={self.pid}>"


def reclaim_stale(parent: Path = Path("/tmp")) -> list[Path]:
    """Clean up rigs under ``parent`` whose owning process is gone (e.g. a SIGKILLed pytest).

    Rigs of live processes (a concurrent test session) are left alone; so are dirs without an
    owner record. Returns the base dirs reclaimed.
    """
    reclaimed = []
    for base in sorted(parent.glob(f"{BASE_PREFIX}*")):
        try:
            owner = (base / OWNER_FILE).read_text()
        except OSError:
            continue
        if not host.owner_alive(owner):
            PrivateContainerd.reclaim(base)
            reclaimed.append(base)
    return reclaimed
