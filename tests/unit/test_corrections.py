"""A relisted change is only a missed event if no event about it follows within the grace."""

from __future__ import annotations

import logging

import pytest
from record_builders import workspace

from watcher.containerd_records import ContainerId
from watcher.corrections import Corrections
from watcher.published import ChangeKind, InstanceId, WorkspaceChange


def _change(cid: str) -> WorkspaceChange:
    ws = workspace(instance_id=InstanceId("i-" + cid), container_id=ContainerId(cid))
    return WorkspaceChange(kind=ChangeKind.REMOVED, ts=0.0, workspace=ws)


def test_a_confirmed_change_is_not_counted() -> None:
    c = Corrections(grace=5)
    c.add(_change("a"), now=0)
    assert c.next_due() == 5
    c.confirm("a")
    assert c.report_due(now=10) == 0 and c.count == 0


def test_an_unconfirmed_change_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    c = Corrections(grace=5)
    c.add(_change("a"), now=0)
    c.add(_change("b"), now=3)
    c.confirm("zzz")
    with caplog.at_level(logging.WARNING):
        assert c.report_due(now=4) == 0
        assert c.report_due(now=5) == 1
    assert c.count == 1 and "container a" in caplog.text and "removed" in caplog.text
    assert c.next_due() == 8
