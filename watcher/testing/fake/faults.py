"""Scripted faults: RPCs that fail or wait, event streams that drop, stall, lose or repeat.

Rules:

* A fault is scripted by the test and applies to what comes *after* it: the next `times`
  calls of one method (`fail`, `delay`; `times=None`: until `clear_faults`), the next `n`
  events (`withhold_next`, `duplicate_next`), the streams live now (`drop_streams`), or until
  resumed (`stall_streams`).
* RPC faults act in the serving worker thread before the handler, so a failed call never
  reaches the state; it is recorded all the same (`calls()`). A delay ends early on
  `clear_faults` or `stop()`.
* A stream fault changes delivery only, never the state or `published()`: a withheld event
  is what only a relist can tell; a stalled stream keeps its connection healthy, so only the
  watcher's own timers can notice.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from containerd_protos.types import event_pb2

from .events import Abort, Events
from .wire import Rpc, check_method


class FaultKind(enum.Enum):
    FAIL = "fail"
    DELAY = "delay"


@dataclass(slots=True)
class Fault:
    method: str
    kind: FaultKind
    remaining: float  # math.inf: until cleared
    code: grpc.StatusCode | None = None
    details: str = ""
    seconds: float = 0.0
    cleared: bool = False


class Faults(Events):
    """The scripting of faults, and their application to calls."""

    def __init__(self) -> None:
        super().__init__()
        self._faults: list[Fault] = []
        self.listing_pace = 0.0  # seconds between the messages of a container listing

    # --- event streams --------------------------------------------------------------------

    def withhold_next(self, n: int = 1) -> None:
        """The next `n` events are not delivered (the state still changes): a missed event,
        as only a relist can tell. `withheld()` lists them, `release_withheld()` sends them
        late."""
        with self._lock:
            self._withhold_next += n

    def withheld(self) -> list[event_pb2.Envelope]:
        with self._lock:
            return list(self._withheld)

    def release_withheld(self) -> None:
        """Deliver the withheld events now, out of their original order."""
        with self._lock:
            held, self._withheld = self._withheld, []
            for envelope in held:
                self._enqueue(envelope, 1)

    def duplicate_next(self, n: int = 1) -> None:
        """The next `n` events are delivered twice each (as after a containerd restart)."""
        with self._lock:
            self._duplicate_next += n

    def drop_streams(
        self,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        details: str = "fake containerd: event stream dropped",
    ) -> int:
        """End every live Subscribe with `code`, after what was queued before (a stalled
        stream drops at once). Returns how many streams are dropped. New subscriptions are
        not affected."""
        with self._lock:
            live = [s for s in self._subscribers if not s.closed]
            for sub in live:
                if self._stalled:
                    sub.queue.clear()
                sub.queue.append(Abort(code, details))
            self._changed()
            return len(live)

    def stall_streams(self) -> None:
        """Send nothing on any stream (events queue up) until `resume_streams()`; the
        connection stays healthy, so only the watcher's own timers can notice."""
        with self._lock:
            self._stalled = True
            self._changed()

    def resume_streams(self) -> None:
        with self._lock:
            self._stalled = False
            self._changed()

    @contextmanager
    def stalled(self) -> Iterator[None]:
        """`stall_streams()` for the block."""
        self.stall_streams()
        try:
            yield
        finally:
            self.resume_streams()

    # --- RPCs -----------------------------------------------------------------------------

    def fail(
        self,
        method: Rpc | str,
        code: grpc.StatusCode,
        *,
        times: int | None = 1,
        details: str | None = None,
    ) -> None:
        """The next `times` calls of `method` (a full method name; `None`: until
        `clear_faults`) fail with `code` before reaching the fake's state."""
        self._add_fault(
            method,
            FaultKind.FAIL,
            times,
            code=code,
            details=details or f"fake containerd: scripted {code.name}",
        )

    def delay(self, method: Rpc | str, seconds: float, *, times: int | None = 1) -> None:
        """The next `times` calls of `method` wait `seconds` (`math.inf`: until
        `clear_faults` or `stop`) before being served — enough to exceed a client deadline."""
        self._add_fault(method, FaultKind.DELAY, times, seconds=seconds)

    def clear_faults(self, method: Rpc | str | None = None) -> None:
        """Remove scripted faults (of `method`, or all) and release calls being delayed."""
        with self._lock:
            keep = []
            for fault in self._faults:
                if method is None or fault.method == str(method):
                    fault.cleared = True
                else:
                    keep.append(fault)
            self._faults = keep
            self._changed()

    def pace_listing(self, seconds: float) -> None:
        """Send each message of a container listing (ListStream) `seconds` after the one
        before: a listing that keeps delivering, slowly (a busy containerd)."""
        self.listing_pace = seconds

    def _add_fault(
        self,
        method: Rpc | str,
        kind: FaultKind,
        times: int | None,
        *,
        code: grpc.StatusCode | None = None,
        details: str = "",
        seconds: float = 0.0,
    ) -> None:
        fault = Fault(
            method=check_method(method),
            kind=kind,
            remaining=math.inf if times is None else times,
            code=code,
            details=details,
            seconds=seconds,
        )
        with self._lock:
            self._faults.append(fault)

    def _due_failure(self, method: str) -> Fault | None:
        """Run in the worker thread before the handler: the delays due wait here; the failure
        due, if any, is returned (the call must end with its status)."""
        with self._lock:
            for fault in self._faults:
                if fault.method != method or fault.remaining <= 0:
                    continue
                fault.remaining -= 1
                if fault.kind is FaultKind.FAIL:
                    return fault
                self._wait_delay(fault)
        return None

    def _wait_delay(self, fault: Fault) -> None:
        """Hold a call for the fault's seconds; cut short by `clear_faults` or `stop`."""
        timeout = None if math.isinf(fault.seconds) else fault.seconds
        self._cond.wait_for(lambda: fault.cleared or self._stopping, timeout)
