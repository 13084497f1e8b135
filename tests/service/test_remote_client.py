"""The Python client (`watcher.remote`) on trio and on asyncio, against `ws-watcher serve`
(a subprocess) and a real containerd: the library's shape and records, from another process.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from watcher.containerd_records import TaskStatus
from watcher.errors import UnknownId, UsageError
from watcher.published import ChangeKind, Synced, Workspace, WorkspaceChange
from watcher.remote import ServiceUnreachable, WaitTimedOut, connect
from watcher.testing import Pods, mk2_labels

if TYPE_CHECKING:
    from serve_process import ServeProcess

DEADLINE = 20.0


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_the_client_awaits_lists_and_follows_workspaces_on(
    backend: str, pods: Pods, serve_cli: Callable[..., ServeProcess], socket_path: str
) -> None:
    pods.run_pod("ws-cl-a", labels=mk2_labels("cl-a", "ws-a", "owner-a"))
    serve_cli("--socket", socket_path).serving()
    made: dict[str, Any] = {}

    async def main() -> None:
        async with connect(socket_path) as w:
            assert await w.is_ready()
            found = await w.workspaces()
            assert list(found) == ["cl-a"]
            a = found["cl-a"]
            assert isinstance(a, Workspace) and a.running and a.pid
            assert (a.workspace_id, a.owner_id, a.scheme) == ("ws-a", "owner-a", "gitpod-mk2")
            assert await w.workspace("cl-a") == a
            assert await w.workspace(a.container_id) == a
            inspected = await w.inspect("cl-a")
            assert inspected.task is not None and inspected.task.status is TaskStatus.RUNNING
            assert inspected.task.pid == a.pid
            assert inspected.image is not None and inspected.image.name == a.image
            with pytest.raises(UnknownId):
                await w.workspace("nope")
            with pytest.raises(WaitTimedOut, match="waiting for instance nope to run"):
                await w.wait_for_container("nope", timeout=0.2)
            with pytest.raises(UsageError):
                await w.wait_for_container("")

            # a workspace that comes later: awaited, and followed
            async with w.changes() as changes:
                with anyio.fail_after(DEADLINE):
                    assert isinstance(await changes.__anext__(), Synced)
                kinds = []
                async with anyio.create_task_group() as group:

                    async def wait() -> None:
                        made["waited"] = await w.wait_for_container("cl-b", timeout=DEADLINE)

                    group.start_soon(wait)
                    made["b"] = await anyio.to_thread.run_sync(
                        partial(pods.run_pod, "ws-cl-b", labels=mk2_labels("cl-b", "ws-b", "o"))
                    )
                    with anyio.fail_after(DEADLINE):
                        async for change in changes:
                            if (
                                isinstance(change, WorkspaceChange)
                                and change.workspace.instance_id == "cl-b"
                            ):
                                kinds.append(change.kind)
                                if change.kind is ChangeKind.RUNNING:
                                    break
            assert kinds == [ChangeKind.CREATED, ChangeKind.RUNNING]
            assert made["waited"].container_id == made["b"].containers["workspace"]

            async with anyio.create_task_group() as group:
                group.start_soon(partial(w.wait_for_container_stop, "cl-b", timeout=DEADLINE))
                await anyio.to_thread.run_sync(pods.remove_pod, made["b"])
            assert "cl-b" not in await w.workspaces()

    anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_no_service_there_is_said_at_once(backend: str, sockdir: str) -> None:
    async def main() -> None:
        with pytest.raises(ServiceUnreachable, match="no ws-watcher service at"):
            async with connect(f"{sockdir}/nothing.sock"):
                pass
        with pytest.raises(UsageError):
            async with connect("relative/path.sock"):
                pass

    anyio.run(main, backend=backend)
