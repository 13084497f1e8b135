"""The DaemonSet of ``examples/daemonset.yaml`` deployed on a rig node, as a kubelet would.

Synopsis::

    with PrivateContainerd(node_layout=True) as ctrd, Pods(ctrd) as pods:
        ctrd.ctr("images", "import", "--snapshotter", ctrd.snapshotter, str(image.tar))
        watcher = deploy(ctrd, pods, image, daemonset_template())
        watcher.ws_watcher("ls", "--json")   # exec'd in its container, with the pod's options

What stands in for a node (see ``kubelet`` for the emulation itself): each host path the
manifest mounts is the rig's dir for it (``node_paths``: the socket's dir is the rig
containerd's state dir, laid out as a node's ``/run/containerd``; NRI's is its NRI socket's
dir), so the ``--path-map`` host sides become the rig's too (``rig_args``); the pod gets the
host's network (the rig has no CNI), so the metrics port is a free loopback one
(``Deployed.metrics`` scrapes it); the image is the locally built one (``wheel_image``).
Shared by ``tests/deploy`` and ``benchmarks/deploy_rss.py``.
"""

from __future__ import annotations

import http.client
import json
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from .containerd import PrivateContainerd
from .cri_client import ExecResult
from .errors import RigError
from .kubelet import NodePaths, PodPlan, Probe, plan_pod
from .pods import Pods
from .wheel_image import USER, WheelImage, source_tree

COMMON_OPTIONS = ("--address", "--namespace", "--proc", "--path-map", "--log-level",
                  "--schemes", "--no-gitpod-schemes", "--show-annotation")  # fmt: skip
"""Options every command takes: what an exec'd ``ws-watcher`` needs of the pod's args."""


def manifest_path() -> Path:
    return source_tree() / "examples" / "daemonset.yaml"


def daemonset_template(manifest: Path | None = None) -> dict[str, Any]:
    """The DaemonSet's pod template (``spec.template``), as parsed YAML."""
    docs = [d for d in yaml.safe_load_all((manifest or manifest_path()).read_text()) if d]
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    template: dict[str, Any] = ds["spec"]["template"]
    return template


def free_port() -> int:
    """A free TCP port on loopback (the pod shares the host's network on the rig)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def node_paths(ctrd: PrivateContainerd) -> NodePaths:
    """The rig's dir for each host path the manifest mounts (``ctrd`` has a node layout)."""
    return NodePaths({
        "/run/containerd": str(ctrd.state_dir),
        "/var/lib/containerd": str(ctrd.root_dir),
        "/var/log/pods": str(ctrd.pods_dir),
        "/proc": "/proc",
        "/run/ws-watcher": str(ctrd.base / "run-ws-watcher"),
        # NRI's socket dir: the rig containerd's (``nri_socket``'s own dir), so that the
        # manifest's --nri-socket reaches its NRI when it is on (1.7 and later; the deploy
        # test turns it on there); on 1.6 an empty dir: the watcher runs on the event
        # stream alone, as on a node without NRI
        "/var/run/nri": str(ctrd.nri_socket.parent),
    })  # fmt: skip


def rig_args(args: Sequence[str], node: NodePaths, port: int) -> list[str]:
    """The manifest's args as they read on the rig's node (see the module's docstring)."""
    out = node.path_map_args(args)
    return [f"--metrics-listen=127.0.0.1:{port}" if a.startswith("--metrics-listen=") else a
            for a in out]  # fmt: skip


class Deployed:
    """The watcher's pod, running on the rig; ``exec``, ``ws_watcher`` and ``python`` run
    in its container (CRI ExecSync, as ``kubectl exec``)."""

    def __init__(
        self, pods: Pods, plan: PodPlan, args: Sequence[str], port: int, api_socket: Path
    ) -> None:
        self.pods = pods
        self.plan = plan
        self.pod = pods.run_pod(f"ws-watcher-{uuid.uuid4().hex[:6]}", "ws-watcher",
                                **plan.run_pod_args())  # fmt: skip
        self.cid = self.pod.containers[plan.containers[0].spec.name]
        self.args = list(args)
        self.common = [a for a in args[1:] if a.startswith(COMMON_OPTIONS)]
        self.port = port
        self.api_socket = api_socket  # where the API's socket is on the host

    def api_get(self, path: str, timeout: float = 90.0) -> tuple[int, Any]:
        """GET ``path`` on the API's unix socket, as a client on the node: status, JSON body."""
        sock_path = str(self.api_socket)

        class UnixConnection(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(sock_path)

        conn = UnixConnection("localhost")
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def exec(self, *cmd: str, timeout: int = 90) -> ExecResult:
        return self.pods.cri.exec_sync(self.cid, list(cmd), timeout=timeout)

    def ws_watcher(self, *args: str) -> Any:
        """``ws-watcher ARGS`` with the pod's common options, its stdout as JSON."""
        return self._json(self.exec("ws-watcher", *args, *self.common))

    def python(self, code: str, *args: str) -> Any:
        """``python -c CODE ARGS`` in the container, its stdout as JSON."""
        return self._json(self.exec("python", "-c", code, *args))

    @staticmethod
    def _json(done: ExecResult) -> Any:
        if done.exit_code != 0:
            raise RigError(f"exit {done.exit_code} in the container: {done.stderr.decode()}")
        return json.loads(done.stdout)

    def metrics_text(self, timeout: float = 10.0) -> str:
        """``GET /metrics`` on the rig's port, as Prometheus scrapes it: the exposition text
        (parsed by the test: only `watcher.metrics` imports prometheus_client).

        Raises:
            OSError: nothing listens there (yet).
            RigError: an answer other than 200.
        """
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read().decode()
        finally:
            conn.close()
        if response.status != 200:
            raise RigError(f"/metrics answered {response.status}: {body[:200]}")
        return body

    def probe(self, kind: str) -> Probe:
        """The container's probe ``kind`` (e.g. ``readinessProbe``), on the rig's port."""
        return replace(self.plan.containers[0].probes[kind], port=self.port)

    def host_pid(self) -> int:
        """The watcher's PID on the host (its container's PID 1)."""
        return self.pods.cri.container_pid(self.cid)


def deploy(
    ctrd: PrivateContainerd, pods: Pods, image: WheelImage, template: Mapping[str, Any]
) -> Deployed:
    """Run ``template`` (the DaemonSet's pod template) on ``ctrd`` as a kubelet would."""
    node = node_paths(ctrd)
    port = free_port()
    (container,) = template["spec"]["containers"]
    args = rig_args(container["args"], node, port)
    plan = plan_pod(template, node=node, image=image.ref, image_user=int(USER.split(":")[0]),
                    volumes_dir=ctrd.base / "volumes", args={container["name"]: args})  # fmt: skip
    (socket_path,) = [a.split("=", 1)[1] for a in args if a.startswith("--socket=")]
    api_socket = Path(container_to_host(plan, socket_path))
    return Deployed(pods, plan, args, port, api_socket)


def container_to_host(plan: PodPlan, path: str) -> str:
    """Where a path in the (first) container is on the host, through its mounts."""
    mounts = plan.containers[0].spec.mounts
    best = max((m for m in mounts if path.startswith(m.container_path.rstrip("/") + "/")),
               key=lambda m: len(m.container_path), default=None)  # fmt: skip
    if best is None:
        raise RigError(f"{path} is on no volume of the container")
    return best.host_path + path[len(best.container_path) :]


def import_image(ctrd: PrivateContainerd, image: WheelImage) -> None:
    """Import the built image into ``ctrd`` for CRI (its snapshotter)."""
    ctrd.ctr("images", "import", "--snapshotter", ctrd.snapshotter, str(image.tar))
