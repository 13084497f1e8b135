"""Fixtures shared by every test directory.

The rig's `containerd` fixture is session-scoped: declared once here, so one private
containerd serves tests/integration and tests/cli alike (imported in each directory's
conftest, it would start one per directory). `sockdir` and `fake` (a fake containerd, no
root) serve tests/fake and tests/unit.
"""

from __future__ import annotations

from watcher.testing.fixtures import (
    containerd,
    fake,
    native_containerd,
    native_pods,
    pods,
    sockdir,
)

__all__ = ["containerd", "fake", "native_containerd", "native_pods", "pods", "sockdir"]
