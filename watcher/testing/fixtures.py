"""pytest fixtures over the rig: import them into a ``conftest.py``::

    from watcher.testing.fixtures import containerd, fake, pods, sockdir  # noqa: F401

``containerd`` is session-scoped (one containerd start + image import per run, ~0.3 s) and is
cleaned up at session end whatever happened. ``pods`` is per test and removes the pods the
test made. A test may ``kill9()`` containerd: ``pods`` starts it again, before and after the
test, so one test's crash scenario cannot break the next test or the teardown.

``native_containerd`` / ``native_pods`` are the same over a second private containerd whose
CRI snapshotter is ``native``: a node without an overlay upper layer (the task's rootfs is a
bind mount). It is started only in sessions that ask for it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from . import versions
from .containerd import PrivateContainerd, reclaim_stale
from .fake import FakeContainerd
from .pods import Pods


@pytest.fixture(scope="session")
def containerd() -> Iterator[PrivateContainerd]:
    """A started private containerd with the test images imported.

    Rigs left behind by earlier sessions that were killed outright are reclaimed first.
    """
    reclaim_stale()
    with PrivateContainerd() as ctrd:
        yield ctrd


@pytest.fixture(scope="session")
def native_containerd() -> Iterator[PrivateContainerd]:
    """Like ``containerd``, but CRI's snapshotter (and the images') is ``native``."""
    reclaim_stale()
    with PrivateContainerd(snapshotter="native") as ctrd:
        yield ctrd


@contextmanager
def nri_rig(series: str | None, **options: Any) -> Iterator[PrivateContainerd]:
    """A started private containerd with NRI on: Debian's package of `series` (fetched and
    cached, e.g. "1.7"), or the rig's own (None). `options` as `PrivateContainerd`'s."""
    reclaim_stale()
    binaries = versions.fetch(series) if series is not None else versions.bin_dir()
    with PrivateContainerd(binaries=binaries, nri=True, **options) as ctrd:
        yield ctrd


@contextmanager
def pods_on(ctrd: PrivateContainerd) -> Iterator[Pods]:
    """Kubelet-style pods on `ctrd`, removed afterwards; `ctrd` (re)started if a test
    killed it."""
    # a test may have kill9()ed containerd: start it before the test, and again before the
    # teardown, whose CRI calls need it
    if not ctrd.running:
        ctrd.start()
    made = Pods(ctrd)
    try:
        yield made
    finally:
        try:
            if not ctrd.running:
                ctrd.start()
            made.remove_all()
        finally:
            made.close()


@pytest.fixture
def pods(containerd: PrivateContainerd) -> Iterator[Pods]:
    """Kubelet-style pods on ``containerd``; whatever the test left is removed afterwards."""
    with pods_on(containerd) as made:
        yield made


@pytest.fixture
def native_pods(native_containerd: PrivateContainerd) -> Iterator[Pods]:
    """Kubelet-style pods on ``native_containerd``; removed after the test as by ``pods``."""
    with pods_on(native_containerd) as made:
        yield made


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short directory: pytest's tmp_path can exceed the ~107 bytes a socket path allows."""
    path = tempfile.mkdtemp(prefix="fk", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake(sockdir: str) -> Iterator[FakeContainerd]:
    """A fake containerd (real gRPC on a unix socket), stopped after the test."""
    with FakeContainerd(sockdir) as f:
        yield f
