"""NRI mode (issue 16's targets) on real containerd 1.7 and 2.1 with NRI on, side by side.

    python -m benchmarks.nri [--one 20] [--bursts 50,200] [--runs 3] [--pairs 3]
                             [--versions 1.7,2.1] [--settle 30] [--json FILE]

Both containerds (Debian's, `python -m watcher.testing.versions fetch 1.7|2.1`, NRI turned on
in their configs) run at once, each with its own observers; every load's runs alternate
between them (1.7, 2.1, 1.7, ...), so the load the machine is under falls on both alike.
Observers, each its own process, all stamping on one clock (monotonic), as in
`benchmarks.latency`:

* ctr1, ctr2: two ``ctr events`` of that containerd's own version. ctr1 is the reference
  (`/containers/create`, `/tasks/start` of the pod's workspace container); ctr2 shows how much
  delivery alone varies between two subscribers;
* library: an in-process watcher with its NRI source on (`benchmarks.common`'s ``probe``
  role), stamped as `changes()` yields; at the end it reports the Containers.Get calls it
  made (from its metrics);
* CLI: ``ws-watcher watch --nri-socket ...``, each line stamped on arrival.

The pods are made and removed by another process (the ``drive`` role), over CRI as the
kubelet makes them: ONE pods one after the other, then RUNS runs of each size in BURSTS, all
at once. Figures, per containerd and load, pooled over the runs with the spread of the per-run
medians and p99s (ms):

* the watcher's first line about a workspace (``created``, told by NRI) - ctr1's
  `/containers/create` of its container: target negative (the watcher knows first);
* ``running`` - ctr1's `/tasks/start`: target median ≤ 1 ms, p99 ≤ 10 ms at 50 at once
  (``running`` comes from the stream's `/tasks/create`, which containerd publishes before it
  starts the task: so also ``running`` - `/tasks/create`);
* ``starting`` - `/tasks/start`, and how many workspaces had a ``starting`` (NRI's
  StartContainer reached the watcher before the stream's `/tasks/create`);
* each step exactly once; Containers.Get calls per pod (none is on the way to ``created``:
  NRI's record makes it, `tests/integration/test_watcher_nri.py` proves it with the stream held
  back; the Gets come beside, for what only containerd keeps).

Then pod start time (RunPodSandbox sent → ctr1's `/tasks/start` of the workspace container)
with the watchers' plugin registered vs. none registered (the watchers then on the stream
alone), PAIRS pairs of 50 pods at once, with and without alternating. Last, what containerd
does when a plugin does not answer: a plugin behind a tap that withholds CreateContainer
(`tests/nri_wiretap.py`), one pod at a time: how long the pod's start takes (containerd's
request timeout, 2 s by default), then with the plugin's connection closed mid-call instead
(as when the plugin is killed), and the baseline.

Root. Prints figures; never fails on timing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    Lines,
    Stats,
    child_argv,
    event_is,
    now,
    print_table,
    rounded,
    stamped,
    watch_argv,
)
from benchmarks.latency import DRIVER_TIMEOUT, Observer, _quiesce, _spread, add_arguments

VERSIONS = ("1.7", "2.1")
ONE = 20  # pods one at a time
BURSTS = (50, 200)  # pods at once
RUNS = 3  # runs of each burst, per containerd
PAIRS = 3  # with/without plugin pairs of START_BURST pods at once
START_BURST = 50
SETTLE = 30.0  # seconds after the driver is done for every observer to report every change
SILENT_REPEAT = 3  # pods started against a plugin that does not answer (each way)
ONE_AT_A_TIME = "one at a time"

#: what the watchers say of a workspace, in lifecycle order
STEPS = ("created", "starting", "running", "exited", "removed")
#: ctr events' topics used, as observer kinds
TOPICS = ("/containers/create", "/tasks/create", "/tasks/start", "/containers/delete")
#: what the observers time per container; their other lines are notices
OBSERVED = (*STEPS, *TOPICS)
WATCHERS = ("library", "cli")
LABEL = {"ctr2": "ctr events #2", "library": "library (NRI)", "cli": "CLI watch (NRI)"}

Key = tuple[str, str]  # (kind, container id)


@dataclass(frozen=True)
class Config:
    one: int = ONE
    bursts: tuple[int, ...] = BURSTS
    runs: int = RUNS
    pairs: int = PAIRS
    versions: tuple[str, ...] = VERSIONS
    settle: float = SETTLE
    silent: bool = True


# --- observers ---------------------------------------------------------------------------


def parse_ctr(line: str) -> Key | None:
    """``DATE TIME +0000 UTC NAMESPACE TOPIC JSON``: the topics used, by container id."""
    fields = line.split(" ", 6)
    if len(fields) < 7 or fields[5] not in TOPICS:
        return None
    payload = json.loads(fields[6])
    return fields[5], payload.get("container_id") or payload.get("id", "")


def parse_watch(line: str) -> Key | None:
    for kind in STEPS:
        if event_is(kind)(line):
            return kind, json.loads(line)["container_id"]
    if event_is("disconnected")(line):
        return "disconnected", ""
    return None


def parse_probe(line: str) -> Key | None:
    kind, _, rest = line.partition(" ")
    if kind in STEPS:
        return kind, rest
    if kind in ("disconnected", "lagged", "nri-registered", "stats"):
        return kind, rest
    return None


# --- one containerd and what watches it ------------------------------------------------------


@dataclass
class Run:
    version: str
    load: str
    pods: int
    index: int
    plugin: bool  # the watchers' NRI plugin registered
    requests: dict[str, float] = field(default_factory=dict)  # cid -> RunPodSandbox sent
    failures: list[str] = field(default_factory=list)
    settled: bool = True
    seconds: float = 0.0


class Rig:
    """A private containerd of one version with NRI on, its ctr observers, its pod driver and
    its two watchers (with their NRI source, or on the stream alone: `watchers(nri=...)`)."""

    def __init__(self, version: str, stack: ExitStack) -> None:
        from watcher.testing import PrivateContainerd
        from watcher.testing.versions import fetch, tool

        self.version = version
        self.ctrd = stack.enter_context(PrivateContainerd(binaries=fetch(version), nri=True))
        self.full_version = str(self.ctrd.version)
        address = self.address = self.ctrd.address
        ctr = [tool("ctr", self.ctrd.binaries), "-a", address, "events"]
        self.ctr1, self.ctr2 = (
            Observer(stack.enter_context(Lines(stamped(ctr), prestamped=True)), parse_ctr, OBSERVED)
            for _ in range(2)
        )
        self.driver = stack.enter_context(
            Lines(child_argv("drive", str(self.ctrd.base), address), stdin=True)
        )
        self.watching: dict[str, Observer] = {}
        self.nri = False
        self.stats: list[str] = []  # the library probes' stats lines, as they ended
        self.pods_made = {True: 0, False: 0}  # pods made while the plugin was (not) there
        stack.callback(self._stop_watchers)

    def observers(self) -> dict[str, Observer]:
        return {"ctr1": self.ctr1, "ctr2": self.ctr2, **self.watching}

    def start_watchers(self, *, nri: bool) -> None:
        """Start the library probe and the CLI (with the NRI source on `nri`), once synced
        (and registered with NRI): the previous ones are stopped first."""
        self._stop_watchers()
        socket = str(self.ctrd.nri_socket)
        probe_args = [self.address, socket] if nri else [self.address]
        cli = [*watch_argv(self.address), *(["--nri-socket", socket] if nri else ["--no-nri"])]
        log = self.ctrd.base / f"watch-{len(self.stats)}-{now():.0f}.log"
        # the CLI says it registered on stderr only (INFO): to a file, read below
        cli = ["sh", "-c", f'exec "$0" "$@" 2>>{log}', *cli, "--log-level", "info"]
        probe = Lines(child_argv("probe", *probe_args), prestamped=True)
        watch = Lines(stamped(cli), prestamped=True)
        probe.wait_for(lambda s: s.startswith("synced"), 60)
        watch.wait_for(event_is("synced"), 60)
        if nri:
            probe.wait_for(lambda s: s.startswith("nri-registered"), 60)
            deadline = now() + 60
            while "NRI: registered" not in (log.read_text() if log.exists() else ""):
                if now() > deadline:
                    raise TimeoutError(f"the CLI did not register with NRI: {log}")
                time.sleep(0.05)
        self.watching = {
            "library": Observer(probe, parse_probe, OBSERVED),
            "cli": Observer(watch, parse_watch, OBSERVED),
        }
        self.nri = nri

    def _stop_watchers(self) -> None:
        for name, observer in self.watching.items():
            observer.close()
            if name == "library":
                self.stats += [rest for _, kind, rest in observer.notices if kind == "stats"]
        self.watching = {}

    def ask(self, command: str, run: Run) -> list[str]:
        """A driver command; the container ids it made or removed (requests recorded)."""
        start = len(self.driver.lines)
        self.driver.send(command)
        end = self.driver.wait_for(lambda s: s.startswith("ok"), DRIVER_TIMEOUT, start)
        cids = []
        for _, line in self.driver.lines[start:end]:
            word, _, rest = line.partition(" ")
            if word == "req":
                kind, cid, at = rest.split()
                if kind == "running":
                    run.requests[cid] = float(at)
                cids.append(cid)
            elif word == "fail":
                run.failures.append(rest)
        return cids

    def settle(self, need: dict[str, str], cids: Iterable[str], seconds: float) -> bool:
        """Until every observer (name → the kind it must show) showed every container."""
        wanted = list(cids)
        deadline = now() + seconds
        observers = self.observers()
        while True:
            for o in observers.values():
                o.update()
            if all(
                observers[name].first((kind, cid)) is not None
                for name, kind in need.items()
                for cid in wanted
            ):
                return True
            if now() > deadline:
                return False
            time.sleep(0.05)

    def one_run(self, load: str, pods: int, index: int, settle: float) -> Run:
        run = Run(self.version, load, pods, index, self.nri)
        mode = "seq" if load == ONE_AT_A_TIME else "par"
        batch = f"{'seq' if mode == 'seq' else f'b{pods}'}-{'n' if self.nri else 's'}{index}"
        start = now()
        made = self.ask(f"make {batch} {pods} {mode}", run)
        self.pods_made[self.nri] += len(made)
        running = {"ctr1": "/tasks/start", "ctr2": "/tasks/start"}
        running |= {name: "running" for name in self.watching}
        run.settled = self.settle(running, made, settle)
        gone = self.ask(f"rm {batch} {mode}", run)
        removed = {"ctr1": "/containers/delete", "ctr2": "/containers/delete"}
        removed |= {name: "removed" for name in self.watching}
        run.settled &= self.settle(removed, gone, settle)
        _quiesce(self.address)
        run.seconds = now() - start
        print(
            f"  containerd {self.full_version}, {load}, run {index}"
            f" ({'plugin registered' if self.nri else 'no plugin'}): {len(made)} made"
            + (f", {len(run.failures)} CRI failures" if run.failures else "")
            + ("" if run.settled else ", NOT every observer saw every change")
            + f"; {run.seconds:.1f} s",
            flush=True,
        )
        return run


# --- figures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diff:
    """Observer minus reference, in ms, over the runs of one load: pooled, and per run."""

    pooled: Stats
    runs: list[Stats]
    missing: int
    negative: int  # how many were before the reference (the watcher first)

    def cell(self) -> str:
        s = self.pooled
        text = f"{_fmt(s.median):>7} / {_fmt(s.p99):>7} / {_fmt(s.max):>7} (n={s.n})"
        if len(self.runs) > 1:
            med, p99 = _spread([r.median for r in self.runs]), _spread([r.p99 for r in self.runs])
            text += (
                f"  runs: median {_fmt(med[0])}..{_fmt(med[1])}, p99 {_fmt(p99[0])}..{_fmt(p99[1])}"
            )
        text += f"  {self.negative}/{s.n} before"
        return text + (f"  MISSING {self.missing}" if self.missing else "")

    def figures(self) -> dict[str, Any]:
        s = self.pooled
        return {
            "n": s.n, "median": s.median, "p95": s.p95, "p99": s.p99, "max": s.max,
            "median_spread": _spread([r.median for r in self.runs]),
            "p99_spread": _spread([r.p99 for r in self.runs]), "missing": self.missing,
            "negative": self.negative,
        }  # fmt: skip


def _fmt(v: float, digits: int = 1) -> str:
    return "-" if v != v else f"{v:.{digits}f}"


def diff(
    runs: Sequence[Run],
    value: Callable[[Run, str], float | None],
    reference: Callable[[Run, str], float | None],
) -> Diff:
    per_run: list[list[float]] = []
    missing = 0
    for r in runs:
        diffs = []
        for cid in r.requests:
            t0, t = reference(r, cid), value(r, cid)
            if t0 is None:
                continue
            if t is None:
                missing += 1
            else:
                diffs.append((t - t0) * 1000)
        per_run.append(diffs)
    pooled = [d for ds in per_run for d in ds]
    negative = sum(d < 0 for d in pooled)
    return Diff(Stats.of(pooled), [Stats.of(d) for d in per_run], missing, negative)


def load_figures(rig: Rig, runs: Sequence[Run]) -> dict[str, Any]:
    obs = rig.observers()
    ctr1 = obs["ctr1"]

    def ref(topic: str) -> Callable[[Run, str], float | None]:
        return lambda _r, cid: ctr1.first((topic, cid))

    def first_line(name: str) -> Callable[[Run, str], float | None]:
        o = obs[name]

        def first(_r: Run, cid: str) -> float | None:
            times = [t for kind in STEPS[:3] if (t := o.first((kind, cid))) is not None]
            return min(times, default=None)

        return first

    def step(name: str, kind: str) -> Callable[[Run, str], float | None]:
        return lambda _r, cid: obs[name].first((kind, cid))

    figures: dict[str, Any] = {"runs": len(runs), "pods_per_run": runs[0].pods}
    figures["first_line_minus_containers_create"] = {
        name: diff(runs, first_line(name), ref("/containers/create")) for name in WATCHERS
    } | {"ctr2": diff(runs, step("ctr2", "/containers/create"), ref("/containers/create"))}
    figures["running_minus_tasks_start"] = {
        name: diff(runs, step(name, "running"), ref("/tasks/start")) for name in WATCHERS
    } | {"ctr2": diff(runs, step("ctr2", "/tasks/start"), ref("/tasks/start"))}
    figures["running_minus_tasks_create"] = {  # where `running` comes from: the stream
        name: diff(runs, step(name, "running"), ref("/tasks/create")) for name in WATCHERS
    }
    figures["starting_minus_tasks_start"] = {
        name: diff(runs, step(name, "starting"), ref("/tasks/start")) for name in WATCHERS
    }
    figures["pod_start_ms"] = diff(runs, ref("/tasks/start"), lambda r, cid: r.requests.get(cid))
    counts: dict[str, Any] = {}
    for name in WATCHERS:
        o = obs[name]
        cids = [cid for r in runs for cid in r.requests]
        counts[name] = {
            kind: {
                "once": sum(o.count((kind, c)) == 1 for c in cids),
                "never": sum(o.count((kind, c)) == 0 for c in cids),
                "more": sum(o.count((kind, c)) > 1 for c in cids),
            }
            for kind in STEPS
        } | {"workspaces": len(cids)}
        # in lifecycle order, each once: the first time of each step never before an earlier one
        order_ok = 0
        for c in cids:
            times = [o.first((k, c)) for k in STEPS]
            known = [t for t in times if t is not None]
            order_ok += known == sorted(known)
        counts[name]["in_order"] = order_ok
    figures["counts"] = counts
    figures["cri_failures"] = sum(len(r.failures) for r in runs)
    figures["settled"] = all(r.settled for r in runs)
    figures["seconds"] = sum(r.seconds for r in runs)
    return figures


def print_load(version: str, load: str, fig: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = []
    for title, key in (
        ("first line - ctr1 /containers/create", "first_line_minus_containers_create"),
        ("running - ctr1 /tasks/start", "running_minus_tasks_start"),
        ("running - ctr1 /tasks/create", "running_minus_tasks_create"),
        ("starting - ctr1 /tasks/start", "starting_minus_tasks_start"),
    ):
        for name, d in fig[key].items():
            rows.append((f"{title}: {LABEL[name]}", d.cell()))
    rows.append(("pod start (RunPodSandbox sent - /tasks/start)", fig["pod_start_ms"].cell()))
    for name in WATCHERS:
        c = fig["counts"][name]
        cells = [
            f"{k} {c[k]['once']}/{c['workspaces']}"
            + (f" ({c[k]['more']} more than once)" if c[k]["more"] else "")
            for k in STEPS
        ]
        rows.append(
            (f"exactly once: {LABEL[name]}", ", ".join(cells) + f"; in order {c['in_order']}")
        )
    if fig["cri_failures"]:
        rows.append(("CRI failures", str(fig["cri_failures"])))
    if not fig["settled"]:
        rows.append(("settled", "NO: an observer missed a change within the settle time"))
    print_table(
        f"NRI, containerd {version}, {load}, {fig['runs']} run(s) of {fig['pods_per_run']} pods: "
        "ms, pooled median / p99 / max, spread of the per-run median and p99",
        rows,
    )


# --- a plugin that does not answer ----------------------------------------------------------


def silent_plugin(rig: Rig, repeat: int) -> dict[str, Any]:
    """Pod start (one pod, CRI calls in this process) with no plugin registered, with one whose
    CreateContainer is withheld by a tap (it never answers: containerd's request timeout
    decides), and with one whose connection is closed while containerd waits for it (what a
    killed plugin looks like to containerd). No other plugin is registered meanwhile."""
    import trio

    sys.path.insert(0, str(REPO / "tests"))  # the NRI wiretap is the tests'
    from nri_wiretap import open_nri_wiretap

    from watcher.nri import open_nri_plugin
    from watcher.settings import NriSettings
    from watcher.testing import Pods, mk2_labels

    def start(pods: Pods, name: str) -> float:
        begun = now()
        pods.run_pod(name, labels=mk2_labels(name, f"w-{name}", "owner"))
        return now() - begun

    async def trial(pods: Pods, how: str, name: str) -> float:
        took: list[float] = []
        done = trio.Event()

        async def one() -> None:
            took.append(await trio.to_thread.run_sync(start, pods, name))
            done.set()

        sockdir = tempfile.mkdtemp(prefix="tap-", dir=rig.ctrd.base)  # a socket of its own
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                with trio.CancelScope() as plugin_scope:
                    async with (
                        open_nri_wiretap(
                            rig.ctrd.nri_socket,
                            sockdir,
                            hold=lambda method: method == "CreateContainer",
                        ) as tap,
                        open_nri_plugin(NriSettings(socket=tap.address)) as plugin,
                    ):
                        await plugin.registrations.wait_value(1)
                        nursery.start_soon(one)
                        await tap.held.wait()  # containerd waits for the plugin's answer now
                        if how == "closed":
                            plugin_scope.cancel()  # tap and plugin gone: the socket closes
                        await done.wait()
        return took[0]

    async def main() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"none": [], "silent": [], "closed": []}
        with Pods(rig.ctrd) as pods:
            for i in range(repeat):
                out["none"].append(await trio.to_thread.run_sync(start, pods, f"quiet-{i}"))
                for how in ("silent", "closed"):
                    out[how].append(await trial(pods, how, f"{how}-{i}"))
                await trio.to_thread.run_sync(pods.remove_all)
        return out

    times = trio.run(main)
    log = rig.ctrd.log_tail(2000).splitlines()
    notes = [line for line in log if "failed to handle CreateContainer" in line]
    return {name: Stats.of([t * 1000 for t in values]) for name, values in times.items()} | {
        "containerd_log": notes[-2:]
    }


# --- the whole benchmark ---------------------------------------------------------------------


def run(config: Config | None = None) -> dict[str, Any]:
    config = config or Config()
    loads = ([(ONE_AT_A_TIME, config.one, 1)] if config.one else []) + [
        (f"{n} at once", n, config.runs) for n in config.bursts
    ]
    results: dict[str, Any] = {"config": config.__dict__ | {"bursts": list(config.bursts)}}
    with ExitStack() as stack:
        rigs = [Rig(v, stack) for v in config.versions]
        for rig in rigs:
            rig.start_watchers(nri=True)
        time.sleep(1.0)  # `ctr events` prints nothing once subscribed: give it time
        print("\n== NRI: runs, the containerds alternating", flush=True)
        runs: dict[tuple[str, str], list[Run]] = {}
        for load, pods, repeat in loads:
            for index in range(1, repeat + 1):
                for rig in rigs:
                    runs.setdefault((rig.version, load), []).append(
                        rig.one_run(load, pods, index, config.settle)
                    )
        figures = {
            rig.version: {load: load_figures(rig, runs[rig.version, load]) for load, _, _ in loads}
            for rig in rigs
        }
        for rig in rigs:
            for load, fig in figures[rig.version].items():
                print_load(rig.full_version, load, fig)

        print(f"\n== NRI: pod start, {START_BURST} at once, plugin registered or not", flush=True)
        starts: dict[str, dict[bool, list[Run]]] = {r.version: {True: [], False: []} for r in rigs}
        for pair in range(1, config.pairs + 1):
            for plugin in (True, False) if pair % 2 else (False, True):
                for rig in rigs:
                    if rig.nri != plugin:
                        rig.start_watchers(nri=plugin)
                for rig in rigs:
                    starts[rig.version][plugin].append(
                        rig.one_run("start time", START_BURST, pair, config.settle)
                    )
        for rig in rigs:
            if rig.nri:
                rig.start_watchers(nri=False)  # no plugin of ours: the silent one alone
        silent: dict[str, Any] = {}
        if config.silent:
            print("\n== NRI: a plugin that does not answer", flush=True)
            for rig in rigs:
                silent[rig.version] = silent_plugin(rig, SILENT_REPEAT)
        for rig in rigs:
            rig._stop_watchers()
        start_figures = {
            rig.version: {
                "with_plugin": _start_time(rig, starts[rig.version][True]),
                "without_plugin": _start_time(rig, starts[rig.version][False]),
            }
            for rig in rigs
        }
        gets = {rig.version: _gets(rig) for rig in rigs}
        versions = {rig.version: rig.full_version for rig in rigs}
    _print_rest(versions, start_figures, gets, silent)
    targets = _targets(versions, figures, start_figures, config)
    results |= {
        "versions": versions,
        "loads": {
            v: {load: _json(fig) for load, fig in by_load.items()} for v, by_load in figures.items()
        },
        "pod_start": {v: {k: d.figures() for k, d in f.items()} for v, f in start_figures.items()},
        "gets": gets,
        "silent_plugin": {
            v: {k: (rounded(x) if isinstance(x, Stats) else x) for k, x in s.items()}
            for v, s in silent.items()
        },
        "targets": targets,
    }
    return results


def _start_time(rig: Rig, runs: list[Run]) -> Diff:
    ctr1 = rig.ctr1
    return diff(
        runs, lambda _r, cid: ctr1.first(("/tasks/start", cid)), lambda r, cid: r.requests.get(cid)
    )


def _gets(rig: Rig) -> dict[str, Any]:
    """Containers.Get calls of the library probes with NRI on, per pod they saw made."""
    with_nri = [line for line in rig.stats if "nri_registrations" in line]
    total = sum(int(m.group(1)) for line in with_nri if (m := re.search(r"gets=(\d+)", line)))
    pods = rig.pods_made[True]
    return {"gets": total, "pods": pods, "per_pod": total / pods if pods else float("nan"),
            "stats_lines": with_nri}  # fmt: skip


def _json(fig: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fig.items():
        if isinstance(value, Diff):
            out[key] = value.figures()
        elif isinstance(value, dict) and value and all(isinstance(v, Diff) for v in value.values()):
            out[key] = {k: v.figures() for k, v in value.items()}
        else:
            out[key] = value
    return out


def _print_rest(
    versions: dict[str, str],
    starts: dict[str, dict[str, Diff]],
    gets: dict[str, dict[str, Any]],
    silent: dict[str, Any],
) -> None:
    rows = []
    for v, f in starts.items():
        for k, d in f.items():
            rows.append((f"containerd {versions[v]}, {k.replace('_', ' ')}", d.cell()))
    print_table(
        f"NRI: pod start time, {START_BURST} at once (RunPodSandbox sent - /tasks/start), ms",
        rows,
    )
    print_table(
        "NRI: Containers.Get calls of the library watcher (NRI on), per pod made",
        [
            (
                f"containerd {versions[v]}",
                f"{g['gets']} for {g['pods']} pods = {_fmt(g['per_pod'], 2)}",
            )
            for v, g in gets.items()
        ],
    )
    if silent:
        rows = []
        for v, s in silent.items():
            for how, label in (
                ("none", "no plugin"),
                ("silent", "plugin never answers CreateContainer"),
                ("closed", "plugin's connection closed mid-call"),
            ):
                st: Stats = s[how]
                rows.append((f"containerd {versions[v]}, {label}", st.row("ms", 0)))
            for note in s["containerd_log"]:
                rows.append((f"containerd {versions[v]} log", note[:160]))
        print_table("NRI: one pod's start when a plugin does not answer", rows)


def _targets(
    versions: dict[str, str],
    figures: dict[str, dict[str, dict[str, Any]]],
    starts: dict[str, dict[str, Diff]],
    config: Config,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(target: str, who: str, figure: str, met: bool) -> None:
        out.append({"target": target, "observer": who, "figure": figure, "met": met})

    small = min(config.bursts) if config.bursts else None
    for v, by_load in figures.items():
        for load, fig in by_load.items():
            for name in WATCHERS:
                d: Diff = fig["first_line_minus_containers_create"][name]
                add(
                    f"{versions[v]}, {load}: first line before /containers/create",
                    name,
                    f"median {_fmt(d.pooled.median)}, p99 {_fmt(d.pooled.p99)}, "
                    f"max {_fmt(d.pooled.max)} ms"
                    + (f", {d.missing} missing" if d.missing else ""),
                    d.pooled.max < 0 and not d.missing,
                )
        if small is not None:
            fig = by_load[f"{small} at once"]
            for name in WATCHERS:
                d = fig["running_minus_tasks_start"][name]
                add(
                    f"{versions[v]}, {small} at once: running - /tasks/start "
                    "median ≤ 1, p99 ≤ 10 ms",
                    name,
                    f"median {_fmt(d.pooled.median)}, p99 {_fmt(d.pooled.p99)} ms",
                    d.pooled.median <= 1 and d.pooled.p99 <= 10 and not d.missing,
                )
        with_, without = starts[v]["with_plugin"], starts[v]["without_plugin"]
        # noise: how far apart the per-run medians of either set lie
        noise = max(
            hi - lo for lo, hi in (_spread([r.median for r in d.runs]) for d in (with_, without))
        )
        delta = with_.pooled.median - without.pooled.median
        add(
            f"{versions[v]}: pod start with the plugin vs without, medians within noise",
            "containerd",
            f"{_fmt(with_.pooled.median)} vs {_fmt(without.pooled.median)} ms (difference "
            f"{_fmt(delta)}; per-run medians of one set spread up to {_fmt(noise)})",
            abs(delta) <= noise,
        )
    print_table(
        "NRI: targets (issue 16)",
        [
            (
                f"{t['target']} [{t['observer']}]",
                f"{'met   ' if t['met'] else 'MISSED'}  {t['figure']}",
            )
            for t in out
        ],
    )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser, one=ONE, bursts=BURSTS, runs=RUNS, settle=SETTLE)
    parser.add_argument("--pairs", type=int, default=PAIRS, help="with/without plugin pairs")
    parser.add_argument(
        "--versions",
        type=lambda s: tuple(v for v in s.split(",") if v),
        default=VERSIONS,
        help="containerd series, comma-separated (1.7, 2.1)",
    )
    parser.add_argument("--no-silent", action="store_true", help="skip the silent plugin")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.one < 0 or args.pairs < 0 or any(n < 1 for n in args.bursts):
        raise SystemExit("--runs must be >= 1, --one and --pairs >= 0, burst sizes >= 1")
    config = Config(
        one=args.one, bursts=args.bursts, runs=args.runs, pairs=args.pairs,
        versions=args.versions, settle=args.settle, silent=not args.no_silent,
    )  # fmt: skip
    started = now()
    from benchmarks.common import quiet

    quiet()
    result = run(config)
    print(f"\nnri: {now() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rounded(result), indent=2) + "\n")


if __name__ == "__main__":
    main()
