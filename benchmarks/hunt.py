"""Long runs of the CI's randomized tests: a hunt for what a short run does not meet.

    python -m benchmarks.hunt faults [--seeds 300] [--steps 300]   # random fault injection
    python -m benchmarks.hunt fuzz [--examples 20000]              # the hostile-input fuzzer

Each runs the test module of CI (`tests/fake/test_random_faults.py`,
`tests/property/test_hostile_input.py`) with larger numbers, through pytest, and prints one
line of figures: what ran, how much, how many failed, how long it took. A failing fault
scenario names its seed (replay: `WS_WATCHER_FAULT_SEED=N python -m pytest <module>`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULES = {
    "faults": REPO / "tests" / "fake" / "test_random_faults.py",
    "fuzz": REPO / "tests" / "property" / "test_hostile_input.py",
}


class _Count:
    def __init__(self) -> None:
        self.passed = self.failed = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.passed += report.passed
            self.failed += report.failed


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hunt")
    parser.add_argument("what", choices=sorted(MODULES))
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--examples", type=int, default=20_000)
    args = parser.parse_args()
    if args.what == "faults":
        os.environ["WS_WATCHER_FAULT_SEEDS"] = str(args.seeds)
        os.environ["WS_WATCHER_FAULT_STEPS"] = str(args.steps)
        size = f"{args.seeds} scenarios x {args.steps} steps"
    else:
        os.environ["WS_WATCHER_FUZZ_EXAMPLES"] = str(args.examples)
        size = f"{args.examples} examples per fuzzer"
    count = _Count()
    started = time.monotonic()
    pytest.main(["-q", "-p", "no:cacheprovider", str(MODULES[args.what])], plugins=[count])
    seconds = time.monotonic() - started
    print(f"{args.what}: {size}: {count.passed} passed, {count.failed} failed in {seconds:.0f} s")
    return 1 if count.failed else 0


if __name__ == "__main__":
    sys.exit(main())
