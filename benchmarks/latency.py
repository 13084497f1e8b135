"""1. Event latency against the floor: containerd's own client (`ctr events`), one at a time
and in bursts, with the targets of issue 12.

    python -m benchmarks.latency [--one 50] [--bursts 50,200] [--runs 3] [--settle 20]

A private containerd (the rig). Observers run side by side for the whole benchmark, each in
its own process, all stamping on one clock (monotonic):

* ctr1, ctr2: two ``ctr -a SOCK events``, each line stamped on arrival by a stamper process.
  ctr1 is the reference (`/tasks/create`, `/containers/delete` of the pod's workspace
  container); ctr2 shows how much delivery alone varies between two subscribers;
* library: an in-process watcher (`open_watcher`), `running` / `removed` stamped as
  `changes()` yields them;
* CLI: ``ws-watcher watch``, each stdout line stamped on arrival by a stamper process;
* polling: CRI ListContainers every second (the kubelet's PLEG relist).

The pods are made by yet another process (the ``drive`` role of `benchmarks.common`), over CRI
the way the kubelet makes them: ONE pods one after the other, then for each size in BURSTS,
RUNS times: that many pods at once (a thread each), wait until every observer saw them
running (at most SETTLE seconds), remove them all at once, wait until every observer saw them
removed (SETTLE again), wait until containerd has no pod and no shim left. An observer that
misses a change is reported as missing, never waited for longer.

Per load and observer: `running` - ctr1's `/tasks/create` and `removed` - ctr1's
`/containers/delete` (ms), pooled over the runs (median, p99, max) and the spread across runs
(min-max of the per-run medians and p99s); how often each observer reported each workspace
`running` / `removed` (exactly once is right) and its `disconnected` lines; the CPU time
(utime + stime of the process itself, children excluded) per pod lifecycle of every observer
process and of containerd. Then the targets of issue 12, each met or missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Lines,
    Stats,
    child_argv,
    children_of,
    cpu_seconds,
    event_is,
    now,
    print_table,
    rounded,
    stamped,
    watch_argv,
)

ONE = 50  # pods one at a time
BURSTS = (50, 200)  # pods at once
RUNS = 3  # runs of each burst
SETTLE = 20.0  # seconds after the driver is done for every observer to report every change
QUIET = 2.0  # seconds of rest after a run's last pod is gone (containerd's gc, shims exiting)
DRIVER_TIMEOUT = 600.0  # for one make/rm command of the driver
ONE_AT_A_TIME = "one at a time"

KINDS = ("running", "removed")
REFERENCE = "ctr1"
COMPARED = ("ctr2", "library", "cli", "polling")
OBSERVERS = (REFERENCE, *COMPARED)
WATCHERS = ("library", "cli")
LABEL = {
    "ctr1": "ctr events #1",
    "ctr2": "ctr events #2",
    "library": "library",
    "cli": "CLI watch",
    "polling": "poller (1 s)",
    "containerd": "containerd",
}
TOPIC = {"running": "/tasks/create", "removed": "/containers/delete"}

Key = tuple[str, str]  # (kind: "running" | "removed", container id)


@dataclass(frozen=True)
class Config:
    one: int = ONE
    bursts: tuple[int, ...] = BURSTS
    runs: int = RUNS
    settle: float = SETTLE


def add_arguments(
    parser: argparse.ArgumentParser,
    *,
    one: int = ONE,
    bursts: tuple[int, ...] = BURSTS,
    runs: int = RUNS,
    settle: float = SETTLE,
) -> None:
    """The loads' options (`--one`, `--bursts`, `--runs`, `--settle`), with these defaults
    (`benchmarks.nri` has its own)."""
    parser.add_argument("--one", type=int, default=one, help="pods one at a time (0: none)")
    parser.add_argument(
        "--bursts",
        type=lambda s: tuple(int(n) for n in s.split(",") if n),
        default=bursts,
        help="sizes of the bursts, comma-separated (pods at once)",
    )
    parser.add_argument("--runs", type=int, default=runs, help="runs of each burst")
    parser.add_argument("--settle", type=float, default=settle, help="seconds to wait")


def config_from(args: argparse.Namespace) -> Config:
    if args.runs < 1 or args.one < 0 or any(n < 1 for n in args.bursts):
        raise SystemExit("--runs must be >= 1, --one >= 0, burst sizes >= 1")
    return Config(one=args.one, bursts=tuple(args.bursts), runs=args.runs, settle=args.settle)


# --- observers ----------------------------------------------------------------------------


Parse = Callable[[str], tuple[str, str] | None]


def _parse_ctr(line: str) -> tuple[str, str] | None:
    """``DATE TIME +0000 UTC NAMESPACE TOPIC JSON``."""
    fields = line.split(" ", 6)
    if len(fields) < 7:
        return None
    if fields[5] == "/tasks/create":
        return "running", json.loads(fields[6])["container_id"]
    if fields[5] == "/containers/delete":
        return "removed", json.loads(fields[6])["id"]
    return None


def _parse_watch(line: str) -> tuple[str, str] | None:
    for kind in KINDS:
        if event_is(kind)(line):
            return kind, json.loads(line)["container_id"]
    if event_is("disconnected")(line):
        return "disconnected", ""
    return None


def _parse_words(line: str) -> tuple[str, str] | None:
    """Probe and poller lines: ``KIND CONTAINER_ID``, ``disconnected``, ``lagged``."""
    kind, _, rest = line.partition(" ")
    if kind in KINDS:
        return kind, rest
    if kind in ("disconnected", "lagged"):
        return kind, ""
    return None


class Observer:
    """One observer process's lines, parsed as they come: per (kind, container id) the times it
    reported it; its other notices (disconnected, lagged) with their times."""

    def __init__(self, lines: Lines, parse: Parse, kinds: Collection[str] = KINDS) -> None:
        self.lines = lines
        self.parse = parse
        self.kinds = kinds  # what is timed per container; the rest are notices
        self.seen: dict[Key, list[float]] = {}
        self.notices: list[tuple[float, str, str]] = []  # (time, kind, the rest of the line)
        self._next = 0

    def update(self) -> None:
        end = len(self.lines.lines)
        for t, text in self.lines.lines[self._next : end]:
            got = self.parse(text)
            if got is None:
                continue
            kind, cid = got
            if kind in self.kinds:
                self.seen.setdefault((kind, cid), []).append(t)
            else:
                self.notices.append((t, kind, cid))
        self._next = end

    def first(self, key: Key) -> float | None:
        times = self.seen.get(key)
        return times[0] if times else None

    def count(self, key: Key) -> int:
        return len(self.seen.get(key, ()))

    def close(self) -> None:
        """Stop its process; what it printed until then is taken in."""
        self.lines.close()
        self.update()

    def notices_in(self, kind: str, windows: Iterable[tuple[float, float]]) -> int:
        return sum(
            1 for t, k, _ in self.notices if k == kind and any(a <= t <= b for a, b in windows)
        )


# --- driving ------------------------------------------------------------------------------


@dataclass
class Run:
    load: str
    pods: int
    index: int
    requests: dict[Key, float] = field(default_factory=dict)  # when the CRI request was sent
    failures: list[str] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds in the run, by process
    settled: dict[str, bool] = field(default_factory=dict)  # every observer saw every change
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase

    def keys(self, kind: str) -> list[Key]:
        return [k for k in self.requests if k[0] == kind]


def _ask(driver: Lines, command: str, run: Run) -> set[Key]:
    """Send a driver command; record its requests and failures; the keys it made."""
    start = len(driver.lines)
    driver.send(command)
    end = driver.wait_for(lambda s: s.startswith("ok"), DRIVER_TIMEOUT, start)
    keys: set[Key] = set()
    for _, line in driver.lines[start:end]:
        word, _, rest = line.partition(" ")
        if word == "req":
            kind, cid, at = rest.split()
            run.requests[kind, cid] = float(at)
            keys.add((kind, cid))
        elif word == "fail":
            run.failures.append(rest)
    return keys


def _settle(observers: dict[str, Observer], keys: set[Key], seconds: float) -> bool:
    """Wait until every observer reported every key, at most `seconds`; whether they did."""
    deadline = now() + seconds
    while True:
        for o in observers.values():
            o.update()
        if all(keys <= o.seen.keys() for o in observers.values()):
            return True
        if now() > deadline:
            return False
        time.sleep(0.05)


def _quiesce(address: str, timeout: float = 60.0) -> None:
    """Until containerd holds no pod and no shim of ours runs (a failed pod's leftovers are
    removed here); then QUIET seconds of rest."""
    from watcher.testing import CRIClient, CRIError
    from watcher.testing.host import shims_of

    deadline = now() + timeout
    with CRIClient(address) as cri:
        for sandbox in cri.list_pod_sandbox():
            try:
                cri.stop_pod_sandbox(sandbox.id)
                cri.remove_pod_sandbox(sandbox.id)
            except CRIError:
                pass
    while shims_of(address) and now() < deadline:
        time.sleep(0.2)
    time.sleep(QUIET)


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def _one_run(
    driver: Lines,
    observers: dict[str, Observer],
    pids: dict[str, int],
    address: str,
    config: Config,
    load: str,
    pods: int,
    index: int,
) -> Run:
    run = Run(load, pods, index)
    mode = "seq" if load == ONE_AT_A_TIME else "par"
    batch = f"{'seq' if mode == 'seq' else f'b{pods}'}-r{index}"
    before, start = _cpu(pids), now()
    made = _ask(driver, f"make {batch} {pods} {mode}", run)
    run.phases["make"] = now() - start
    run.settled["running"] = _settle(observers, made, config.settle)
    run.phases["settle running"] = now() - start - sum(run.phases.values())
    gone = _ask(driver, f"rm {batch} {mode}", run)
    run.phases["remove"] = now() - start - sum(run.phases.values())
    run.settled["removed"] = _settle(observers, gone, config.settle)
    run.phases["settle removed"] = now() - start - sum(run.phases.values())
    after = _cpu(pids)
    run.cpu = {name: after[name] - before[name] for name in pids}
    _quiesce(address)
    run.window = (start, now())  # for the disconnected lines: clean-up included
    run.phases["clean-up"] = now() - start - sum(run.phases.values())
    print(
        f"  {load}, run {index}: {len(made)} made, {len(gone)} removed"
        + (f", {len(run.failures)} CRI failures" if run.failures else "")
        + ("" if all(run.settled.values()) else ", not every observer saw every change")
        + f"; {sum(run.phases.values()):.1f} s ("
        + ", ".join(f"{k} {v:.1f}" for k, v in run.phases.items())
        + ")",
        flush=True,
    )
    return run


def _only_child(pid: int, timeout: float = 30.0) -> int:
    """The one process the stamper `pid` started."""
    deadline = now() + timeout
    while not (found := children_of(pid)):
        if now() > deadline:
            raise RuntimeError(f"process {pid} has no child after {timeout}s")
        time.sleep(0.05)
    return found[0]


def run(config: Config | None = None) -> dict[str, Any]:
    from watcher.testing import PrivateContainerd
    from watcher.testing.versions import tool

    config = config or Config()
    loads = ([(ONE_AT_A_TIME, config.one, 1)] if config.one else []) + [
        (f"{n} at once", n, config.runs) for n in config.bursts
    ]
    runs: list[Run] = []
    with PrivateContainerd() as ctrd:
        address = ctrd.address
        ctr = [tool("ctr", ctrd.binaries), "-a", address, "events"]  # containerd's own ctr
        with (
            Lines(stamped(ctr), prestamped=True) as ctr1,
            Lines(stamped(ctr), prestamped=True) as ctr2,
            Lines(child_argv("probe", address), prestamped=True) as probe,
            Lines(stamped(watch_argv(address)), prestamped=True) as watch,
            Lines(child_argv("poll", address), prestamped=True) as poll,
            Lines(child_argv("drive", str(ctrd.base), address), stdin=True) as driver,
        ):
            probe.wait_for(lambda s: s.startswith("synced"), 60)
            watch.wait_for(event_is("synced"), 60)
            poll.wait_for(lambda s: s == "ready", 60)
            pids = {
                "ctr1": _only_child(ctr1.pid),
                "ctr2": _only_child(ctr2.pid),
                "library": probe.pid,
                "cli": _only_child(watch.pid),
                "polling": poll.pid,
            }
            if ctrd.pid is not None:
                pids["containerd"] = ctrd.pid
            observers = {
                "ctr1": Observer(ctr1, _parse_ctr),
                "ctr2": Observer(ctr2, _parse_ctr),
                "library": Observer(probe, _parse_words),
                "cli": Observer(watch, _parse_watch),
                "polling": Observer(poll, _parse_words),
            }
            time.sleep(1.0)  # `ctr events` prints nothing once subscribed: give it time
            print(f"\n== 1. latency: runs (settle deadline {config.settle:g} s)", flush=True)
            for load, pods, repeat in loads:
                for index in range(1, repeat + 1):
                    one = _one_run(driver, observers, pids, address, config, load, pods, index)
                    runs.append(one)
            driver.send("quit")
            time.sleep(0.5)  # a late duplicate still counts
            for o in observers.values():
                o.update()
    return _report(config, runs, observers)


# --- figures ------------------------------------------------------------------------------


def _spread(values: Sequence[float]) -> list[float]:
    real = [v for v in values if v == v]  # not NaN
    return [min(real), max(real)] if real else [float("nan"), float("nan")]


@dataclass(frozen=True)
class Latency:
    """An observer's first report - ctr1's, in ms, over the runs of one load."""

    pooled: Stats
    runs: list[Stats]
    missing: int  # ctr1 saw it, the observer did not
    no_ctr1_reference: int  # ctr1 did not see it

    @property
    def median_spread(self) -> list[float]:
        return _spread([s.median for s in self.runs])

    @property
    def p99_spread(self) -> list[float]:
        return _spread([s.p99 for s in self.runs])

    def figures(self) -> dict[str, Any]:
        p = self.pooled
        return {
            "n": p.n, "median": p.median, "p95": p.p95, "p99": p.p99, "max": p.max,
            "median_spread": self.median_spread, "p99_spread": self.p99_spread,
            "missing": self.missing, "no_ctr1_reference": self.no_ctr1_reference,
        }  # fmt: skip


def _latency(runs: list[Run], observers: dict[str, Observer], kind: str, name: str) -> Latency:
    ref, obs = observers[REFERENCE], observers[name]
    per_run: list[list[float]] = []
    missing = unreferenced = 0
    for r in runs:
        diffs = []
        for key in r.keys(kind):
            t0, t = ref.first(key), obs.first(key)
            if t0 is None:
                unreferenced += 1
            elif t is None:
                missing += 1
            else:
                diffs.append((t - t0) * 1000)
        per_run.append(diffs)
    pooled = Stats.of([d for diffs in per_run for d in diffs])
    return Latency(pooled, [Stats.of(d) for d in per_run], missing, unreferenced)


def _counts(runs: list[Run], observers: dict[str, Observer]) -> dict[str, Any]:
    """Per observer and kind: workspaces reported exactly once, never, more than once."""
    out: dict[str, Any] = {}
    for name, obs in observers.items():
        out[name] = {}
        for kind in KINDS:
            counts = [obs.count(key) for r in runs for key in r.keys(kind)]
            out[name][kind] = {
                "workspaces": len(counts),
                "once": counts.count(1),
                "missing": counts.count(0),
                "more": sum(1 for c in counts if c > 1),
            }
        windows = [r.window for r in runs]
        out[name]["disconnected"] = obs.notices_in("disconnected", windows)
        out[name]["lagged"] = obs.notices_in("lagged", windows)
    return out


def _cpu_per_pod(runs: list[Run]) -> dict[str, Any]:
    pods = sum(r.pods for r in runs)
    seconds: dict[str, float] = {}
    for r in runs:
        for name, s in r.cpu.items():
            seconds[name] = seconds.get(name, 0.0) + s
    per_pod = {name: s * 1000 / pods for name, s in seconds.items()} if pods else {}
    ctr = statistics.mean([per_pod.get("ctr1", float("nan")), per_pod.get("ctr2", float("nan"))])
    return {
        "pods": pods,
        "seconds": seconds,
        "ms_per_pod": per_pod,
        "ctr_ms_per_pod": ctr,
        "over_ctr": {n: per_pod[n] / ctr for n in WATCHERS if n in per_pod and ctr > 0},
    }


def _load_figures(runs: list[Run], observers: dict[str, Observer]) -> dict[str, Any]:
    ref = observers[REFERENCE]
    containerd = {
        kind: Stats.of(
            [
                (t0 - at) * 1000
                for r in runs
                for key, at in r.requests.items()
                if key[0] == kind and (t0 := ref.first(key)) is not None
            ]
        )
        for kind in KINDS
    }
    return {
        "runs": len(runs),
        "pods_per_run": runs[0].pods,
        "cri_failures": sum(len(r.failures) for r in runs),
        "failures_sample": [f for r in runs for f in r.failures][:5],
        "latency_ms": {k: {n: _latency(runs, observers, k, n) for n in COMPARED} for k in KINDS},
        "ctr1_minus_request_ms": containerd,
        "counts": _counts(runs, observers),
        "cpu": _cpu_per_pod(runs),
        "seconds": sum(sum(r.phases.values()) for r in runs),
        "phases_s": [r.phases for r in runs],
    }


def _fmt(v: float, digits: int = 1) -> str:
    return "-" if v != v else f"{v:.{digits}f}"


def _print_load(load: str, fig: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = []
    for kind in KINDS:
        for name in COMPARED:
            lat: Latency = fig["latency_ms"][kind][name]
            s = lat.pooled
            med, p99 = lat.median_spread, lat.p99_spread
            value = f"{_fmt(s.median):>7} / {_fmt(s.p99):>7} / {_fmt(s.max):>7} (n={s.n})"
            if fig["runs"] > 1:
                value += (
                    f"   runs: median {_fmt(med[0])}..{_fmt(med[1])}, "
                    f"p99 {_fmt(p99[0])}..{_fmt(p99[1])}"
                )
            if lat.missing:
                value += f"   MISSING {lat.missing}"
            if lat.no_ctr1_reference:
                value += f"   (no ctr1 line for {lat.no_ctr1_reference})"
            rows.append((f"{kind} - ctr1 {TOPIC[kind]}: {LABEL[name]}", value))
    cd = fig["ctr1_minus_request_ms"]
    rows.append(
        (
            "ctr1 - CRI request (containerd itself)",
            f"running {_fmt(cd['running'].median)} / {_fmt(cd['running'].p99)}, "
            f"removed {_fmt(cd['removed'].median)} / {_fmt(cd['removed'].p99)}",
        )
    )
    if fig["cri_failures"]:
        rows.append(("CRI failures", f"{fig['cri_failures']}: {fig['failures_sample'][:2]}"))
    print_table(
        f"1. latency, {load}, {fig['runs']} run(s) of {fig['pods_per_run']} pods: "
        "ms, pooled median / p99 / max, spread of the per-run median and p99",
        rows,
    )
    rows = []
    for name in OBSERVERS:
        c = fig["counts"][name]
        cells = []
        for kind in KINDS:
            k = c[kind]
            cells.append(
                f"{kind} {k['once']}/{k['workspaces']} once"
                + (
                    f" ({k['missing']} missing, {k['more']} more than once)"
                    if k["once"] < k["workspaces"]
                    else ""
                )
            )
        if name in WATCHERS:
            cells.append(
                f"disconnected {c['disconnected']}"
                + (f", lagged {c['lagged']}" if c["lagged"] else "")
            )
        rows.append((LABEL[name], "; ".join(cells)))
    print_table(f"1. exactly once, {load}", rows)


def _print_cpu(burst: dict[str, Any], one: dict[str, Any] | None) -> None:
    rows = []
    for name, ms in burst["ms_per_pod"].items():
        value = f"{ms:6.2f} ms/pod in bursts"
        if name in burst["over_ctr"]:
            value += f" ({burst['over_ctr'][name]:.1f}x ctr)"
        if one and name in one["ms_per_pod"]:
            value += f";  one at a time {one['ms_per_pod'][name]:.2f} ms/pod"
        rows.append((LABEL[name], value))
    print_table(
        f"1. CPU per pod lifecycle (utime+stime, children excluded), bursts: {burst['pods']} pods; "
        f"ctr = mean of the two ctr events, {_fmt(burst['ctr_ms_per_pod'], 2)} ms/pod",
        rows,
    )


@dataclass(frozen=True)
class Target:
    target: str
    observer: str
    figure: str
    met: bool


def _lat(fig: dict[str, Any], kind: str, name: str) -> tuple[Stats, int]:
    lat: Latency = fig["latency_ms"][kind][name]
    return lat.pooled, lat.missing


def _median_p99(
    fig: dict[str, Any], name: str, title: str, p99_ok: Callable[[Stats, Stats], bool]
) -> Target:
    """A target on the median (≤ 2 ms) and the p99 (`p99_ok(watcher, ctr2)`), per kind."""
    cells, met = [], True
    for kind in KINDS:
        s, missing = _lat(fig, kind, name)
        ctr2, _ = _lat(fig, kind, "ctr2")
        met &= s.median <= 2 and p99_ok(s, ctr2) and not missing
        cells.append(
            f"{kind} {_fmt(s.median)} / {_fmt(s.p99)} (ctr2 p99 {_fmt(ctr2.p99)})"
            + (f" {missing} missing" if missing else "")
        )
    return Target(title, name, ", ".join(cells) + " ms", met)


def _targets(
    figures: dict[str, dict[str, Any]], config: Config, cpu: dict[str, Any]
) -> list[Target]:
    out: list[Target] = []
    one = figures.get(ONE_AT_A_TIME)
    if one:
        title = "one at a time: median ≤ 2 ms, p99 ≤ 20 ms"
        out += [_median_p99(one, name, title, lambda s, _: s.p99 <= 20) for name in WATCHERS]
    if config.bursts:
        small, large = min(config.bursts), max(config.bursts)
        fig = figures[f"{small} at once"]
        title = f"{small} at once: median ≤ 2 ms; p99 within 10 ms of ctr2's p99"
        out += [
            _median_p99(fig, name, title, lambda s, ctr2: s.p99 <= ctr2.p99 + 10)
            for name in WATCHERS
        ]
        fig = figures[f"{large} at once"]
        for name in WATCHERS:
            cells, met = [], True
            for kind in KINDS:
                s, _ = _lat(fig, kind, name)
                ctr2, _ = _lat(fig, kind, "ctr2")
                c = fig["counts"][name][kind]
                met &= s.p99 <= ctr2.p99 + 20 and c["once"] == c["workspaces"]
                cells.append(
                    f"{kind} p99 {_fmt(s.p99)} (ctr2 {_fmt(ctr2.p99)}), "
                    f"once {c['once']}/{c['workspaces']}"
                )
            disconnected = fig["counts"][name]["disconnected"]
            met &= disconnected == 0
            out.append(
                Target(
                    f"{large} at once: p99 within 20 ms of ctr2's p99, exactly-once, "
                    "no disconnected",
                    name,
                    "; ".join(cells) + f"; disconnected {disconnected}",
                    met,
                )
            )
        ratio = cpu["over_ctr"].get("cli", float("nan"))
        missed = sum(  # a watcher that did not report everything did not do all the work
            figures[f"{n} at once"]["counts"]["cli"][kind]["missing"]
            for n in set(config.bursts)
            for kind in KINDS
        )
        out.append(
            Target(
                "CPU per pod lifecycle ≤ 2x ctr events'",
                "cli",
                f"{_fmt(cpu['ms_per_pod'].get('cli', float('nan')), 2)} vs "
                f"{_fmt(cpu['ctr_ms_per_pod'], 2)} ms/pod = {_fmt(ratio)}x"
                + (f" (but {missed} changes missing)" if missed else ""),
                ratio <= 2 and not missed,
            )
        )
    return out


def _report(config: Config, runs: list[Run], observers: dict[str, Observer]) -> dict[str, Any]:
    by_load: dict[str, list[Run]] = {}
    for r in runs:
        by_load.setdefault(r.load, []).append(r)
    figures = {load: _load_figures(rs, observers) for load, rs in by_load.items()}
    for load, fig in figures.items():
        _print_load(load, fig)
    bursts = [r for r in runs if r.load != ONE_AT_A_TIME]
    cpu = _cpu_per_pod(bursts)
    one = figures.get(ONE_AT_A_TIME)
    if bursts:
        _print_cpu(cpu, one["cpu"] if one else None)
    targets = _targets(figures, config, cpu)
    print_table(
        "1. targets (issue 12; watcher - ctr1, pooled median / p99)",
        [
            (f"{t.target} [{LABEL[t.observer]}]", f"{'met   ' if t.met else 'MISSED'}  {t.figure}")
            for t in targets
        ],
    )
    return {
        "config": asdict(config),
        "loads": {
            load: {
                **fig,
                "latency_ms": {
                    kind: {name: lat.figures() for name, lat in by_name.items()}
                    for kind, by_name in fig["latency_ms"].items()
                },
            }
            for load, fig in figures.items()
        },
        "cpu_bursts": cpu,
        "disconnected_total": {
            n: observers[n].notices_in("disconnected", [(0, float("inf"))]) for n in WATCHERS
        },
        "targets": [asdict(t) for t in targets],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    started = now()
    result = run(config_from(args))
    print(f"\nlatency: {now() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rounded(result), indent=2) + "\n")


if __name__ == "__main__":
    main()
