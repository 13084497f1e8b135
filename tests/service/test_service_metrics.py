"""The service's own metrics on `/metrics`, against a real containerd: its followers of
`/v1/watch` and the `resync_required` lines they were sent, its long polls in flight and
their latency by outcome, its requests by route and status — on the API's socket and on the
probes-only listener alike, beside the watcher's own.

The service runs in the test's process (`serve`): its counters of waits and followers are
awaited as values, never slept for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from watcher.service.server import Serving

DEADLINE = 20.0
WAIT_ROUTE = "/v1/workspaces/{id}/wait"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient, url: str = "/metrics") -> Samples:
    """Every sample of a scrape, by name and labels, as a scraper parses them."""
    response = await client.get(url)
    assert response.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample (0 when the scrape does not have it: a route and status not seen yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def first_line(serving: Serving, http: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    """The first line of a `/v1/watch` stream; the stream is then closed, and its end awaited
    on the service's side."""
    line: dict[str, Any] | None = None
    with trio.fail_after(DEADLINE):
        async with http.stream("GET", "/v1/watch", params=params) as response:
            async for text in response.aiter_lines():
                line = json.loads(text)
                break
        await serving.api.followers.wait_value(0)
    assert line is not None, "the stream ended without a line"
    return line


async def test_followers_resyncs_waits_and_requests_are_counted(
    serve: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    serving: Serving = await serve(metrics_listen=("127.0.0.1", 0))
    api = serving.api

    # a follower, counted while its stream is served
    async with http.stream("GET", "/v1/watch") as response:
        with trio.fail_after(DEADLINE):
            async for text in response.aiter_lines():
                if json.loads(text)["event"] == "synced":
                    break
        assert value(await scrape(http), "ws_watcher_api_followers") == 1
    with trio.fail_after(DEADLINE):
        await api.followers.wait_value(0)

    # followers that cannot resume: another feed's numbers, a number ahead of this feed
    for params in ({"since": "1", "feed": "another"}, {"since": "999"}):
        assert (await first_line(serving, http, **params))["event"] == "resync_required"

    # long polls: one answered at once (nothing to wait for), one that times out, one whose
    # client leaves while it is in flight
    assert (await http.get("/v1/workspaces/m-none/wait", params={"for": "gone"})).is_success
    timed_out = await http.get("/v1/workspaces/m-never/wait", params={"timeout": "100ms"})
    assert timed_out.status_code == 504
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(http.get, "/v1/workspaces/m-left/wait")
            await api.waits.wait_value(1)
            assert value(await scrape(http), "ws_watcher_api_waits_in_flight") == 1
            nursery.cancel_scope.cancel()  # the client goes
        # the service cancels the wait and times it before the count drops; the request,
        # never answered, is counted as its handler returns, with no checkpoint in between
        await api.waits.wait_value(0)

    # mistakes are requests too, by their route's pattern (never the path a client sent)
    assert (await http.post("/v1/workspaces")).status_code == 405
    assert (await http.get("/v1/nothing/at/all")).status_code == 404

    samples = await scrape(http)
    assert value(samples, "ws_watcher_api_followers") == 0
    assert value(samples, "ws_watcher_api_waits_in_flight") == 0
    resyncs = {
        dict(labels)["cause"]: n
        for (name, labels), n in samples.items()
        if name == "ws_watcher_api_resyncs_total"
    }
    assert resyncs == {"behind": 0, "expired": 0, "gap": 0, "restarted": 1, "ahead": 1}

    def waits(wait: str, outcome: str) -> float:
        return value(samples, "ws_watcher_api_wait_seconds_count", wait=wait, outcome=outcome)

    assert waits("gone", "done") == 1
    assert waits("running", "timeout") == 1
    assert waits("running", "cancelled") == 1
    assert waits("running", "done") == 0
    took = value(samples, "ws_watcher_api_wait_seconds_sum", wait="running", outcome="timeout")
    assert took >= 0.1

    def requests(route: str, status: str) -> float:
        return value(samples, "ws_watcher_api_requests_total", route=route, status=status)

    assert requests("/v1/watch", "200") == 3  # the follower, and the two told to re-list
    assert requests(WAIT_ROUTE, "200") == 1
    assert requests(WAIT_ROUTE, "504") == 1
    assert requests(WAIT_ROUTE, "none") == 1  # its client left before an answer
    assert requests("/v1/workspaces", "405") == 1
    assert requests("other", "404") == 1
    # the scrapes before this one: each is counted as its answer starts, after its body
    assert requests("/metrics", "200") == 2
    # beside the watcher's own metrics, in one registry
    assert value(samples, "ws_watcher_ready") == 1

    # the probes-only listener serves the same counts (and counts its own requests)
    async with httpx.AsyncClient(timeout=DEADLINE) as client:
        probes = await scrape(client, f"http://{serving.metrics_listen}/metrics")
    assert value(probes, "ws_watcher_api_requests_total", route=WAIT_ROUTE, status="504") == 1
    assert value(probes, "ws_watcher_api_requests_total", route="/metrics", status="200") == 3
