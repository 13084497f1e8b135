"""3. Throughput: events/s through the pure `Index.apply`, and through the whole pipeline.

* index: the decoded events of PODS kubelet-style pods (all created, then all removed: 12
  events a pod), applied to a fresh `Index`; best of REPEAT.
* end to end: a FakeContainerd child holds SYNTH running workspaces; the watcher (here, in
  process) syncs; the child then deletes every workspace container with its events queued on
  stalled streams (exit, task delete, container delete, snapshot remove: 4 a container) and
  releases them at T0. Time: T0 → the watcher's last `removed` change (all events applied).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from benchmarks.common import fake_server, now, print_table

PODS = 2_000
REPEAT = 5
SYNTH = 10_000
SUBSCRIBED = 1.0


def index_events(pods: int = PODS) -> list[Any]:
    """The index's input for `pods` pods' whole lives, as the shell would feed it."""
    from dataclasses import replace

    from watcher import decode
    from watcher.inputs import ContainerChanged, ContainerSeen
    from watcher.testing.fake import FakeContainerd
    from watcher.testing.labels import mk2_labels

    with tempfile.TemporaryDirectory(prefix="wsb-") as tmp:
        fake = FakeContainerd(tmp, start=False)
        made = [
            fake.add_pod(f"p{i}", labels=mk2_labels(f"i{i}", f"w{i}", "o")) for i in range(pods)
        ]
        records = {cid: decode.container(fake.container(cid)) for cid in fake.container_ids()}
        for pod in made:
            fake.remove_pod(pod)
        events: list[Any] = []
        for i, pb in enumerate(fake.published()):
            event = decode.envelope(pb, ts=float(i)).event
            if isinstance(event, ContainerChanged):
                event = ContainerSeen(ts=event.ts, container=records[event.container_id])
            elif event is not None:
                event = replace(event, ts=float(i))
            if event is not None:
                events.append(event)
        return events


def index_rate(events: list[Any]) -> float:
    from watcher.index import Index

    index = Index()
    apply = index.apply
    start = now()
    for event in events:
        apply(event)
    return len(events) / (now() - start)


def pipeline_rate(synth: int = SYNTH) -> dict[str, float]:
    import trio

    from watcher import open_watcher
    from watcher.published import ChangeKind, WorkspaceChange

    with fake_server() as (fake, address):
        fake.ask(f"synth {synth}")

        async def main() -> dict[str, float]:
            async with open_watcher(address) as w:
                with w.changes() as changes:
                    async with trio.open_nursery() as nursery:
                        reply: list[str] = []

                        async def teardown() -> None:
                            reply.extend(
                                await trio.to_thread.run_sync(fake.ask, f"teardown {synth}")
                            )

                        nursery.start_soon(teardown)
                        removed = 0
                        async for change in changes:
                            if (
                                isinstance(change, WorkspaceChange)
                                and change.kind is ChangeKind.REMOVED
                            ):
                                removed += 1
                                if removed == synth:
                                    break
                        end = now()
                    t0, events = float(reply[0]), int(reply[1])
                    return {"events": events, "seconds": end - t0, "rate": events / (end - t0)}

        return trio.run(main)


def source_rate(synth: int = SYNTH) -> float:
    """The floor: the same burst drained by a bare grpc iterator in a thread, no watcher."""
    import threading

    import grpc

    from containerd_protos.services.events.v1 import events_pb2, events_pb2_grpc

    with fake_server() as (fake, address), grpc.insecure_channel(f"unix://{address}") as ch:
        fake.ask(f"synth {synth}")
        call = events_pb2_grpc.EventsStub(ch).Subscribe(  # type: ignore[no-untyped-call]
            events_pb2.SubscribeRequest(), metadata=(("containerd-namespace", "k8s.io"),)
        )
        ended: list[float] = []

        def drain(expected: int = 4 * synth) -> None:
            for i, _ in enumerate(call, 1):
                if i == expected:
                    ended.append(now())
                    return

        reader = threading.Thread(target=drain)
        reader.start()
        time.sleep(SUBSCRIBED)  # the fake keeps no history: be subscribed before the burst
        t0, events = fake.ask(f"teardown {synth}")
        reader.join(120)
        call.cancel()
        return int(events) / (ended[0] - float(t0))


def run() -> dict[str, Any]:
    events = index_events()
    rates = [index_rate(events) for _ in range(REPEAT)]
    e2e = pipeline_rate()
    e2e["source_rate"] = source_rate()
    e2e["ratio_to_source"] = e2e["rate"] / e2e["source_rate"]
    result = {
        "index": {"events": len(events), "rate_best": max(rates), "rate_median": sorted(rates)[2]},
        "pipeline": e2e,
        "targets": {"index_rate": 100_000, "pipeline_rate": 20_000},
    }
    print_table(
        "3. throughput (events/s)",
        [
            ("Index.apply", f"{max(rates):,.0f} best, {sorted(rates)[2]:,.0f} median "
             f"({len(events):,} events of {PODS:,} pods)  target >= 100,000"),
            ("whole pipeline", f"{e2e['rate']:,.0f} ({e2e['events']:,} events in "
             f"{e2e['seconds']:.2f} s)  target >= 20,000"),
            ("the fake's stream alone", f"{e2e['source_rate']:,.0f} (bare grpc iterator); "
             f"pipeline/source = {e2e['ratio_to_source']:.2f}"),
        ],
    )  # fmt: skip
    return result


if __name__ == "__main__":
    run()
