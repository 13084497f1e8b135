"""Run the four benchmarks: ``python benchmarks/run.py`` (from the repository root or not).

    python benchmarks/run.py [--only latency,memory] [--one 50] [--bursts 50,200] [--runs 3]

Prints each benchmark's table as it ends, then the JSON summary, which it also writes to
benchmarks/results.json. A benchmark that fails is reported as such and the others still run.
``--one``, ``--bursts``, ``--runs``, ``--settle`` go to the latency benchmark (see
`benchmarks.latency`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODULES = ("latency", "coldstart", "throughput", "memory")


def main(argv: list[str] | None = None) -> int:
    from benchmarks import latency
    from benchmarks.common import RESULTS, quiet, rounded, save_results

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        type=lambda s: tuple(n for n in s.split(",") if n),
        default=MODULES,
        help=f"benchmarks to run, comma-separated (default: {','.join(MODULES)})",
    )
    latency.add_arguments(parser)
    args = parser.parse_args(argv)
    if unknown := set(args.only) - set(MODULES):
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")

    quiet()
    results: dict[str, Any] = {}
    started = time.monotonic()
    for name in (m for m in MODULES if m in args.only):
        t = time.monotonic()
        try:
            if name == "latency":
                results[name] = latency.run(latency.config_from(args))
            else:
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
