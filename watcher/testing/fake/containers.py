"""Containers, tasks and snapshots as containerd itself changes them, events included.

Rules:

* Each step changes the state *and* publishes what containerd would, in containerd's order
  (`/snapshot/prepare` before `/containers/create`, a task's exit before its delete, the
  container's delete before its snapshot's removal); with `publish=False` it changes the
  state silently: what happened while the watcher was away.
* A step finishes what it implies, as containerd does: starting a task creates it first,
  deleting a running task exits it (status 137), deleting a container deletes its task and
  its snapshot.
* A step runs under the fake's lock, so a stream never sees half of it; what no step covers
  (a malformed container, any event) is written with the setters of `state` and `publish`.
"""

from __future__ import annotations

from collections.abc import Mapping

from containerd_protos.events import container_pb2 as container_events
from containerd_protos.events import snapshot_pb2 as snapshot_events
from containerd_protos.events import task_pb2 as task_events
from containerd_protos.services.containers.v1 import containers_pb2
from containerd_protos.types.task import task_pb2 as task_types

from .events import Events
from .messages import JsonOrRaw, build_container, oci_spec, timestamp
from .wire import NAMESPACE, RUNTIME, SNAPSHOTTER, WORKSPACE_IMAGE


class ContainerLifecycle(Events):
    """containerd's own steps: create, start, exit and delete containers and their tasks."""

    def create_container(
        self,
        container_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        image: str = WORKSPACE_IMAGE,
        spec: JsonOrRaw | None = None,
        extensions: Mapping[str, JsonOrRaw] | None = None,
        snapshotter: str = SNAPSHOTTER,
        snapshot_key: str | None = None,
        created_at: float | None = None,
        namespace: str = NAMESPACE,
        publish: bool = True,
    ) -> containers_pb2.Container:
        """Prepare a snapshot (overlay mount with `upperdir=`) and create the container:
        `/snapshot/prepare`, `/containers/create`. Arguments as for `build_container`; the
        spec defaults to one with cgroupsPath `/k8s.io/<id>`. Returns the stored message."""
        if spec is None:
            spec = oci_spec(f"/k8s.io/{container_id}")
        pb = build_container(
            container_id,
            labels=labels,
            image=image,
            snapshotter=snapshotter,
            snapshot_key=snapshot_key,
            created_at=created_at,
            spec=spec,
            extensions=extensions,
        )
        with self._lock:
            ns = self._ns(namespace)
            if container_id in ns.containers:
                raise ValueError(f"container {container_id} already exists in {namespace}")
            ns.containers[container_id] = pb
            ns.mounts[(pb.snapshotter, pb.snapshot_key)] = self._snapshot_mounts()
            if publish:
                self.publish(
                    "/snapshot/prepare",
                    snapshot_events.SnapshotPrepare(
                        key=pb.snapshot_key, parent="sha256:fake-image-top", snapshotter=snapshotter
                    ),
                    namespace,
                )
                self.publish(
                    "/containers/create",
                    container_events.ContainerCreate(
                        id=container_id,
                        image=image,
                        runtime=container_events.ContainerCreate.Runtime(name=RUNTIME),
                    ),
                    namespace,
                )
        return pb

    def create_task(
        self,
        container_id: str,
        *,
        pid: int | None = None,
        namespace: str = NAMESPACE,
        publish: bool = True,
    ) -> int:
        """Create the container's task (status CREATED): `/tasks/create` carrying the rootfs
        mounts (overlay, `upperdir=`) and the PID. Returns the PID."""
        with self._lock:
            ns = self._ns(namespace)
            pb = ns.containers[container_id]
            pid = self.new_pid() if pid is None else pid
            ns.tasks[container_id] = task_types.Process(
                id=container_id, pid=pid, status=task_types.CREATED
            )
            if publish:
                rootfs = ns.mounts.get((pb.snapshotter, pb.snapshot_key), [])
                self.publish(
                    "/tasks/create",
                    task_events.TaskCreate(
                        container_id=container_id,
                        bundle=f"/run/containerd/io.containerd.runtime.v2.task/{namespace}/"
                        f"{container_id}",
                        rootfs=rootfs,
                        io=task_events.TaskIO(),
                        pid=pid,
                    ),
                    namespace,
                )
            return pid

    def start_task(
        self,
        container_id: str,
        *,
        pid: int | None = None,
        namespace: str = NAMESPACE,
        publish: bool = True,
    ) -> int:
        """Run the container's task (status RUNNING): `/tasks/create` first if it has no task,
        then `/tasks/start`. Returns the PID."""
        with self._lock:
            ns = self._ns(namespace)
            if container_id not in ns.tasks:
                self.create_task(container_id, pid=pid, namespace=namespace, publish=publish)
            task = ns.tasks[container_id]
            task.status = task_types.RUNNING
            if publish:
                self.publish(
                    "/tasks/start",
                    task_events.TaskStart(container_id=container_id, pid=task.pid),
                    namespace,
                )
            return task.pid

    def exit_task(
        self,
        container_id: str,
        *,
        exit_status: int = 0,
        namespace: str = NAMESPACE,
        publish: bool = True,
    ) -> None:
        """The task's process ended (status STOPPED): `/tasks/exit` with `id` = container id
        (an exec'd process would carry its exec id there; use `publish` for that)."""
        with self._lock:
            task = self._ns(namespace).tasks[container_id]
            task.status = task_types.STOPPED
            task.exit_status = exit_status
            task.exited_at.CopyFrom(timestamp())
            if publish:
                self.publish(
                    "/tasks/exit",
                    task_events.TaskExit(
                        container_id=container_id,
                        id=container_id,
                        pid=task.pid,
                        exit_status=exit_status,
                        exited_at=task.exited_at,
                    ),
                    namespace,
                )

    def delete_task(
        self, container_id: str, *, namespace: str = NAMESPACE, publish: bool = True
    ) -> None:
        """Delete the task (exiting it first, status 137, if it still runs): `/tasks/delete`."""
        with self._lock:
            task = self._ns(namespace).tasks[container_id]
            if task.status != task_types.STOPPED:
                self.exit_task(container_id, exit_status=137, namespace=namespace, publish=publish)
            del self._ns(namespace).tasks[container_id]
            if publish:
                self.publish(
                    "/tasks/delete",
                    task_events.TaskDelete(
                        container_id=container_id,
                        id=container_id,
                        pid=task.pid,
                        exit_status=task.exit_status,
                        exited_at=task.exited_at,
                    ),
                    namespace,
                )

    def delete_container(
        self, container_id: str, *, namespace: str = NAMESPACE, publish: bool = True
    ) -> None:
        """Delete the container (its task first, if any) and its snapshot:
        `/containers/delete`, `/snapshot/remove`."""
        with self._lock:
            ns = self._ns(namespace)
            if container_id in ns.tasks:
                self.delete_task(container_id, namespace=namespace, publish=publish)
            pb = ns.containers.pop(container_id)
            ns.mounts.pop((pb.snapshotter, pb.snapshot_key), None)
            if publish:
                self.publish(
                    "/containers/delete",
                    container_events.ContainerDelete(id=container_id),
                    namespace,
                )
                self.publish(
                    "/snapshot/remove",
                    snapshot_events.SnapshotRemove(key=pb.snapshot_key, snapshotter=pb.snapshotter),
                    namespace,
                )
