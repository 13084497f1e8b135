"""Small helpers for the nurseries ws-watcher opens for its callers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


def errors_of(group: BaseExceptionGroup) -> list[BaseException]:
    """The exceptions of ``group`` (nested groups flattened), ``trio.Cancelled`` left out.

    Leaving a cancellation out loses nothing: trio cancels level-triggered, so the task gets
    ``Cancelled`` again at its next checkpoint, after handling the error.
    """
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found += errors_of(exc)
        elif not isinstance(exc, trio.Cancelled):
            found.append(exc)
    return found


@contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise a lone exception out of trio's (strict) exception group, unwrapped.

    Our nurseries run one background task beside the caller's block; a failure of either
    is one error the caller should be able to `except ConnectError` without knowing that a
    nursery was involved. So is an error whose siblings are only cancellations: a call that
    fails just as an outer scope is cancelled (containerd killed: the event stream breaks,
    the session is cancelled, and a listing in flight fails too) comes out as that error,
    not as a group the caller's `except` misses. Groups of several errors stay groups.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        errors = errors_of(group)
        if len(errors) == 1:
            raise errors[0] from None
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
