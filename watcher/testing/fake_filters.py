"""The old home of the fake containerd's filter language, now `watcher.testing.fake.filters`:
kept so that imports from here go on working."""

from __future__ import annotations

from .fake.filters import *  # noqa: F403
from .fake.filters import __all__ as __all__
