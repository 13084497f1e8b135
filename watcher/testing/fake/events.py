"""Event streams: what containerd publishes, and how each Events.Subscribe stream gets it.

Rules:

* An event is an envelope as containerd makes it (a timestamp, the namespace, the event
  packed under its bare type URL), queued on every live stream whose filter matches it; a
  stream with no filter gets every namespace.
* There is no event history: a stream gets only what is published while it lives, so a late
  subscriber missed everything, and streams do not survive the server's stop.
* Each stream sends its queue in order, from its own worker thread (`_next` blocks there);
  an `Abort` queued behind the events ends the stream with a status once they are sent.
* The delivery faults (withheld, duplicated, stalled: `faults`) are applied here, where an
  event is queued or sent; every envelope is recorded in `published()` all the same.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message

from containerd_protos.types import event_pb2

from .filters import UNSUPPORTED, Filter, Unsupported
from .messages import event_any, timestamp
from .state import State
from .wire import GARBAGE, NAMESPACE


@dataclass(frozen=True, slots=True)
class Abort:
    """A queued instruction to end a stream with a status."""

    code: grpc.StatusCode
    details: str


@dataclass(slots=True)
class Subscriber:
    filter: Filter
    queue: deque[event_pb2.Envelope | Abort] = field(default_factory=deque)
    closed: bool = False


class Events(State):
    """Publishing events, and the queues of the live Subscribe streams."""

    def __init__(self) -> None:
        super().__init__()
        self._subscribers: list[Subscriber] = []
        self._published: list[event_pb2.Envelope] = []
        self._withheld: list[event_pb2.Envelope] = []
        self._withhold_next = 0
        self._duplicate_next = 0
        self._stalled = False
        self._sent = 0

    # --- observation ----------------------------------------------------------------------

    def published(self) -> list[event_pb2.Envelope]:
        """Every envelope published (withheld ones included), in order (a copy)."""
        with self._lock:
            return list(self._published)

    @property
    def subscriber_count(self) -> int:
        """Live Subscribe streams."""
        with self._lock:
            return sum(not s.closed for s in self._subscribers)

    @property
    def sent_count(self) -> int:
        """Envelopes handed to gRPC on any stream so far (duplicates counted)."""
        with self._lock:
            return self._sent

    @property
    def pending_count(self) -> int:
        """Envelopes queued on live streams but not sent yet (e.g. while stalled)."""
        with self._lock:
            return sum(len(s.queue) for s in self._subscribers if not s.closed)

    # --- publishing -----------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        event: Message | any_pb2.Any,
        namespace: str = NAMESPACE,
        *,
        copies: int = 1,
    ) -> event_pb2.Envelope:
        """Publish an event as containerd does: an envelope with a timestamp, the namespace
        and the event packed under its bare type URL (an `Any` goes out as is: unknown type
        URLs, garbage bytes). Queued on every stream whose filter matches; `copies` > 1
        delivers it that many times. `withhold_next`/`duplicate_next` apply here."""
        envelope = event_pb2.Envelope(
            timestamp=timestamp(), namespace=namespace, topic=topic, event=event_any(event)
        )
        with self._lock:
            self._published.append(envelope)
            if self._withhold_next > 0:
                self._withhold_next -= 1
                self._withheld.append(envelope)
                return envelope
            if self._duplicate_next > 0:
                self._duplicate_next -= 1
                copies += 1
            self._enqueue(envelope, copies)
        return envelope

    def _enqueue(self, envelope: event_pb2.Envelope, copies: int) -> None:
        adaptor = _envelope_adaptor(envelope)
        for sub in self._subscribers:
            if not sub.closed and sub.filter.matches(adaptor):
                sub.queue.extend([envelope] * copies)
        self._changed()

    def publish_unknown(
        self,
        topic: str = "/fake/unknown",
        type_url: str = "containerd.events.FakeUnknownEvent",
        value: bytes = b"",
        namespace: str = NAMESPACE,
    ) -> event_pb2.Envelope:
        """An event of a type the watcher cannot know (a newer containerd, a plugin)."""
        return self.publish(topic, any_pb2.Any(type_url=type_url, value=value), namespace)

    def publish_garbage(
        self,
        topic: str = "/tasks/create",
        type_url: str = "containerd.events.TaskCreate",
        value: bytes = GARBAGE,
        namespace: str = NAMESPACE,
    ) -> event_pb2.Envelope:
        """A known type URL over bytes that do not parse (truncated by default)."""
        return self.publish(topic, any_pb2.Any(type_url=type_url, value=value), namespace)

    # --- serving (worker threads) ---------------------------------------------------------

    def _subscribe(self, flt: Filter) -> Subscriber:
        with self._lock:
            sub = Subscriber(flt)
            if self._stopping:
                sub.closed = True
            self._subscribers.append(sub)
            self._changed()
            return sub

    def _close(self, sub: Subscriber) -> None:
        with self._lock:
            sub.closed = True
            self._changed()

    def _unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            sub.closed = True
            with suppress(ValueError):
                self._subscribers.remove(sub)
            self._changed()

    def _next(self, sub: Subscriber) -> event_pb2.Envelope | Abort | None:
        """The next item for a stream, blocking; None once the stream is closed."""
        with self._cond:
            while True:
                if sub.closed:
                    return None
                if sub.queue and (not self._stalled or isinstance(sub.queue[0], Abort)):
                    item = sub.queue.popleft()
                    if not isinstance(item, Abort):
                        self._sent += 1
                    self._changed()
                    return item
                self._cond.wait()


def _envelope_adaptor(
    envelope: event_pb2.Envelope,
) -> Callable[[tuple[str, ...]], str | Unsupported | None]:
    def adaptor(path: tuple[str, ...]) -> str | Unsupported | None:
        if path == ("namespace",):
            return envelope.namespace
        if path == ("topic",):
            return envelope.topic
        return UNSUPPORTED

    return adaptor
