"""Integration tests run against a real, private containerd started by the suite (needs root).

Every test here is marked ``containerd``; none is skipped when the rig cannot run: a missing
root or containerd is an error, so CI cannot silently pass without testing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.containerd)
