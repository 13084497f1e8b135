"""The gRPC services of the fake: containerd's RPCs answered from the fake's state.

Rules:

* Served: Version.Version, Namespaces.List, Containers.List/ListStream/Get, Tasks.List/Get,
  Snapshots.Mounts and Events.Subscribe (`wire.Rpc`). Every other RPC of these services
  answers UNIMPLEMENTED (inherited from the generated servicers) and is still recorded.
* As containerd answers: a namespaced RPC without `containerd-namespace` metadata fails with
  FAILED_PRECONDITION, an unknown id with NOT_FOUND (containerd's wording), a filter that does
  not parse with INVALID_ARGUMENT; a namespace that holds nothing is empty, not an error.
* Every call is recorded first, then its scripted faults apply (`faults`), then the handler
  reads the state under the lock and answers with what it copied; a stream sends outside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf import empty_pb2

from containerd_protos.services.containers.v1 import containers_pb2, containers_pb2_grpc
from containerd_protos.services.events.v1 import events_pb2, events_pb2_grpc
from containerd_protos.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from containerd_protos.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from containerd_protos.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from containerd_protos.services.version.v1 import version_pb2, version_pb2_grpc
from containerd_protos.types import event_pb2
from containerd_protos.types.task import task_pb2 as task_types

from .events import Abort
from .filters import UNSUPPORTED, Filter, FilterError, Unsupported, parse_all
from .state import Namespace
from .wire import NAMESPACE, NAMESPACE_METADATA

if TYPE_CHECKING:
    from .server import FakeContainerd


def add_services(fake: FakeContainerd, server: grpc.Server) -> None:
    """Serve the fake's services on `server` (not started yet)."""
    _add_version(_VersionService(fake), server)
    _add_containers(_ContainersService(fake), server)
    _add_tasks(_TasksService(fake), server)
    _add_snapshots(_SnapshotsService(fake), server)
    _add_events(_EventsService(fake), server)
    _add_namespaces(_NamespacesService(fake), server)


def interceptor(fake: FakeContainerd) -> grpc.ServerInterceptor:
    """What records every call and applies its faults, before the services see it."""
    return _Interceptor(fake)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, details)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _namespace_of(context: grpc.ServicerContext) -> str:
    """The request's namespace; FAILED_PRECONDITION without one, as containerd answers."""
    for key, value in context.invocation_metadata():
        if key == NAMESPACE_METADATA and value:
            return str(value)
    _abort(
        context,
        grpc.StatusCode.FAILED_PRECONDITION,
        "namespace is required: failed precondition",
    )


def _held(fake: FakeContainerd, context: grpc.ServicerContext) -> Namespace:
    return fake._namespaces.get(_namespace_of(context)) or Namespace()


def _apply_faults(fake: FakeContainerd, method: str, context: grpc.ServicerContext) -> None:
    """Run in the worker thread before the handler: delays wait, failures abort."""
    failure = fake._due_failure(method)
    if failure is not None:
        assert failure.code is not None
        _abort(context, failure.code, failure.details)


def _container_adaptor(
    pb: containers_pb2.Container,
) -> Callable[[tuple[str, ...]], str | Unsupported | None]:
    def adaptor(path: tuple[str, ...]) -> str | Unsupported | None:
        match path:
            case ("id",):
                return pb.id
            case ("image",):
                return pb.image
            case ("snapshotter",):
                return pb.snapshotter
            case ("runtime", "name"):
                return pb.runtime.name
            case ("labels", key):
                return pb.labels.get(key)
        return UNSUPPORTED

    return adaptor


def _parse_filters(filters: Sequence[str], context: grpc.ServicerContext) -> Filter:
    try:
        return parse_all(filters)
    except FilterError as exc:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))


# --- the servicers ----------------------------------------------------------------------
# The generated servicers answer UNIMPLEMENTED for everything; we override what the watcher
# uses. Their add_* functions are untyped: typed aliases keep mypy --strict quiet.

_add_version: Callable[[Any, Any], None] = version_pb2_grpc.add_VersionServicer_to_server
_add_containers: Callable[[Any, Any], None] = containers_pb2_grpc.add_ContainersServicer_to_server
_add_tasks: Callable[[Any, Any], None] = tasks_pb2_grpc.add_TasksServicer_to_server
_add_snapshots: Callable[[Any, Any], None] = snapshots_pb2_grpc.add_SnapshotsServicer_to_server
_add_events: Callable[[Any, Any], None] = events_pb2_grpc.add_EventsServicer_to_server
_add_namespaces: Callable[[Any, Any], None] = namespace_pb2_grpc.add_NamespacesServicer_to_server


class _Serving:
    """A servicer of the fake: what it answers comes from `fake`."""

    def __init__(self, fake: FakeContainerd) -> None:
        self.fake = fake


class _VersionService(_Serving, version_pb2_grpc.VersionServicer):
    def Version(
        self, request: empty_pb2.Empty, context: grpc.ServicerContext
    ) -> version_pb2.VersionResponse:
        return version_pb2.VersionResponse(version=self.fake.version, revision=self.fake.revision)


class _NamespacesService(_Serving, namespace_pb2_grpc.NamespacesServicer):
    """containerd lists the namespaces that hold anything; CRI's `k8s.io` always exists."""

    def List(
        self, request: namespace_pb2.ListNamespacesRequest, context: grpc.ServicerContext
    ) -> namespace_pb2.ListNamespacesResponse:
        with self.fake._lock:
            names = sorted({NAMESPACE, *self.fake._namespaces})
        return namespace_pb2.ListNamespacesResponse(
            namespaces=[namespace_pb2.Namespace(name=n) for n in names]
        )


class _ContainersService(_Serving, containers_pb2_grpc.ContainersServicer):
    def Get(
        self, request: containers_pb2.GetContainerRequest, context: grpc.ServicerContext
    ) -> containers_pb2.GetContainerResponse:
        fake = self.fake
        with fake._lock:
            namespace = _namespace_of(context)
            found = _held(fake, context).containers.get(request.id)
            if found is not None:
                return containers_pb2.GetContainerResponse(container=found)
        _abort(
            context,
            grpc.StatusCode.NOT_FOUND,
            f'container "{request.id}" in namespace "{namespace}": not found',
        )

    def List(
        self, request: containers_pb2.ListContainersRequest, context: grpc.ServicerContext
    ) -> containers_pb2.ListContainersResponse:
        flt = _parse_filters(request.filters, context)
        fake = self.fake
        with fake._lock:
            held = list(_held(fake, context).containers.values())
        if flt.alternatives:
            held = [c for c in held if flt.matches(_container_adaptor(c))]
        return containers_pb2.ListContainersResponse(containers=held)

    def ListStream(
        self, request: containers_pb2.ListContainersRequest, context: grpc.ServicerContext
    ) -> Iterator[containers_pb2.ListContainerMessage]:
        flt = _parse_filters(request.filters, context)
        fake = self.fake
        with fake._lock:
            held = list(_held(fake, context).containers.values())
        for n, c in enumerate(held):
            if n and fake.listing_pace:
                time.sleep(fake.listing_pace)  # a worker thread of the server: it may block
            if flt.matches(_container_adaptor(c)):
                yield containers_pb2.ListContainerMessage(container=c)


class _TasksService(_Serving, tasks_pb2_grpc.TasksServicer):
    def Get(
        self, request: tasks_pb2.GetRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.GetResponse:
        fake = self.fake
        with fake._lock:
            found = _held(fake, context).tasks.get(request.container_id)
            if found is not None:
                process = task_types.Process()
                process.CopyFrom(found)
                process.container_id = request.container_id
                return tasks_pb2.GetResponse(process=process)
        _abort(context, grpc.StatusCode.NOT_FOUND, f"task {request.container_id}: not found")

    def List(
        self, request: tasks_pb2.ListTasksRequest, context: grpc.ServicerContext
    ) -> tasks_pb2.ListTasksResponse:
        fake = self.fake
        with fake._lock:
            held = list(_held(fake, context).tasks.values())
        return tasks_pb2.ListTasksResponse(tasks=held)


class _SnapshotsService(_Serving, snapshots_pb2_grpc.SnapshotsServicer):
    def Mounts(
        self, request: snapshots_pb2.MountsRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.MountsResponse:
        fake = self.fake
        with fake._lock:
            found = _held(fake, context).mounts.get((request.snapshotter, request.key))
            if found is not None:
                return snapshots_pb2.MountsResponse(mounts=found)
        _abort(
            context,
            grpc.StatusCode.NOT_FOUND,
            f"snapshot {request.key} does not exist: not found",
        )


class _EventsService(_Serving, events_pb2_grpc.EventsServicer):
    def Subscribe(
        self, request: events_pb2.SubscribeRequest, context: grpc.ServicerContext
    ) -> Iterator[event_pb2.Envelope]:
        flt = _parse_filters(request.filters, context)
        fake = self.fake
        sub = fake._subscribe(flt)
        # runs when the RPC ends for any reason (client cancel, server stop): wakes _next
        context.add_callback(lambda: fake._close(sub))
        try:
            while True:
                item = fake._next(sub)
                if item is None:
                    return
                if isinstance(item, Abort):
                    _abort(context, item.code, item.details)
                yield item
        finally:
            fake._unsubscribe(sub)


class _Interceptor(_Serving, grpc.ServerInterceptor):  # type: ignore[misc]
    """Records every call (method + namespace metadata), then applies scripted faults in the
    worker thread, before the real handler runs."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        method: str = details.method
        namespace = next(
            (str(v) for k, v in details.invocation_metadata if k == NAMESPACE_METADATA), None
        )
        self.fake._record(method, namespace)
        handler = continuation(details)
        if handler is None:
            return None
        fake = self.fake
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                _apply_faults(fake, method, context)
                return inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                _apply_faults(fake, method, context)
                yield from inner_us(request, context)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
