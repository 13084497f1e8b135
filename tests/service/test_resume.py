"""The feed against a real containerd: a follower that reconnects with `since=N` misses
nothing and sees nothing twice; one that asks for what is no longer held, or for another
feed's numbers, is told to re-list; the Python client resumes by itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import trio

from watcher.published import ChangeKind, Synced, WorkspaceChange
from watcher.remote import Changes, ResyncRequired, connect
from watcher.service.listeners import cut_connections
from watcher.service.protocol import FEED_HEADER
from watcher.service.server import Serving
from watcher.testing import Pods, mk2_labels
from watcher.testing.watching import run

DEADLINE = 20.0


def is_change(kind: str, iid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda obj: obj["event"] == kind and obj.get("instance_id") == iid


def both_seen(seen: list[dict[str, Any]]) -> bool:
    """b's `running` and a's `removed` (in whichever order the watcher published them)."""
    return any(map(is_change("running", "r-b"), seen)) and any(
        map(is_change("removed", "r-a"), seen)
    )


class Follower:
    """A raw `/v1/watch` stream: its JSON lines, read with deadlines."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines
        self.seen: list[dict[str, Any]] = []

    async def until(self, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        with trio.fail_after(DEADLINE):
            async for text in self._lines:
                self.seen.append(json.loads(text))
                if done(self.seen[-1]):
                    return self.seen[-1]
        raise AssertionError(f"the stream ended first: {self.seen}")


async def test_a_follower_that_resumes_after_a_disconnect_misses_nothing_and_sees_nothing_twice(
    pods: Pods, serve: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    await serve()
    labels = mk2_labels
    async with http.stream("GET", "/v1/watch") as reference_stream:
        reference = Follower(reference_stream.aiter_lines())
        await reference.until(lambda obj: obj["event"] == "synced")

        # a follower reads a while, then its connection goes
        async with http.stream("GET", "/v1/watch") as first_stream:
            feed = first_stream.headers[FEED_HEADER]
            first = Follower(first_stream.aiter_lines())
            start = (await first.until(lambda obj: obj["event"] == "synced"))["seq"]
            a = await run(pods.run_pod, "ws-r-a", labels=labels("r-a", "ws", "o"))
            last = (await first.until(is_change("running", "r-a")))["seq"]
        assert [obj["seq"] for obj in first.seen] == list(range(start, last + 1))

        # while it is away: a pod comes, another goes
        await run(pods.run_pod, "ws-r-b", labels=labels("r-b", "ws", "o"))
        await run(pods.remove_pod, a)

        async with http.stream(
            "GET", "/v1/watch", params={"since": str(last), "feed": feed}
        ) as resumed_stream:
            resumed = Follower(resumed_stream.aiter_lines())
            await resumed.until(lambda _: both_seen(resumed.seen))
        await reference.until(lambda _: both_seen(reference.seen))

    got = resumed.seen
    # exactly the changes after `last`, in order, each once: the numbers run on without a gap
    assert [obj["seq"] for obj in got] == list(range(last + 1, got[-1]["seq"] + 1))
    kinds = [(obj["event"], obj.get("instance_id")) for obj in got]
    assert kinds.count(("running", "r-b")) == 1 and kinds.count(("removed", "r-a")) == 1
    assert ("running", "r-a") not in kinds  # read before the disconnect: not again
    # and they are the lines a follower that never left was sent
    same_span = [obj for obj in reference.seen if last < obj["seq"] <= got[-1]["seq"]]
    assert got == same_span


async def test_what_is_no_longer_held_or_of_another_feed_is_a_resync(
    pods: Pods, serve: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    serving: Serving = await serve(feed_history=2)
    async with http.stream("GET", "/v1/watch") as response:
        follower = Follower(response.aiter_lines())
        await run(pods.run_pod, "ws-r-c", labels=mk2_labels("r-c", "ws", "o"))
        await follower.until(is_change("running", "r-c"))
    feed = serving.fanout.feed
    head = feed.head
    assert feed.oldest > 1  # the first changes are no longer held
    for params, reason in (
        ({"since": "0"}, "the changes after seq 0 are no longer held"),
        ({"since": "1", "feed": "another"}, "the server restarted (a new feed)"),
        ({"since": str(head + 5)}, f"seq {head + 5} is ahead of this feed"),
    ):
        async with http.stream("GET", "/v1/watch", params=params) as response:
            follower = Follower(response.aiter_lines())
            marker = await follower.until(lambda obj: True)
        assert marker["event"] == "resync_required"
        assert (marker["seq"], marker["reason"]) == (head, reason)

    # with initial: the state comes with it, to rebuild from
    async with http.stream("GET", "/v1/watch", params={"since": "0", "initial": "1"}) as response:
        follower = Follower(response.aiter_lines())
        await follower.until(lambda obj: obj["event"] == "synced")
    events = [(obj["event"], obj.get("instance_id")) for obj in follower.seen]
    assert events == [("resync_required", None), ("running", "r-c"), ("synced", None)]

    # the Python client: a distinct object, then the stream goes on
    async with (
        connect(serving.socket) as service,
        service.changes(since=0, feed=feed.epoch) as changes,
    ):
        with trio.fail_after(DEADLINE):
            item = await changes.__anext__()
    assert isinstance(item, ResyncRequired)
    assert (item.seq, item.since) == (head, 0)


async def test_the_python_client_resumes_by_itself_when_its_connection_is_cut(
    pods: Pods, serve: Callable[..., Any]
) -> None:
    serving: Serving = await serve()
    seqs: list[int] = []
    items: list[object] = []

    async def read_until(changes: Changes, done: Callable[[object], bool]) -> None:
        with trio.fail_after(DEADLINE):
            async for item in changes:
                assert changes.seq is not None
                seqs.append(changes.seq)
                items.append(item)
                if done(item):
                    return

    def running(iid: str) -> Callable[[object], bool]:
        return lambda item: (
            isinstance(item, WorkspaceChange)
            and item.kind is ChangeKind.RUNNING
            and item.workspace.instance_id == iid
        )

    async with connect(serving.socket) as service, service.changes() as changes:
        await read_until(changes, lambda item: isinstance(item, Synced))
        await run(pods.run_pod, "ws-r-d", labels=mk2_labels("r-d", "ws", "o"))
        await read_until(changes, running("r-d"))
        # every connection of the service dropped, as by a network blip
        assert cut_connections(serving.listeners.all()) >= 1
        await run(pods.run_pod, "ws-r-e", labels=mk2_labels("r-e", "ws", "o"))
        await read_until(changes, running("r-e"))
    assert not any(isinstance(item, ResyncRequired) for item in items)
    # one number after the other: nothing missed, nothing twice
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert sum(running("r-d")(item) for item in items) == 1
