"""The soak of `benchmarks.soak_fake` on CPython 3.11, 3.12 and 3.13 (issue 13), short.

Per interpreter: 1 000 create/delete cycles with label values never seen before, fed to a
`ws-watcher watch` whose stdout nobody reads and to a library watcher whose follower never
reads. Both keep relisting (they still talk to containerd), end at once with 0 on SIGTERM,
and their memory stays bounded. The long run and its figures: `python -m benchmarks.soak_fake`.
"""

from __future__ import annotations

import pytest

from benchmarks.soak_fake import VERSIONS, soak

CYCLES = 1000
#: bytes of RSS a cycle may add after the warm-up. Bounded caches (tombstones, shared
#: strings, the stuck followers' buffers) still fill at this length; a leak of what each
#: cycle decodes (the interned label values of CPython 3.12+: several KiB) does not fit.
BOUND = 4096


@pytest.mark.parametrize("version", VERSIONS)
def test_soak_on_each_cpython(version: str) -> None:
    result = soak(version, CYCLES)
    figures = result.figures()
    print(figures)  # shown with -s / on failure
    for name in ("watch", "library"):
        watched = getattr(result, name)
        assert watched.exit_status == 0, figures
        assert watched.relists_while_stuck >= 3, figures
        assert figures[f"{name}_bytes_per_cycle"] < BOUND, figures
