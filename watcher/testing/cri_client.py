"""A small blocking CRI ``RuntimeService`` client: the calls the kubelet makes, nothing more.

grpc errors become ``CRIError`` carrying the status code name, so tests can assert on
``NOT_FOUND`` without importing grpc.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from containerd_protos.cri.runtime.v1 import api_pb2 as cri
from containerd_protos.cri.runtime.v1 import api_pb2_grpc as cri_grpc

from .errors import CRIError

CALL_TIMEOUT = 60.0
"""Per call; RunPodSandbox/StartContainer take well under a second here, but CI is slow."""

_R = TypeVar("_R", bound=Message)


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    """What ``ExecSync`` returned: the command's exit code and its whole output."""

    exit_code: int
    stdout: bytes
    stderr: bytes


class CRIClient:
    """Blocking CRI client over a unix socket (``address`` is the socket path)."""

    def __init__(self, address: str, *, timeout: float = CALL_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{address}")
        self._stub: Any = cri_grpc.RuntimeServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def _call(self, method: str, request: Message, response_type: type[_R]) -> _R:
        try:
            response = getattr(self._stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise CRIError(f"CRI {method} failed: {code}: {details}", code=code) from exc
        assert isinstance(response, response_type)
        return response

    def version(self) -> cri.VersionResponse:
        return self._call("Version", cri.VersionRequest(), cri.VersionResponse)

    def run_pod_sandbox(self, config: cri.PodSandboxConfig) -> str:
        request = cri.RunPodSandboxRequest(config=config)
        return self._call("RunPodSandbox", request, cri.RunPodSandboxResponse).pod_sandbox_id

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        request = cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)
        self._call("StopPodSandbox", request, cri.StopPodSandboxResponse)

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        request = cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
        self._call("RemovePodSandbox", request, cri.RemovePodSandboxResponse)

    def list_pod_sandbox(self, labels: dict[str, str] | None = None) -> list[cri.PodSandbox]:
        request = cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector=labels))
        return list(self._call("ListPodSandbox", request, cri.ListPodSandboxResponse).items)

    def create_container(
        self, sandbox_id: str, config: cri.ContainerConfig, sandbox_config: cri.PodSandboxConfig
    ) -> str:
        request = cri.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config
        )
        return self._call("CreateContainer", request, cri.CreateContainerResponse).container_id

    def start_container(self, container_id: str) -> None:
        request = cri.StartContainerRequest(container_id=container_id)
        self._call("StartContainer", request, cri.StartContainerResponse)

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        """Stop; ``timeout`` 0 means SIGKILL at once (a crash, as far as the watcher sees)."""
        request = cri.StopContainerRequest(container_id=container_id, timeout=timeout)
        self._call("StopContainer", request, cri.StopContainerResponse)

    def remove_container(self, container_id: str) -> None:
        request = cri.RemoveContainerRequest(container_id=container_id)
        self._call("RemoveContainer", request, cri.RemoveContainerResponse)

    def list_containers(self, sandbox_id: str = "") -> list[cri.Container]:
        request = cri.ListContainersRequest(filter=cri.ContainerFilter(pod_sandbox_id=sandbox_id))
        return list(self._call("ListContainers", request, cri.ListContainersResponse).containers)

    def container_status(self, container_id: str) -> cri.ContainerStatus:
        request = cri.ContainerStatusRequest(container_id=container_id)
        return self._call("ContainerStatus", request, cri.ContainerStatusResponse).status

    def container_pid(self, container_id: str) -> int:
        """The host pid of the container's task (from the verbose status info; 0 if none)."""
        request = cri.ContainerStatusRequest(container_id=container_id, verbose=True)
        info = self._call("ContainerStatus", request, cri.ContainerStatusResponse).info
        return int(json.loads(info.get("info", "{}")).get("pid", 0))

    def exec_sync(self, container_id: str, cmd: Sequence[str], timeout: int = 30) -> ExecResult:
        """Run ``cmd`` in the container as ``kubectl exec`` (and exec probes) do; wait for it.

        ``timeout`` (seconds) is CRI's own: the runtime kills the command after it. The call's
        deadline is a little longer, so a command that overran says so through CRI.
        """
        request = cri.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout)
        try:
            response = self._stub.ExecSync(request, timeout=timeout + self.timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise CRIError(f"CRI ExecSync failed: {code}: {details}", code=code) from exc
        assert isinstance(response, cri.ExecSyncResponse)
        return ExecResult(
            exit_code=response.exit_code, stdout=response.stdout, stderr=response.stderr
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CRIClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()
