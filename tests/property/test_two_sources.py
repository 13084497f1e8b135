"""One index, two sources: NRI's announcements and containerd's events in any interleaving.

The watcher reads NRI's calls and containerd's event stream on two sockets, so whatever order
containerd made them in, they reach the index in any interleaving of the two. Whatever it is:

* each workspace container's changes are `created`, `starting`, `running`, `exited`,
  `removed` in that order, each at most once, `created` exactly once;
* the final state is the one containerd's events alone give (containerd's record wins);
* a container NRI told and then withdrew (its creation failed) is `created` then `removed`,
  and nothing containerd says of it afterwards brings it back.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from record_builders import container_record, sandbox_record

from watcher.containerd_records import ContainerId, ContainerRecord, CriContainerMeta
from watcher.index import Index
from watcher.inputs import (
    AnnouncementWithdrawn,
    ContainerAnnounced,
    ContainerDeleted,
    ContainerSeen,
    Event,
    Relisted,
    StartAnnounced,
    TaskCreated,
    TaskDeleted,
    TaskExited,
    TaskStarted,
)
from watcher.needs import NeedRelist
from watcher.published import ChangeKind, WorkspaceChange
from watcher.testing.labels import mk2_labels

ORDER = [ChangeKind.CREATED, ChangeKind.STARTING, ChangeKind.RUNNING, ChangeKind.EXITED,
         ChangeKind.REMOVED]  # fmt: skip


def announced(rec: ContainerRecord) -> ContainerRecord:
    """What NRI can tell of a container: its labels, cgroup path and mounts, its CRI name and
    sandbox; not what only containerd keeps (image, created_at, snapshot, log path)."""
    cri = rec.cri_container
    return replace(
        rec,
        image="",
        snapshotter="",
        snapshot_key="",
        created_at=None,
        cri_container=None
        if cri is None
        else CriContainerMeta(
            name=cri.name, sandbox_id=cri.sandbox_id, annotations=cri.annotations
        ),
    )


def pod_sources(n: int, removed: bool, withdrawn: bool) -> tuple[list[Event], list[Event]]:
    """Pod `n`'s events from containerd and from NRI, each in the order its source sends."""
    sid, cid, uid = f"sb-{n}", ContainerId(f"c-{n}"), f"uid-{n}"
    sandbox = sandbox_record(sid, uid=uid, pod=f"p-{n}", labels=mk2_labels(f"i-{n}", "w", "o"),
                             created_at=100.0 + n)  # fmt: skip
    container = container_record(cid, sid=sid, uid=uid, pod=f"p-{n}", created_at=101.0 + n)
    nri: list[Event] = [
        ContainerAnnounced(ts=1.0, container=replace(sandbox, created_at=None)),
        ContainerAnnounced(ts=1.0, container=announced(container)),
    ]
    if withdrawn:  # its creation failed after NRI's CreateContainer: containerd says nothing
        nri.append(AnnouncementWithdrawn(ts=2.0, container_id=cid))
        return [ContainerSeen(ts=1.0, container=sandbox)], nri
    nri.append(StartAnnounced(ts=2.0, container_id=cid))
    stream: list[Event] = [
        ContainerSeen(ts=1.0, container=sandbox),
        ContainerSeen(ts=1.0, container=container),
        TaskCreated(
            ts=2.0,
            container_id=cid,
            pid=100 + n,
            upperdir=f"/u/{n}",
            rootfs=f"/r/{n}",
            located=True,
        ),
        TaskStarted(ts=3.0, container_id=cid, pid=100 + n, started_at=3.0),
    ]
    if removed:
        stream += [
            TaskExited(ts=4.0, container_id=cid, exec_id=cid, pid=100 + n, exit_status=0),
            TaskDeleted(ts=4.0, container_id=cid, exec_id="", pid=100 + n, exit_status=0),
            ContainerDeleted(ts=5.0, container_id=cid),
        ]
        nri.append(AnnouncementWithdrawn(ts=4.0, container_id=cid))  # NRI's RemoveContainer
    return stream, nri


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[list[Event], list[list[Event]]]:
    """Every pod's two sources, merged in a drawn order that keeps each source's own order;
    also the containerd-only sequences, for the oracle."""
    sources: list[list[Event]] = []
    streams: list[list[Event]] = []
    for n in range(draw(st.integers(1, 3))):
        withdrawn = draw(st.booleans())
        stream, nri = pod_sources(n, removed=draw(st.booleans()), withdrawn=withdrawn)
        sources += [stream, nri]
        streams.append(stream)
    merged: list[Event] = []
    positions = [0] * len(sources)
    while any(p < len(s) for p, s in zip(positions, sources, strict=True)):
        ready = [i for i, s in enumerate(sources) if positions[i] < len(s)]
        i = draw(st.sampled_from(ready))
        merged.append(sources[i][positions[i]])
        positions[i] += 1
    return merged, streams


def kinds(changes: list[WorkspaceChange]) -> dict[str, list[ChangeKind]]:
    out: dict[str, list[ChangeKind]] = {}
    for c in changes:
        out.setdefault(c.workspace.container_id, []).append(c.kind)
    return out


@settings(max_examples=400, deadline=None)
@given(interleavings())
def test_two_sources_publish_each_step_once_and_end_as_containerd_alone(
    case: tuple[list[Event], list[list[Event]]],
) -> None:
    merged, streams = case
    both = Index()
    changes = [c for event in merged for c in both.apply(event)]
    alone = Index()
    for stream in streams:
        for event in stream:
            alone.apply(event)

    for cid, seen in kinds(changes).items():
        assert seen[0] is ChangeKind.CREATED, (cid, seen)
        assert seen == sorted(set(seen), key=ORDER.index), (cid, seen)  # in order, once each
    assert both.containers() == alone.containers()
    assert both.workspaces() == alone.workspaces()

    # a listing of what containerd holds changes nothing more
    held = [e.container for s in streams for e in s if isinstance(e, ContainerSeen)]
    deleted = {e.container_id for s in streams for e in s if isinstance(e, ContainerDeleted)}
    listing = Relisted(ts=9.0, containers=tuple(r for r in held if r.id not in deleted), tasks=())
    both.apply(listing)
    alone.apply(listing)
    assert both.containers() == alone.containers()


def test_a_container_nri_told_is_kept_by_a_listing_for_the_start_grace_only() -> None:
    """NRI tells a container before containerd creates it: a listing taken meanwhile does
    not show it, which means "not yet" for `start_grace` seconds, then "never"."""
    stream, nri = pod_sources(0, removed=False, withdrawn=False)
    sandbox = stream[0]
    assert isinstance(sandbox, ContainerSeen)
    index = Index(start_grace=10)
    index.apply(sandbox)
    announce = nri[1]
    assert isinstance(announce, ContainerAnnounced)
    changes = index.apply(replace(announce, mono=50.0))
    assert [c.kind for c in changes] == [ChangeKind.CREATED]
    index.take_needs()
    soon = Relisted(ts=2.0, containers=(sandbox.container,), tasks=(), mono=55.0)
    assert index.apply(soon) == []  # not created by containerd yet: kept
    assert index.expired_announcements == frozenset()
    # and only a listing after the grace can tell: the index asks for one then
    assert NeedRelist(at=60.0) in index.take_needs()
    late = Relisted(ts=3.0, containers=(sandbox.container,), tasks=(), mono=61.0)
    assert [c.kind for c in index.apply(late)] == [ChangeKind.REMOVED]
    # the shell must not log that removal as a missed event corrected: none was missed
    assert index.expired_announcements == {announce.container.id}
    assert index.containers() == {}
    assert not [n for n in index.take_needs() if isinstance(n, NeedRelist)]


def test_containerd_record_wins_over_nri_told_after_it() -> None:
    stream, nri = pod_sources(0, removed=False, withdrawn=False)
    index = Index()
    for event in stream:
        index.apply(event)
    before = index.containers()
    for event in nri[:2]:
        assert index.apply(event) == []
    assert index.containers() == before
    assert [c.kind for c in index.apply(nri[2])] == []  # running already: no `starting`
