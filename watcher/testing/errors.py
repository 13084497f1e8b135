"""Errors of the test rig.

The rig is test infrastructure, not part of the watcher's API, so its errors stand apart from
``watcher.errors``: a ``RigError`` means "the rig could not set up or tear down the scene",
never "the watcher misbehaved".
"""

from __future__ import annotations


class RigError(RuntimeError):
    """The rig could not do what was asked (not root, containerd did not start, ...)."""


class CRIError(RigError):
    """A CRI call failed; ``code`` is the gRPC status code name (e.g. ``NOT_FOUND``)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code
