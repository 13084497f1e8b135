"""Shared helpers of the benchmarks: statistics, timestamped subprocess output, child roles.

One clock everywhere: `now()` = `time.monotonic()` (CLOCK_MONOTONIC, system-wide on Linux, so
timestamps taken in different processes compare directly).

Child roles (``python -m benchmarks.common ROLE ...``), so the thing measured never shares a
GIL with the thing that drives it:

* ``stamp -- CMD...``   run CMD; print each of its stdout lines as ``T LINE``, T taken by a
  reader thread on arrival (used for ``ctr events`` and ``ws-watcher watch``);
* ``probe ADDRESS [NRI_SOCKET]`` an in-process watcher (with its NRI source on that socket
  when given): ``T KIND CONTAINER_ID`` per change, stamped as `changes()` yields it
  (``T synced N`` after each sync, ``T nri-registered N`` after each NRI registration); on
  SIGTERM, ``T stats gets=N nri_registrations=N nri_delivered=N nri_dropped=N`` (the
  Containers.Get calls it made, from its metrics), then it exits;
* ``fake DIR``          a FakeContainerd serving on DIR/fake.sock, driven by stdin commands
  (see `_fake_main`); it answers each with one ``ok ...`` line;
* ``drive BASE ADDRESS`` the pod driver: makes and removes kubelet-style workspace pods over
  CRI on the rig at BASE, one at a time or all at once (one thread each), driven by stdin
  commands (see `_drive_main`); it reports each CRI request's time;
* ``poll ADDRESS``      the polling peer: CRI ListContainers every second (the kubelet's PLEG
  relist), ``T running CID`` / ``T removed CID`` when a listing shows the change.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.json"
now = time.monotonic
DRIVE_CRI_TIMEOUT = 120.0  # per CRI call of the pod driver, as the kubelet's default


# --- statistics ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stats:
    """Order statistics of a sample (nearest-rank percentiles)."""

    n: int
    median: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan)
        ordered = sorted(values)

        def rank(q: float) -> float:
            return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]

        return cls(len(ordered), statistics.median(ordered), rank(0.95), rank(0.99), ordered[-1])

    def row(self, unit: str = "ms", digits: int = 1) -> str:
        f = f"{{:.{digits}f}}"
        cells = (f.format(v) for v in (self.median, self.p95, self.p99, self.max))
        return " / ".join(cells) + f" {unit} (n={self.n})"


def rounded(value: Any, digits: int = 4) -> Any:
    """`value` with floats rounded, recursively (dataclasses become dicts): for the JSON."""
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


def quiet() -> None:
    """Keep the watcher's warnings off the table (synthetic PIDs are real processes' PIDs,
    so every cgroup cross-check of a synthetic workspace warns)."""
    import logging

    logging.getLogger("watcher").setLevel(logging.ERROR)


def median_time(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    width = max((len(k) for k, _ in rows), default=0)
    print(f"\n== {title}")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    sys.stdout.flush()


# --- subprocesses -------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), env.get("PYTHONPATH"))))
    return env


def child_argv(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.common", role, *args]


def stamped(argv: Sequence[str]) -> list[str]:
    """`argv` run under the stamper: its lines come back as ``T LINE``."""
    return child_argv("stamp", "--", *argv)


def event_is(kind: str) -> Callable[[str], bool]:
    """A `watch` line of this event. Not a substring test: a `removed` line carries the
    workspace's last `"state"`, which can be `"running"` (a relist found it gone)."""
    prefix = f'{{"event": "{kind}"'
    return lambda line: line.startswith(prefix)


def watch_argv(address: str) -> list[str]:
    """The `ws-watcher watch` command line (the installed console script's module)."""
    return [sys.executable, "-m", "watcher", "watch", "--address", address]


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads, children excluded), from /proc/PID/stat;
    NaN once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid` (a scan of /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Lines:
    """A subprocess whose stdout lines are collected by a reader thread as (time, text).

    With ``prestamped`` the child prints ``T TEXT`` (the stamper, the probe) and T is used;
    otherwise the arrival time here. ``stdin=True`` gives a pipe for `send`.
    """

    def __init__(self, argv: Sequence[str], *, prestamped: bool = False, stdin: bool = False):
        self.argv = list(argv)
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=child_env(),
            cwd=REPO,
        )
        self._prestamped = prestamped
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            t, text = now(), raw.rstrip("\n")
            if self._prestamped:
                stamp, _, text = text.partition(" ")
                t = float(stamp)
            with self._cond:
                self.lines.append((t, text))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def send(self, command: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()

    def wait_for(self, match: Callable[[str], bool], timeout: float, start: int = 0) -> int:
        """Index of the first line from `start` on that matches; TimeoutError after `timeout`."""
        deadline = now() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    if match(self.lines[i][1]):
                        return i
                start = len(self.lines)
                left = deadline - now()
                if left <= 0 or (self._proc.poll() is not None and not self._reader.is_alive()):
                    raise TimeoutError(f"{self.argv[:4]}: no matching line after {timeout}s")
                self._cond.wait(left)

    def wait_count(self, match: Callable[[str], bool], n: int, timeout: float) -> float:
        """Wait until `n` lines match; the time of the n-th. TimeoutError after `timeout`."""
        deadline = now() + timeout
        with self._cond:
            while True:
                times = [t for t, text in self.lines if match(text)]
                if len(times) >= n:
                    return times[n - 1]
                left = deadline - now()
                if left <= 0:
                    raise TimeoutError(f"{self.argv[:4]}: {len(times)} of {n} lines")
                self._cond.wait(min(left, 1.0))

    def ask(self, command: str, timeout: float = 120.0) -> list[str]:
        """Send a command to a `fake` child; the words of its ``ok ...`` answer."""
        start = len(self.lines)
        self.send(command)
        i = self.wait_for(lambda s: s.startswith("ok"), timeout, start)
        return self.lines[i][1].split()[1:]

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(5)

    def __enter__(self) -> Lines:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextmanager
def fake_server() -> Iterator[tuple[Lines, str]]:
    """A FakeContainerd in a child process: (its command channel, its socket path)."""
    with (
        tempfile.TemporaryDirectory(prefix="wsb-") as tmp,
        Lines(child_argv("fake", tmp), stdin=True) as fake,
    ):
        (address,) = fake.ask("address", timeout=30)
        try:
            yield fake, address
        finally:
            fake.send("quit")


# --- child roles --------------------------------------------------------------------------


def _stamp_main(argv: list[str]) -> None:
    import signal

    # SIGTERM (`Lines.close`) must reach the stamped command too, not orphan it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                t = now()
                sys.stdout.write(f"{t:.6f} {line}")
                sys.stdout.flush()
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # wedged: not left behind
                proc.kill()


def _probe_main(address: str, nri_socket: str | None = None) -> None:
    import signal

    import trio

    from watcher import open_watcher
    from watcher.published import Synced, WorkspaceChange
    from watcher.settings import NriSettings, Settings

    nri = None if nri_socket is None else NriSettings(socket=nri_socket)

    async def main() -> None:
        settings = Settings(address=address, nri=nri)
        async with open_watcher(settings=settings) as w, trio.open_nursery() as nursery:
            print(f"{now():.6f} synced {len(w.workspaces())}", flush=True)

            async def registrations() -> None:
                assert w.nri is not None
                async for count in w.nri.registrations.eventual_values(lambda n: n > 0):
                    print(f"{now():.6f} nri-registered {count}", flush=True)

            async def stats_on_sigterm() -> None:
                with trio.open_signal_receiver(signal.SIGTERM) as signals:
                    async for _ in signals:
                        gets = w.metrics.lookup_seconds["container"].count
                        line = f"{now():.6f} stats gets={gets}"
                        if w.nri is not None:
                            st = w.nri.stats
                            line += (
                                f" nri_registrations={st.registrations}"
                                f" nri_delivered={st.delivered} nri_dropped={st.dropped}"
                            )
                        print(line, flush=True)
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(stats_on_sigterm)
            if w.nri is not None:
                nursery.start_soon(registrations)
            with w.changes() as changes:
                async for change in changes:
                    t = now()
                    if isinstance(change, WorkspaceChange):
                        line = f"{change.kind.value} {change.workspace.container_id}"
                    elif isinstance(change, Synced):
                        line = f"synced {change.workspaces}"
                    else:
                        line = type(change).__name__.lower()
                    print(f"{t:.6f} {line}", flush=True)

    trio.run(main)


def _fake_main(directory: str) -> None:
    """Commands: ``address``; ``synth N`` (N silent running workspaces); ``add K`` (K pods
    with events); ``rm`` (remove the pods of ``add``, with events); ``teardown N`` (delete
    the first N synthetic workspace containers, events queued while streams are stalled,
    then released: answers ``ok T0 EVENTS``, T0 the release time); ``mountinfo DIR`` (write
    DIR/1/mountinfo as a node running the synthetic workspaces shows it); ``quit``."""
    from watcher.testing.fake import FakeContainerd, FakePod
    from watcher.testing.labels import mk2_labels

    synthetic: list[FakePod] = []
    added: list[FakePod] = []
    serial = 0
    with FakeContainerd(directory) as fake:
        for line in sys.stdin:
            cmd, *args = line.split()
            reply = ""
            if cmd == "address":
                reply = fake.address
            elif cmd == "synth":
                synthetic += fake.add_synthetic_workspaces(int(args[0]), prefix=f"s{serial}")
                serial += 1
            elif cmd == "add":
                for _ in range(int(args[0])):
                    serial += 1
                    iid = f"inst-{serial}"
                    added.append(fake.add_pod(f"c{serial}", labels=mk2_labels(iid, iid, "o")))
            elif cmd == "rm":
                for pod in added:
                    fake.remove_pod(pod)
                added.clear()
            elif cmd == "teardown":
                before = len(fake.published())
                with fake.stalled():
                    for pod in synthetic[: int(args[0])]:
                        fake.delete_container(pod.containers["workspace"])
                t0 = now()
                reply = f"{t0:.6f} {len(fake.published()) - before}"
            elif cmd == "mountinfo":
                _write_mount_table(Path(args[0]), synthetic)
            elif cmd == "quit":
                return
            print(f"ok {reply}", flush=True)


class _RigView:
    """What `Pods` uses of a `PrivateContainerd`, for a process that does not own the rig: a
    second `PrivateContainerd` on the same base dir would claim it (its owner record) and
    clean it up when this process exits."""

    def __init__(self, base: Path, address: str) -> None:
        self.base = base
        self.address = address
        self.pods_dir = base / "pods"

    def track_cgroup(self, relative: str) -> None:
        from watcher.testing.containerd import CGROUPS_FILE

        with (self.base / CGROUPS_FILE).open("a") as f:  # the owner's cleanup() reads it
            f.write(relative + "\n")


def _drive_main(base: str, address: str) -> None:
    """Commands: ``make BATCH N MODE`` (N workspace pods named ``BATCH-i``; MODE ``seq``: one
    after the other, ``par``: all at once, one thread each); ``rm BATCH MODE`` (remove that
    batch's pods); ``quit``. Each command is answered, once done, by ``req KIND CID T`` per pod
    (KIND ``running`` for a make, T when RunPodSandbox was sent; ``removed`` for a rm, T when
    StopContainer was sent), ``fail WHAT NAME ERROR`` per failed pod, then ``ok DONE FAILED``.
    Nothing is printed while a command runs: output would only add noise to the burst."""
    from concurrent.futures import ThreadPoolExecutor
    from typing import cast

    from watcher.testing import CRIClient, Pod, Pods, PrivateContainerd, mk2_labels

    pods = Pods(cast(PrivateContainerd, _RigView(Path(base), address)))
    pods.cri.close()  # the kubelet's --runtime-request-timeout: 200 pods at once take ~60 s here
    pods.cri = CRIClient(address, timeout=DRIVE_CRI_TIMEOUT)
    batches: dict[str, list[Pod]] = {}

    def each(fn: Callable[[Any], tuple[str, str]], items: Sequence[Any], mode: str) -> None:
        if mode == "par":
            with ThreadPoolExecutor(max(1, len(items))) as pool:
                results = list(pool.map(fn, items))
        else:
            results = [fn(item) for item in items]
        failed = [r for r in results if r[0] == "fail"]
        for r in results:
            print(r[1])
        print(f"ok {len(results) - len(failed)} {len(failed)}", flush=True)

    def make(name: str) -> tuple[str, str]:
        at = now()
        try:
            pod = pods.run_pod(name, labels=mk2_labels(name, f"w-{name}", "owner"))
        except Exception as exc:  # reported, not fatal: a burst may overload containerd
            return "fail", f"fail make {name} {exc!r}".replace("\n", " ")
        batches.setdefault(name.rpartition("-")[0], []).append(pod)
        return "req", f"req running {pod.containers['workspace']} {at:.6f}"

    def remove(pod: Pod) -> tuple[str, str]:
        at = now()
        try:
            pods.remove_pod(pod)
        except Exception as exc:
            return "fail", f"fail rm {pod.name} {exc!r}".replace("\n", " ")
        return "req", f"req removed {pod.containers['workspace']} {at:.6f}"

    try:
        for line in sys.stdin:
            cmd, *args = line.split()
            if cmd == "make":
                batch, n, mode = args
                each(make, [f"{batch}-{i}" for i in range(int(n))], mode)
            elif cmd == "rm":
                batch, mode = args
                each(remove, batches.pop(batch, []), mode)
            elif cmd == "quit":
                return
            else:
                print(f"ok unknown command {cmd}", flush=True)
    finally:
        pods.remove_all()
        pods.close()


def _poll_main(address: str, interval: float = 1.0) -> None:
    """Lists every `interval` seconds (on a fixed grid); ``T ready`` after the first listing."""
    from containerd_protos.cri.runtime.v1 import api_pb2 as cri
    from watcher.testing import CRIClient, CRIError

    client = CRIClient(address)
    running: set[str] = set()
    known: set[str] = set()
    tick = now()
    first = True
    while True:
        try:
            listed = [c for c in client.list_containers() if c.metadata.name == "workspace"]
        except CRIError:  # a listing that failed (overload): the next one tells
            listed = None
        t = now()
        if listed is not None:
            out = []
            ids = {c.id for c in listed}
            for c in listed:
                if c.state == cri.CONTAINER_RUNNING and c.id not in running:
                    running.add(c.id)
                    out.append(f"{t:.6f} running {c.id}")
            for cid in known - ids:
                running.discard(cid)
                out.append(f"{t:.6f} removed {cid}")
            known = ids
            if first:
                out.append(f"{t:.6f} ready")
                first = False
            if out:
                print("\n".join(out), flush=True)
        tick = max(tick + interval, now())  # a listing slower than the interval: next at once
        time.sleep(max(0.0, tick - now()))


def _write_mount_table(proc: Path, pods: list[Any]) -> None:
    """The mount table of a node running these workspaces: an overlay rootfs per task."""
    tasks = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
    snaps = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"
    (proc / "1").mkdir(parents=True, exist_ok=True)
    with open(proc / "1" / "mountinfo", "w") as f:
        for n, pod in enumerate(pods):
            cid, layer = pod.containers["workspace"], f"{snaps}/{n + 2}"
            f.write(
                f"{1000 + n} 25 0:{60 + n} / {tasks}/{cid}/rootfs rw,relatime - overlay overlay "
                f"rw,lowerdir={snaps}/1/fs,upperdir={layer}/fs,workdir={layer}/work\n"
            )


def save_results(results: dict[str, Any], path: Path = RESULTS) -> None:
    path.write_text(json.dumps(rounded(results), indent=2) + "\n")


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "stamp":
        _stamp_main(rest[1:] if rest[:1] == ["--"] else rest)
    elif role == "probe":
        _probe_main(rest[0], rest[1] if len(rest) > 1 else None)
    elif role == "fake":
        _fake_main(rest[0])
    elif role == "drive":
        _drive_main(rest[0], rest[1])
    elif role == "poll":
        _poll_main(rest[0])
    else:
        raise SystemExit(f"unknown role {role!r}")
