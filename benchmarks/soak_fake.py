"""Soak against the fake containerd, on each CPython: memory per cycle, stuck followers.

    python -m benchmarks.soak_fake [--cycles 10000] [--python 3.11,3.12,3.13]

For each interpreter (a venv per version under `VENVS`, made and filled with this package on
first use), two watchers run in processes of that interpreter, each against a fake
containerd of its own that the driver (this process) feeds with create/delete cycles of
workspace pods, every pod with label values never seen before:

* `ws-watcher watch --relist-interval 1` whose stdout nobody reads (its pipe fills up);
* a library watcher with a `changes()` follower that never reads (`follower` role below).

Figures per interpreter: each watcher's RSS after the warm-up and at the end, the growth per
cycle between the two, the relists each made after its follower got stuck (it must keep
talking to containerd), and how long each took to exit on SIGTERM. On CPython 3.12+,
`sys.intern`ed label values were immortal: ~2.3 KB a cycle here before the fix.

`tests/fake/test_soak_fake.py` runs it with fewer cycles in CI, on all three.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENVS = Path(os.environ.get("WS_WATCHER_VENVS", Path.home() / ".cache" / "ws-watcher" / "venvs"))
VERSIONS = ("3.11", "3.12", "3.13")
WARMUP = 200  # cycles before the first RSS figure: buffers and caches fill up first
BATCH = 10
STOP_DEADLINE = 10.0


@dataclass
class Watched:
    rss_warm_kib: int = 0
    rss_end_kib: int = 0
    relists_while_stuck: int = 0
    sigterm_seconds: float = 0.0
    exit_status: int | None = None


@dataclass
class SoakResult:
    python: str
    cycles: int
    seconds: float = 0.0
    watch: Watched = field(default_factory=Watched)
    library: Watched = field(default_factory=Watched)

    def figures(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self)
        measured = max(1, self.cycles - WARMUP)
        for name in ("watch", "library"):
            w: Watched = getattr(self, name)
            out[f"{name}_bytes_per_cycle"] = (w.rss_end_kib - w.rss_warm_kib) * 1024 / measured
        return out


def interpreter(version: str) -> str:
    """A python of `version` running this checkout's code (a venv made on first use).

    The package is installed editable, so the venv runs the code as it is now; it is
    installed again whenever `pyproject.toml` changed (a new dependency), which a stamp in
    the venv tells.
    """
    if sys.version.startswith(version + "."):
        return sys.executable
    venv = VENVS / version
    python = venv / "bin" / "python"
    if not python.exists():
        base = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
        found = sorted(base.glob(f"{version}.*/bin/python"))
        if not found:
            raise SystemExit(f"no CPython {version} under {base} (pyenv install {version})")
        print(f"soak: making a venv of CPython {version} at {venv} ...", file=sys.stderr)
        subprocess.run([str(found[-1]), "-m", "venv", str(venv)], check=True)
    stamp = venv / "ws-watcher.stamp"
    wanted = f"{REPO}\n{hashlib.sha256((REPO / 'pyproject.toml').read_bytes()).hexdigest()}"
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"soak: installing this checkout into {venv} ...", file=sys.stderr)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", str(REPO)], check=True,
        )  # fmt: skip
        stamp.write_text(wanted)
    return str(python)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _tasks_lists(fake: object) -> int:
    from watcher.testing.fake import Rpc

    return sum(c.method == Rpc.TASKS_LIST for c in fake.calls())  # type: ignore[attr-defined]


def _until(condition: object, what: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not condition():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline}s: {what}")
        time.sleep(0.05)


def unique_labels(n: int) -> dict[str, str]:
    """A workspace pod's labels, every value never seen before (what leaked when interned)."""
    from watcher.testing.labels import mk2_labels

    return mk2_labels(f"inst-{n}-{os.urandom(6).hex()}", os.urandom(8).hex(), os.urandom(8).hex())


def soak(version: str, cycles: int) -> SoakResult:
    """Run the soak on CPython `version`; the figures (raises on a broken invariant)."""
    from watcher.testing.fake import FakeContainerd

    python = interpreter(version)
    result = SoakResult(python=version, cycles=cycles)
    with tempfile.TemporaryDirectory(prefix="soak", dir="/tmp") as tmp:
        for name in ("w", "l"):
            (Path(tmp) / name).mkdir()
        fakes = {
            "watch": FakeContainerd(Path(tmp) / "w"),
            "library": FakeContainerd(Path(tmp) / "l"),
        }
        for fake in fakes.values():
            fake.__enter__()
        logs = {name: open(Path(tmp) / f"{name}.log", "wb") for name in fakes}  # noqa: SIM115
        procs = {
            "watch": subprocess.Popen(
                [python, "-m", "watcher", "watch", "--address", fakes["watch"].address,
                 "--relist-interval", "1"],
                stdout=subprocess.PIPE, stderr=logs["watch"], stdin=subprocess.DEVNULL,
            ),  # its stdout is never read
            "library": subprocess.Popen(
                [python, "-m", "benchmarks.soak_fake", "--follower", fakes["library"].address],
                stdout=subprocess.DEVNULL, stderr=logs["library"], stdin=subprocess.DEVNULL,
                cwd=REPO,
            ),
        }  # fmt: skip
        try:
            for fake in fakes.values():
                _until(lambda f=fake: _tasks_lists(f) >= 1, "the watchers' first sync")
            started = time.monotonic()
            for done in range(0, cycles, BATCH):
                for fake in fakes.values():
                    made = [
                        fake.add_pod(f"ws-{done + i}", labels=unique_labels(done + i))
                        for i in range(BATCH)
                    ]
                    for pod in made:
                        fake.remove_pod(pod)
                if done + BATCH == WARMUP:
                    for name, proc in procs.items():
                        getattr(result, name).rss_warm_kib = rss_kib(proc.pid)
            result.seconds = time.monotonic() - started
            for name, proc in procs.items():
                watched: Watched = getattr(result, name)
                watched.rss_end_kib = rss_kib(proc.pid)
                before = _tasks_lists(fakes[name])
                _until(lambda f=fakes[name], b=before: _tasks_lists(f) >= b + 3,  # type: ignore[misc]
                       f"{name}: relists with a stuck follower")  # fmt: skip
                watched.relists_while_stuck = _tasks_lists(fakes[name]) - before
            for name, proc in procs.items():
                watched = getattr(result, name)
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                watched.exit_status = proc.wait(STOP_DEADLINE)
                watched.sigterm_seconds = time.monotonic() - sent
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for log in logs.values():
                log.close()
            for fake in fakes.values():
                fake.__exit__(None, None, None)
    return result


def follower(address: str) -> None:
    """The library role: a watcher whose one follower never reads; ends on SIGTERM."""
    import trio

    from watcher.watcher import Settings, open_watcher

    async def main() -> None:
        settings = Settings(address=address, relist_interval=1.0)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with open_watcher(settings=settings) as w, trio.open_nursery() as nursery:
                with w.changes():  # subscribed, never read: its buffer fills, then it lags
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        break

    trio.run(main)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak_fake")
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--python", default=",".join(VERSIONS))
    parser.add_argument("--follower", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.follower:
        follower(args.follower)
        return 0
    results = []
    for version in args.python.split(","):
        result = soak(version, args.cycles)
        results.append(result.figures())
        print(json.dumps(result.figures(), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
