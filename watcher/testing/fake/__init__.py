"""A fake containerd: real gRPC on a unix socket, scriptable state, events and faults.

Why: the watcher's hardest paths (a stream dropped mid-way, a refused or slow List, garbage on
the wire, an event that never comes, containerd restarting) cannot be provoked on demand with a
real containerd. This server speaks the same protocol on the same kind of socket, so the
watcher and its client run unmodified against it, while the test decides what happens.

Synopsis::

    with FakeContainerd(tmp_path) as fake:
        pod = fake.add_pod("ws-1", labels=mk2_labels("inst-1", "ws-1", "owner-1"))
        async with open_client(fake.address) as client:
            async with client.subscribe() as events:
                await fake.wait_until(lambda f: f.subscriber_count == 1)
                fake.exit_task(pod.containers["workspace"], exit_status=137)
                ...
        fake.fail(Rpc.CONTAINERS_LIST, grpc.StatusCode.UNAVAILABLE, times=2)
        fake.delay(Rpc.TASKS_LIST, 1.5)
        fake.drop_streams()               # every Subscribe ends with UNAVAILABLE
        fake.withhold_next()              # the next event is never delivered
        fake.kill(); fake.start()         # containerd SIGKILLed, restarted on the same socket
        assert {c.method for c in fake.calls()} <= READ_ONLY_RPCS

Rules of the fake (each module's docstring has the rules of its part):

* It implements what the watcher uses — Version.Version, Namespaces.List,
  Containers.List/ListStream/Get, Tasks.List/Get, Snapshots.Mounts, Events.Subscribe (`Rpc`);
  every other RPC of these services answers UNIMPLEMENTED (inherited from the generated
  servicers), and is still recorded.
* Like containerd: namespaced RPCs without `containerd-namespace` metadata fail with
  FAILED_PRECONDITION; events carry their namespace in the envelope and a *bare* type URL
  (`containerd.events.TaskCreate`); Subscribe delivers every namespace unless filtered.
* State survives `stop()`/`start()` (containerd keeps its metadata and shims across a
  restart); event streams do not, and there is no event history (a late subscriber missed
  everything).
* The high-level helpers (`add_pod`, `start_task`, ...) change the state *and* publish what
  containerd would; with `publish=False` they change the state silently — what happened while
  the watcher was away.
* Thread-safe: one lock guards state, streams, faults and the call record; tests call the
  helpers from the trio thread while gRPC's worker threads serve.

The modules, one part each; `FakeContainerd` (`server`) is composed of the classes of
`state` ← `events` ← `containers` ← `pods`, and `faults`:

* `wire`: names and constants of containerd's API, the RPCs served (`Rpc`), `RecordedCall`;
* `messages`: protobuf messages built from plain values (pure);
* `filters`: containerd's filter language (pure);
* `state`: what is held per namespace, the call record, waiting for a change;
* `events`: publishing, and the queues of the Subscribe streams;
* `containers`: containerd's own steps (create, start, exit, delete), events included;
* `pods`: kubelet-style pods (`FakePod`) made of those steps;
* `faults`: scripted failures and delays of RPCs, and of event delivery;
* `services`: the gRPC servicers and the interceptor that records and applies faults;
* `server`: `FakeContainerd`, the server's life (start, stop, kill).

Rejected: an in-process servicer without a socket (the client's connection handling is part of
what is tested); grpc.aio (it would need asyncio next to trio).
"""

from __future__ import annotations

from ..labels import mk2_labels
from .messages import (
    JsonOrRaw,
    build_container,
    event_any,
    json_any,
    oci_spec,
    overlay_mount,
    timestamp,
)
from .pods import FakePod, pod_ids
from .server import MAX_WORKERS, FakeContainerd
from .wire import (
    CRI_CONTAINER_EXTENSION,
    CRI_CONTAINER_EXTENSION_URL,
    CRI_SANDBOX_EXTENSION,
    CRI_SANDBOX_EXTENSION_URL,
    GARBAGE,
    MAX_MESSAGE_BYTES,
    NAMESPACE,
    NAMESPACE_METADATA,
    PAUSE_IMAGE,
    READ_ONLY_RPCS,
    RUNTIME,
    SNAPSHOTTER,
    SPEC_TYPE_URL,
    WORKSPACE_IMAGE,
    RecordedCall,
    Rpc,
)

__all__ = [
    "CRI_CONTAINER_EXTENSION",
    "CRI_CONTAINER_EXTENSION_URL",
    "CRI_SANDBOX_EXTENSION",
    "CRI_SANDBOX_EXTENSION_URL",
    "GARBAGE",
    "MAX_MESSAGE_BYTES",
    "MAX_WORKERS",
    "NAMESPACE",
    "NAMESPACE_METADATA",
    "PAUSE_IMAGE",
    "READ_ONLY_RPCS",
    "RUNTIME",
    "SNAPSHOTTER",
    "SPEC_TYPE_URL",
    "WORKSPACE_IMAGE",
    "FakeContainerd",
    "FakePod",
    "JsonOrRaw",
    "RecordedCall",
    "Rpc",
    "build_container",
    "event_any",
    "json_any",
    "mk2_labels",
    "oci_spec",
    "overlay_mount",
    "pod_ids",
    "timestamp",
]
