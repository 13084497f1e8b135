"""Which containerd the rig runs, and Debian's packages of other versions, fetched unpacked.

The rig runs ``containerd``, its shim ``containerd-shim-runc-v2`` and ``ctr`` from one
directory: ``$WS_WATCHER_CONTAINERD_BIN`` when set (e.g. a fetched version's ``usr/bin``),
else the system's (``PATH``; Debian 12 installs 1.6). runc stays the system's: Debian 12's
works with every version below.

Synopsis::

    python -m watcher.testing.versions fetch 2.1     # prints the bin dir (cached after once)
    WS_WATCHER_CONTAINERD_BIN=$(python -m watcher.testing.versions fetch 2.1) python -m pytest
    python -m watcher.testing.versions version       # the version the rig would run now

``fetch`` downloads Debian's own package of that version (``apt-get download`` with a private
apt directory whose sources list names the suite that carries it, on the machine's own Debian
mirror) and unpacks it (``dpkg-deb -x``) into ``~/.cache/ws-watcher/containerd/<version>``:
nothing is installed system-wide, no apt state of the machine is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import RigError

BIN_ENV = "WS_WATCHER_CONTAINERD_BIN"
"""Names the directory of ``containerd``, ``containerd-shim-runc-v2`` and ``ctr``."""
BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr")
SUITES: Mapping[str, str] = {"1.6": "bookworm", "1.7": "trixie", "2.1": "sid"}
"""Version series → the Debian suite that carries it (bookworm: what Debian 12 installs)."""
DEFAULT_CACHE = Path.home() / ".cache" / "ws-watcher" / "containerd"
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
LEGACY_SOURCES = Path("/etc/apt/sources.list")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
PACKAGE = "containerd"
STAMP = "debian-version"
"""In a fetched version's dir: the Debian version of the package unpacked there."""
APT_TIMEOUT = 600.0


@dataclass(frozen=True, order=True)
class Version:
    """containerd's own version, as ``containerd --version`` says it."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def series(self) -> str:
        return f"{self.major}.{self.minor}"


# -- the binaries the rig runs ---------------------------------------------------------------


def nri_series() -> list[str | None]:
    """The containerd series to test NRI on: the rig's own (None) when it has NRI (CI's runs
    on 1.7 and 2.1: each tests its own), else fetched 1.7 and 2.1 (a run on Debian 12's 1.6)."""
    from .config import NRI_SINCE  # config imports this module

    try:
        if version_of(bin_dir()) >= NRI_SINCE:
            return [None]
    except RigError:
        pass  # no usable containerd of the rig's own: the fetched ones then
    return ["1.7", "2.1"]


def bin_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """``$WS_WATCHER_CONTAINERD_BIN`` (checked: it holds the three binaries), or None for the
    system's containerd.

    Raises:
        RigError: the variable names a directory without the binaries.
    """
    raw = (os.environ if env is None else env).get(BIN_ENV, "")
    if not raw:
        return None
    path = Path(raw).absolute()
    missing = [b for b in BINARIES if not os.access(path / b, os.X_OK)]
    if missing:
        raise RigError(f"${BIN_ENV}={raw}: no executable {', '.join(missing)} there")
    return path


def tool(name: str, binaries: Path | None = None) -> str:
    """The command to run ``name`` (one of ``BINARIES``) of the rig's containerd."""
    return str(binaries / name) if binaries is not None else name


def tool_env(binaries: Path | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to run containerd in: ``binaries`` first on ``PATH``, so that the shim
    it starts (containerd looks it up on ``PATH``) is of the same version."""
    out = dict(os.environ if env is None else env)
    if binaries is not None:
        out["PATH"] = os.pathsep.join([str(binaries), *filter(None, [out.get("PATH")])])
    return out


def parse_version(text: str) -> Version:
    """The version in ``containerd --version`` output (``containerd github.com/containerd/
    containerd 1.6.20~ds1 …``, ``… containerd/v2 2.1.9+unknown``).

    Raises:
        RigError: no version in it.
    """
    found = re.search(r"(?:^|\s)v?(\d+)\.(\d+)\.(\d+)", text)
    if found is None:
        raise RigError(f"no containerd version in {text.strip()!r}")
    return Version(*(int(g) for g in found.groups()))


@functools.lru_cache(maxsize=8)
def version_of(binaries: Path | None) -> Version:
    """The version of the containerd in ``binaries`` (None: the system's).

    Raises:
        RigError: it cannot be run or says no version.
    """
    cmd = [tool("containerd", binaries), "--version"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise RigError(f"cannot run {cmd[0]}: {exc}") from exc
    if done.returncode != 0:
        raise RigError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return parse_version(done.stdout)


# -- fetching Debian's packages ------------------------------------------------------------


def debian_mirror(sources: Path = DEBIAN_SOURCES, legacy: Path = LEGACY_SOURCES) -> tuple[str, str]:
    """The machine's own Debian mirror and the keyring it is signed with.

    From the first deb822 stanza of ``debian.sources`` that is not the security archive
    (``URIs:``, ``Signed-By:``), else the first ``deb`` line of ``sources.list``, else
    deb.debian.org.
    """
    with contextlib.suppress(OSError):
        for stanza in re.split(r"\n\s*\n", sources.read_text()):
            fields = _deb822(stanza)
            uris, suites = fields.get("uris", "").split(), fields.get("suites", "").split()
            if (
                "deb" in fields.get("types", "deb").split()
                and uris
                and not any(s.endswith("-security") for s in suites)
            ):
                return uris[0], fields.get("signed-by", KEYRING).split()[0]
    with contextlib.suppress(OSError):
        for line in legacy.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb" and not words[2].endswith("-security"):
                return words[1], KEYRING
    return DEFAULT_MIRROR, KEYRING


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0].isspace() and key is not None:  # a continuation line
            fields[key] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            fields[key] = value.strip()
    return fields


def pick(candidates: Sequence[str], series: str) -> str | None:
    """The first (apt lists the newest first) Debian version of the ``series`` (``2.1``):
    ``2.1.9+ds1-5`` is one, ``2.10.0-1`` is not; an epoch (``1:``) is ignored."""
    for candidate in candidates:
        upstream = candidate.partition(":")[2] if ":" in candidate else candidate
        if re.match(re.escape(series) + r"(?:[.~+-]|$)", upstream):
            return candidate
    return None


class Apt:
    """apt-get and apt-cache over a private directory: own sources list, lists and cache.

    Nothing of the machine's apt state is read or written but its trusted keyrings and
    dpkg's status (which apt reads, and which ``apt-get download`` does not change).
    """

    def __init__(self, root: Path, suite: str, mirror: str, keyring: str) -> None:
        self.root = root
        self.sources = root / "sources.list"
        for sub in ("lists/partial", "cache/archives/partial"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.sources.write_text(f"deb [signed-by={keyring}] {mirror} {suite} main\n")

    @property
    def options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::sourcelist={self.sources}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", "Dir::Etc::preferencesparts=-",
            "-o", f"Dir::Etc::preferences={os.devnull}",
            "-o", f"Dir::State::Lists={self.root / 'lists'}",
            "-o", f"Dir::Cache={self.root / 'cache'}",
            # the dirs are root's (0700 ~/.cache): apt's _apt sandbox user cannot write them
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip

    def run(self, program: str, *args: str, cwd: Path | None = None) -> str:
        cmd = [program, "-q", *self.options, *args]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
        try:
            done = subprocess.run(
                cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT,
                check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RigError(f"{program} {' '.join(args)}: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stdout[-1500:] + done.stderr[-1500:]).strip()
            raise RigError(f"{program} {' '.join(args)} failed ({done.returncode}):\n{tail}")
        return done.stdout

    def versions(self, package: str) -> list[str]:
        """The versions of ``package`` the suite has, newest first (``apt-cache madison``)."""
        rows = self.run("apt-cache", "madison", package).splitlines()
        return [cols[1].strip() for r in rows if len(cols := r.split("|")) >= 3]


def fetched_dir(series: str, cache: Path = DEFAULT_CACHE) -> Path:
    """Where ``fetch(series)`` puts the binaries: ``<cache>/<series>/usr/bin``."""
    return cache / series / "usr" / "bin"


def fetch(series: str, cache: Path = DEFAULT_CACHE, *, refresh: bool = False) -> Path:
    """Debian's ``containerd`` of ``series`` (``1.7``, ``2.1``) unpacked under ``cache``;
    returns its bin dir. Cached: done once, unless ``refresh`` (then the suite's newest
    package of that series replaces it when it is another).

    Needs apt-get, apt-cache and dpkg-deb, and the Debian mirror (on the first call). One
    fetch at a time per cache (a lock): concurrent callers wait, then find it done.

    Raises:
        RigError: an unknown series, apt failed, or the suite has no package of it.
    """
    suite = SUITES.get(series)
    if suite is None:
        known = ", ".join(sorted(SUITES))
        raise RigError(f"no Debian suite known for containerd {series!r} (known: {known})")
    target = cache / series
    binaries = fetched_dir(series, cache)
    if _complete(target) and not refresh:
        return binaries
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        if _complete(target) and not refresh:  # fetched meanwhile by another caller
            return binaries
        _fetch(series, suite, cache, target)
    version_of.cache_clear()
    return binaries


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fetch(series: str, suite: str, cache: Path, target: Path) -> None:
    for tool_name in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool_name) is None:
            raise RigError(f"{tool_name} is missing: fetching needs a Debian machine")
    mirror, keyring = debian_mirror()
    apt = Apt(cache / f"apt-{suite}", suite, mirror, keyring)
    print(f"ws-watcher rig: fetching containerd {series} from {mirror} {suite}", file=sys.stderr)
    apt.run("apt-get", "update")
    found = pick(apt.versions(PACKAGE), series)
    if found is None:
        raise RigError(f"Debian {suite} ({mirror}) has no {PACKAGE} {series}.x any more")
    if _complete(target) and (target / STAMP).read_text().strip() == found:
        return
    with tempfile.TemporaryDirectory(prefix=f".{series}-", dir=cache) as tmp:
        work = Path(tmp)
        apt.run("apt-get", "download", f"{PACKAGE}={found}", cwd=work)
        debs = list(work.glob(f"{PACKAGE}_*.deb"))
        if len(debs) != 1:
            raise RigError(f"apt-get download {PACKAGE}={found}: got {debs}")
        tree = work / "tree"
        done = subprocess.run(
            ["dpkg-deb", "-x", str(debs[0]), str(tree)], capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RigError(f"dpkg-deb -x {debs[0].name} failed: {done.stderr.strip()}")
        (tree / STAMP).write_text(found + "\n")
        if not _complete(tree):
            raise RigError(f"{debs[0].name} holds no {', '.join(BINARIES)} in usr/bin")
        old = work / "old"
        if target.exists():
            target.rename(old)  # replaced whole: never half of one version, half another
        tree.rename(target)


def _complete(target: Path) -> bool:
    bins = target / "usr" / "bin"
    return (target / STAMP).is_file() and all(os.access(bins / b, os.X_OK) for b in BINARIES)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m watcher.testing.versions",
        description="containerd versions for the test rig",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch", help="fetch and unpack Debian's package; print its bin dir")
    get.add_argument("series", choices=sorted(SUITES))
    get.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    get.add_argument("--refresh", action="store_true", help="look for a newer package")
    sub.add_parser("version", help=f"the version the rig runs (${BIN_ENV}, else the system's)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch(args.series, args.cache, refresh=args.refresh))
        else:
            binaries = bin_dir()
            print(version_of(binaries), binaries or "(system)")
    except RigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
