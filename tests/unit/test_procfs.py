"""Process start times from /proc text."""

from __future__ import annotations

import os
import time

from hypothesis import given
from hypothesis import strategies as st

from watcher import procfs

STAT = "1234 (sleep) S 1 1234 1234 0 -1 4194560 97 0 0 0 0 0 0 0 20 0 1 0 {ticks} 2342912 160"


def test_start_ticks_is_field_22() -> None:
    assert procfs.start_ticks(STAT.format(ticks=98765)) == 98765


@given(st.text(alphabet=st.characters(blacklist_characters="\n\x00"), max_size=16))
def test_any_command_name_is_skipped(name: str) -> None:
    text = STAT.format(ticks=42).replace("(sleep)", f"({name})")
    assert procfs.start_ticks(text) == 42


def test_garbage_is_none() -> None:
    assert procfs.start_ticks("") is None
    assert procfs.start_ticks("1 (x) S 1 2") is None
    assert procfs.boot_time("cpu 1 2 3\n") is None
    assert procfs.boot_time("cpu 1\nbtime 1700000000\n") == 1700000000


def test_this_process_started_before_now() -> None:
    started = procfs.started_at(os.getpid())
    assert started is not None and started <= time.time() + 1
    assert procfs.started_at(2**22 + 12345) is None  # beyond pid_max: no such process
