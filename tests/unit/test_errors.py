"""The error hierarchy: one base, two sides (h11's local and remote protocol errors)."""

from __future__ import annotations

import pytest

from watcher import cgroups, errors
from watcher.disclosure import DisclosureError
from watcher.pathmap import PathMapError


@pytest.mark.parametrize(
    ("error", "side"),
    [
        (errors.UsageError, errors.UsageError),
        (errors.ReadOnlyViolation, errors.UsageError),
        (errors.UnknownId, errors.UsageError),
        (PathMapError, errors.UsageError),
        (DisclosureError, errors.UsageError),
        (errors.ConnectError, errors.RemoteError),
        (errors.ContainerdError, errors.RemoteError),
        (errors.Gone, errors.RemoteError),
        (cgroups.CgroupPathError, errors.RemoteError),
    ],
)
def test_every_error_has_one_side(error: type[Exception], side: type[Exception]) -> None:
    assert issubclass(error, errors.WatcherError) and issubclass(error, side)
    other = errors.RemoteError if side is errors.UsageError else errors.UsageError
    assert not issubclass(error, other)


def test_not_found_is_one_case_for_callers_and_two_sides_for_the_curious() -> None:
    for error in (errors.UnknownId, errors.Gone):
        assert issubclass(error, errors.NotFound) and issubclass(error, LookupError)


def test_remote_errors_carry_the_status_as_an_enum() -> None:
    err = errors.ContainerdError("x failed", code=errors.Code.INTERNAL)
    assert err.code is errors.Code.INTERNAL and errors.Code["NOT_FOUND"].value == 5
