"""Bookkeeping of what safety relists correct, without false alarms.

A relist may find a change whose event is merely still in flight (listed after containerd
published it, before the stream delivered it). Such a change is only *suspected* missed; an
event about the same container within `grace` seconds (`settings.RELIST_GRACE`) clears the
suspicion. What is still
suspected after that was really missed: it is logged with the container id and counted.
"""

from __future__ import annotations

import logging
import math

from .published import WorkspaceChange
from .settings import RELIST_GRACE

log = logging.getLogger(__name__)


class Corrections:
    """The changes relists made, unconfirmed until `grace` passes; `count` the confirmed."""

    def __init__(self, grace: float = RELIST_GRACE) -> None:
        self.grace = grace
        self.count = 0
        self._unconfirmed: dict[str, tuple[float, WorkspaceChange]] = {}

    def add(self, change: WorkspaceChange, now: float) -> None:
        """A relist made this change: a correction unless its event comes within `grace`."""
        cid = change.workspace.container_id
        if cid not in self._unconfirmed:  # a second change keeps the first's place and due
            self._unconfirmed[cid] = (now + self.grace, change)

    def confirm(self, container_id: str | None) -> None:
        """An event about this container arrived: its relisted change was not missed."""
        if container_id is not None:
            self._unconfirmed.pop(container_id, None)

    def next_due(self) -> float:
        # every change gets the same grace, so insertion order is due order: the first
        # one is the earliest (asked after every event: O(1), not a scan of them)
        for due, _ in self._unconfirmed.values():
            return due
        return math.inf

    def report_due(self, now: float) -> int:
        due = []
        for cid, (at, _) in self._unconfirmed.items():
            if at > now:
                break  # due order: the rest are later
            due.append(cid)
        for cid in due:
            _, change = self._unconfirmed.pop(cid)
            self.count += 1
            log.warning(
                "relist corrected a missed event: container %s of instance %s %s",
                cid,
                change.workspace.instance_id,
                change.kind.value,
            )
        return len(due)
