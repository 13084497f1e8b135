"""Run the four benchmarks: ``python benchmarks/run.py`` (from the repository root or not).

Prints each benchmark's table as it ends, then the JSON summary, which it also writes to
benchmarks/results.json. A benchmark that fails is reported as such and the others still run.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODULES = ("latency", "coldstart", "throughput", "memory")


def main() -> int:
    from benchmarks.common import RESULTS, quiet, rounded, save_results

    quiet()
    results: dict[str, Any] = {}
    started = time.monotonic()
    for name in MODULES:
        t = time.monotonic()
        try:
            results[name] = importlib.import_module(f"benchmarks.{name}").run()
        except Exception as exc:  # one benchmark's failure must not hide the others' figures
            traceback.print_exc()
            results[name] = {"error": repr(exc)}
        results.setdefault("seconds", {})[name] = time.monotonic() - t
    results["seconds"]["total"] = time.monotonic() - started
    save_results(results)
    print("\n" + json.dumps(rounded(results), indent=2))
    print(f"\nwritten to {RESULTS}")
    return 1 if any("error" in v for v in results.values() if isinstance(v, dict)) else 0


if __name__ == "__main__":
    sys.exit(main())
