"""One small helper for the two nurseries ws-watcher opens for its callers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise a lone exception out of trio's (strict) exception group, unwrapped.

    Our nurseries run one background task beside the caller's block; a failure of either
    is one error the caller should be able to `except ConnectError` without knowing that a
    nursery was involved. Groups of several stay groups.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
