"""The resumable feed, without I/O: numbers, resuming, overflow, gaps, the state it adds up to,
and the `resync_required` lines it made, by cause (the service's metrics read them).

Pure (`watcher.service.feed` has no trio, no clock): no containerd, no root.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from record_builders import workspace

from watcher.containerd_records import ContainerId
from watcher.published import (
    Change,
    ChangeKind,
    Disconnected,
    InstanceId,
    Synced,
    WorkspaceChange,
    WorkspaceState,
)
from watcher.service.feed import Behind, Cause, Feed
from watcher.wire import change_json, dumps

NOW = 1_800_000_000.0


def encode(change: Change, seq: int | None) -> bytes:
    obj = change_json(change)
    return (dumps(obj if seq is None else {"seq": seq, **obj}) + "\n").encode()


def feed(history: int = 8) -> Feed:
    return Feed(history=history, encode=encode, epoch="epoch-1")


def step(kind: ChangeKind, n: int, ts: float = NOW) -> WorkspaceChange:
    """A lifecycle change of container n (instance n)."""
    state = {
        ChangeKind.CREATED: WorkspaceState.CREATED,
        ChangeKind.RUNNING: WorkspaceState.RUNNING,
    }.get(kind, WorkspaceState.EXITED)
    ws = workspace(
        instance_id=InstanceId(f"inst-{n}"), container_id=ContainerId(f"c{n:063d}"), state=state
    )
    return WorkspaceChange(kind=kind, ts=ts, workspace=ws)


def lines(raw: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw]


def test_every_change_gets_the_next_number_and_a_line_that_carries_it() -> None:
    f = feed()
    assert (f.head, f.oldest) == (0, 1)
    entries = [
        f.append(step(ChangeKind.CREATED, 1)),
        f.append(Synced(ts=NOW, workspaces=1, initial=True)),
    ]
    assert [e.seq for e in entries] == [1, 2]
    assert (f.head, f.oldest) == (2, 1)
    first = json.loads(entries[0].line)
    assert list(first)[:2] == ["seq", "event"]
    assert (first["seq"], first["event"], first["instance_id"]) == (1, "created", "inst-1")
    assert entries[1].line.endswith(b"\n") and entries[1].line.count(b"\n") == 1


def test_a_follower_resuming_gets_exactly_what_came_after_its_number() -> None:
    f = feed()
    for n in range(1, 6):
        f.append(step(ChangeKind.CREATED, n))
    cursor, first = f.start(since=2, epoch="epoch-1", initial=False, now=NOW)
    assert (cursor, first) == (2, [])
    got = f.after(cursor, limit=100)
    assert not isinstance(got, Behind)
    assert [e.seq for e in got] == [3, 4, 5]
    # up to date: nothing, not an error
    assert f.after(5, limit=100) == []


def test_after_returns_a_batch_at_most() -> None:
    f = feed()
    for n in range(1, 8):
        f.append(step(ChangeKind.CREATED, n))
    got = f.after(0, limit=3)
    assert not isinstance(got, Behind)
    assert [e.seq for e in got] == [1, 2, 3]
    again = f.after(got[-1].seq, limit=3)
    assert not isinstance(again, Behind)
    assert [e.seq for e in again] == [4, 5, 6]


def test_history_overflows_oldest_first_and_a_follower_behind_it_is_told() -> None:
    f = feed(history=3)
    for n in range(1, 6):
        f.append(step(ChangeKind.CREATED, n))
    assert (f.head, f.oldest) == (5, 3)
    # after 2: 3, 4 and 5 are held
    got = f.after(2, limit=10)
    assert not isinstance(got, Behind)
    assert [e.seq for e in got] == [3, 4, 5]
    # after 1: 2 is gone; a follower that was connected fell behind
    behind = f.after(1, limit=10)
    assert isinstance(behind, Behind) and behind.cause is Cause.BEHIND
    assert f.resyncs[Cause.BEHIND] == 0  # counted when its line is made, not when asked
    f.resync(behind, since=1, initial=False, now=NOW)
    # one that comes back with since=1 finds it expired
    cursor, first = f.start(since=1, epoch=None, initial=False, now=NOW)
    (marker,) = lines(first)
    assert cursor == 5
    assert marker == {
        "seq": 5,
        "event": "resync_required",
        "ts": NOW,
        "since": 1,
        "reason": "the changes after seq 1 are no longer held",
    }
    assert f.resyncs == {**dict.fromkeys(Cause, 0), Cause.BEHIND: 1, Cause.EXPIRED: 1}


@pytest.mark.parametrize(
    ("since", "epoch", "reason", "cause"),
    [
        (2, "another-epoch", "the server restarted (a new feed)", Cause.RESTARTED),
        (9, "epoch-1", "seq 9 is ahead of this feed", Cause.AHEAD),
        (9, None, "seq 9 is ahead of this feed", Cause.AHEAD),
    ],
)
def test_numbers_of_another_feed_are_never_taken_for_this_ones(
    since: int, epoch: str | None, reason: str, cause: Cause
) -> None:
    f = feed()
    for n in range(1, 4):
        f.append(step(ChangeKind.CREATED, n))
    resumed = f.resume(since, epoch)
    assert resumed == Behind(head=3, reason=reason, cause=cause)
    f.start(since=since, epoch=epoch, initial=False, now=NOW)
    assert f.resyncs[cause] == 1 and sum(f.resyncs.values()) == 1


def test_a_fresh_follower_starts_at_the_head_with_a_synced_line() -> None:
    f = feed()
    f.append(step(ChangeKind.CREATED, 1))
    f.append(step(ChangeKind.RUNNING, 1))
    f.append(Synced(ts=NOW - 5, workspaces=1, initial=True))
    cursor, first = f.start(since=None, epoch=None, initial=False, now=NOW)
    assert cursor == 3
    assert lines(first) == [{"seq": 3, "event": "synced", "ts": NOW, "workspaces": 1}]


def test_initial_sends_each_containers_newest_change_first_without_a_number() -> None:
    f = feed()
    f.append(step(ChangeKind.CREATED, 1))
    f.append(step(ChangeKind.CREATED, 2))
    f.append(step(ChangeKind.RUNNING, 1))
    f.append(step(ChangeKind.CREATED, 3))
    f.append(step(ChangeKind.RUNNING, 3))
    f.append(step(ChangeKind.EXITED, 3))
    f.append(step(ChangeKind.REMOVED, 2))
    f.append(Disconnected(ts=NOW, error="gone"))  # not state: not repeated
    cursor, first = f.start(since=None, epoch=None, initial=True, now=NOW)
    got = lines(first)
    assert cursor == 8
    # in order of first appearance, each in its newest state; the removed one not at all
    assert [(o["event"], o["instance_id"]) for o in got[:-1]] == [
        ("running", "inst-1"),
        ("exited", "inst-3"),
    ]
    assert all("seq" not in o for o in got[:-1])
    assert got[-1] == {"seq": 8, "event": "synced", "ts": NOW, "workspaces": 2}


def test_a_resync_with_initial_carries_the_state_to_rebuild_from() -> None:
    f = feed(history=2)
    for n in range(1, 5):
        f.append(step(ChangeKind.CREATED, n))
    cursor, first = f.start(since=0, epoch="epoch-1", initial=True, now=NOW)
    got = lines(first)
    assert cursor == 4
    assert got[0]["event"] == "resync_required" and got[0]["seq"] == 4
    assert [o["instance_id"] for o in got[1:-1]] == ["inst-1", "inst-2", "inst-3", "inst-4"]
    assert got[-1]["event"] == "synced" and got[-1]["seq"] == 4


def test_a_gap_can_be_stepped_over_by_nobody_not_even_a_follower_up_to_date() -> None:
    f = feed()
    for n in range(1, 4):
        f.append(step(ChangeKind.CREATED, n))
    up_to_date = f.head
    f.lose([step(ChangeKind.RUNNING, 7)])
    assert f.head == up_to_date + 1  # the lost changes have a number of their own
    for cursor in (up_to_date, 0):
        behind = f.after(cursor, limit=10)
        assert isinstance(behind, Behind) and behind.cause is Cause.GAP
    resumed = f.resume(up_to_date, "epoch-1")  # a follower coming back: the gap, too
    assert isinstance(resumed, Behind) and resumed.cause is Cause.GAP
    # from the gap on, the feed goes on as before
    assert f.after(f.head, limit=10) == []
    entry = f.append(step(ChangeKind.RUNNING, 8))
    got = f.after(up_to_date + 1, limit=10)
    assert not isinstance(got, Behind)
    assert got == [entry]
    # the state starts again from what the watcher said
    assert [c.workspace.instance_id for c in f.state()] == ["inst-7", "inst-8"]


def test_the_state_counts_instances_not_containers() -> None:
    f = feed()
    first = step(ChangeKind.RUNNING, 1)
    replaced = WorkspaceChange(
        kind=ChangeKind.RUNNING,
        ts=NOW,
        workspace=workspace(instance_id=InstanceId("inst-1"), container_id=ContainerId("d" * 64)),
    )
    f.append(first)
    f.append(replaced)
    assert len(f.state()) == 2
    assert f.instances() == 1


def test_a_feed_holds_at_least_one_change() -> None:
    with pytest.raises(ValueError, match="at least one"):
        feed(history=0)
