"""Fetch what the stream's events need while earlier events are still being applied.

A `/containers/create` event carries no labels, so the watcher must `Get` the container
before it can apply the event. Done one after the other on the watcher's single loop, a
burst of pod creations queues every later change behind every earlier round trip (tens of
ms each on a busy containerd). Here each Get starts as soon as its envelope arrives, up to
`CONCURRENCY` at once, while the watcher still applies the envelopes strictly in order:
`steps()` hands out each envelope with its Get already done (or failed).

Cancellation: leaving `open_prefetch` cancels the reader and the Gets in flight.
Error handling: a broken stream or a failed Get is handed over *in order*, as the step
where it happened, so the watcher applies everything before it and then raises it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from ._nursery import single_errors
from .client import Client, Events
from .errors import ConnectError, ContainerdError, NotFound
from .records import ContainerChanged, ContainerRecord, Envelope

#: Gets in flight at once: enough to overlap a burst, few enough not to swamp containerd
CONCURRENCY = 16
#: envelopes read ahead of the one being applied
READ_AHEAD = 256


@dataclass(slots=True, eq=False)
class Step:
    """One envelope, with the container record its event needs once `ready` is set.

    `record` is None when no Get was needed or containerd answered NotFound (`missing`);
    `error` is a failure to raise when the watcher reaches this step.
    """

    envelope: Envelope | None
    ready: trio.Event = field(default_factory=trio.Event)
    record: ContainerRecord | None = None
    missing: bool = False
    error: Exception | None = None

    async def fetch(self, client: Client, container_id: str, limiter: trio.CapacityLimiter) -> None:
        try:
            async with limiter:
                self.record = await client.get_container(container_id)
        except NotFound:
            self.missing = True
        except (ConnectError, ContainerdError) as exc:
            self.error = exc
        finally:
            self.ready.set()


async def _read(client: Client, events: Events, send: trio.MemorySendChannel[Step]) -> None:
    limiter = trio.CapacityLimiter(CONCURRENCY)
    async with send, trio.open_nursery() as gets:
        try:
            async for envelope in events:
                step = Step(envelope)
                event = envelope.event
                if isinstance(event, ContainerChanged):
                    gets.start_soon(step.fetch, client, event.container_id, limiter)
                else:
                    step.ready.set()
                await send.send(step)
            failure: Exception = ConnectError("containerd closed the event stream")
        except (ConnectError, ContainerdError) as exc:
            failure = exc
        end = Step(None, error=failure)
        end.ready.set()
        await send.send(end)


@asynccontextmanager
async def open_prefetch(
    client: Client, events: Events
) -> AsyncIterator[trio.MemoryReceiveChannel[Step]]:
    """The stream's envelopes as `Step`s, in order, their Gets started on arrival."""
    send, receive = trio.open_memory_channel[Step](READ_AHEAD)
    with single_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read, client, events, send)
            try:
                yield receive
            finally:
                nursery.cancel_scope.cancel()
