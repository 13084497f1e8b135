"""`single_errors`: what comes out of the nurseries ws-watcher opens for its callers."""

from __future__ import annotations

import pytest
import trio

from watcher._nursery import errors_of, single_errors


async def test_a_lone_error_comes_out_unwrapped() -> None:
    with pytest.raises(ValueError, match="boom"), single_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise ValueError("boom")


async def test_an_error_beside_a_cancellation_comes_out_alone() -> None:
    # a call that fails just as an outer scope is cancelled (containerd killed: the stream
    # breaks, the session is cancelled, a listing in flight fails): the nursery's group holds
    # the error and the sibling's Cancelled, which belongs to the outer scope
    caught: list[BaseException] = []
    with trio.CancelScope() as outer:
        try:
            with single_errors():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep_forever)
                    await trio.testing.wait_all_tasks_blocked()
                    outer.cancel()
                    raise ValueError("failed as the scope was cancelled")
        except ValueError as exc:  # what the caller's `except` names
            caught.append(exc)
        await trio.lowlevel.checkpoint()  # cancellation is level-triggered: it comes again
        pytest.fail("not cancelled after the error was handled")
    assert outer.cancelled_caught
    assert [str(e) for e in caught] == ["failed as the scope was cancelled"]


async def test_several_errors_stay_a_group() -> None:
    async def fail(exc: Exception) -> None:
        raise exc

    with pytest.raises(ExceptionGroup) as info, single_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail, ValueError("a"))
            nursery.start_soon(fail, KeyError("b"))
    assert sorted(type(e).__name__ for e in errors_of(info.value)) == ["KeyError", "ValueError"]


def test_errors_of_flattens_nested_groups() -> None:
    group = ExceptionGroup("outer", [ValueError("a"), ExceptionGroup("inner", [KeyError("b")])])
    assert [type(e) for e in errors_of(group)] == [ValueError, KeyError]
