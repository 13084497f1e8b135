"""The command line, parsed: argv and the environment in, one frozen `Options` out.

No I/O beyond checking that `--proc` is a directory, no trio, no watcher: every mistake a
user can make on the command line ends here as argparse's usage line plus one error line
and exit status 2, before anything connects anywhere.

Common options are accepted before and after the command (`ws-watcher --address A watch`
and `ws-watcher watch --address A`); the top-level parser holds the defaults, the
subcommands' copies default to "not given" so they only override what the user typed.
"""

from __future__ import annotations

import argparse
import enum
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from watcher import settings
from watcher.disclosure import Disclosure, DisclosureError, check_entry
from watcher.errors import UsageError
from watcher.labels import GITPOD_SCHEMES, LabelScheme, schemes_from_toml
from watcher.mounts import PathMap, PathMapError

__all__ = ["Command", "Options", "build_parser", "parse"]

PROG = "ws-watcher"
LOG_LEVELS = ("debug", "info", "warning", "error")


class Command(enum.Enum):
    WATCH = "watch"
    WAIT = "wait"
    WAIT_STOP = "wait-stop"
    LS = "ls"
    INSPECT = "inspect"
    DEMO = "demo"


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What the user asked for, validated. Built once by `parse`."""

    command: Command
    address: str = settings.ADDRESS
    namespace: str = settings.NAMESPACE
    proc: str = settings.PROC_ROOT
    path_map: PathMap = field(default_factory=PathMap)
    log_level: str = "warning"
    #: watch: print the workspaces found by the initial sync
    initial: bool = False
    #: watch: seconds between safety relists (0: never)
    relist_interval: float = settings.RELIST_INTERVAL
    #: wait, wait-stop; inspect (an instance or a container id)
    instance_id: str = ""
    timeout: float = settings.WAIT_TIMEOUT
    #: ls
    json: bool = False
    #: what makes a pod a workspace: --schemes, then Gitpod's (unless --no-gitpod-schemes)
    schemes: tuple[LabelScheme, ...] = GITPOD_SCHEMES
    #: which annotations may be printed (the default allow-list plus --show-annotation)
    disclosure: Disclosure = field(default_factory=Disclosure.with_extra)


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type from one of `settings`' checks: the same rule, the same words."""

    def parse_arg(text: str) -> str:
        try:
            check(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse_arg


def _seconds(name: str, *, zero: bool = False) -> Callable[[str], float]:
    def parse_arg(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        try:
            return settings.check_seconds(name, value, zero=zero)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_arg


_INSTANCE_ID = _checked(lambda text: settings.check_id(text, "instance id"))


def _nonempty(what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not text:
            raise UsageError(f"{what} must not be empty")
        return text

    return _checked(check)


def _schemes(path: str | None, *, gitpod: bool) -> tuple[LabelScheme, ...]:
    """The schemes of the `--schemes` file (read here: a mistake is exit 2, before anything
    connects anywhere), then Gitpod's unless told not to."""
    own: tuple[LabelScheme, ...] = ()
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise UsageError(f"--schemes {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise UsageError(f"--schemes {path}: not UTF-8 text ({exc})") from exc
        own = schemes_from_toml(text, f"--schemes {path}")
    schemes = own + (GITPOD_SCHEMES if gitpod else ())
    if not schemes:
        raise UsageError("--no-gitpod-schemes needs --schemes FILE: nothing would be a workspace")
    return schemes


def _path_map_spec(text: str) -> str:
    try:
        PathMap.parse([text])
    except PathMapError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _annotation_entry(text: str) -> str:
    try:
        return check_entry(text)
    except DisclosureError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_common(parser: argparse.ArgumentParser, env: Mapping[str, str], *, top: bool) -> None:
    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("containerd and host")
    group.add_argument(
        "--address",
        metavar="PATH",
        type=_nonempty("the containerd address"),
        default=default(env.get("CONTAINERD_ADDRESS") or settings.ADDRESS),
        help=f"containerd's socket (default: $CONTAINERD_ADDRESS, else {settings.ADDRESS})",
    )
    group.add_argument(
        "--namespace",
        metavar="NS",
        type=_nonempty("the containerd namespace"),
        default=default(env.get("CONTAINERD_NAMESPACE") or settings.NAMESPACE),
        help=f"containerd namespace (default: $CONTAINERD_NAMESPACE, else {settings.NAMESPACE})",
    )
    group.add_argument(
        "--proc",
        metavar="PATH",
        default=default(settings.PROC_ROOT),
        help="the host's proc; mounts are read from PATH/1/mountinfo when it is not /proc",
    )
    group.add_argument(
        "--path-map",
        metavar="HOST=LOCAL",
        action="append",
        type=_path_map_spec,
        default=default([]),
        help="rewrite the host path prefix HOST to LOCAL in upperdir, rootfs and bind mount "
        "sources (repeatable)",
    )
    group.add_argument(
        "--schemes",
        metavar="FILE",
        default=default(None),
        help="a TOML file of label schemes that make other pods workspaces (see the README: "
        "Custom schemes); they are tried before Gitpod's",
    )
    group.add_argument(
        "--no-gitpod-schemes",
        action="store_true",
        default=default(False),
        help="do not recognise Gitpod's workspace pods (only those of --schemes)",
    )
    group.add_argument(
        "--show-annotation",
        metavar="KEY",
        action="append",
        type=_annotation_entry,
        default=default([]),
        help="also print the pod or container annotation KEY (or every key starting with "
        "PREFIX, written PREFIX*); repeatable. Only a short list of harmless annotations is "
        "printed by default, and a key that looks like a credential (token, secret, password, "
        "auth, key, ...) never is",
    )
    group.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.lower,
        default=default("warning"),
        help="what to log on stderr (default: warning)",
    )


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [options] COMMAND [command options]",
        description="Watch the Kubernetes workspace pods on this node, through containerd.",
        epilog="Exit status: 0 done, 1 timed out, 2 usage error.",
    )
    _add_common(parser, env, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: Command, help: str, usage: str = "") -> argparse.ArgumentParser:
        p = sub.add_parser(
            name.value,
            prog=f"{PROG} {name.value}",
            help=help,
            description=help,
            usage=f"{PROG} {name.value} [options]{usage}",
        )
        _add_common(p, env, top=False)
        return p

    watch = command(
        Command.WATCH,
        "print one JSON line per workspace change, until interrupted",
        " [--initial]",
    )
    watch.add_argument(
        "--initial",
        action="store_true",
        help="first print the workspaces already there (as running or exited)",
    )
    watch.add_argument(
        "--relist-interval",
        metavar="SECONDS",
        type=_seconds("the interval", zero=True),
        default=settings.RELIST_INTERVAL,
        help="relist containerd this often to catch missed events; 0 turns it off "
        "(default: %(default)g)",
    )
    for name, help in (
        (Command.WAIT, "wait until the instance's workspace runs; print it as JSON"),
        (Command.WAIT_STOP, "wait until the instance's workspace container is gone"),
    ):
        p = command(name, help, " INSTANCE_ID [--timeout SECONDS]")
        p.add_argument("instance_id", metavar="INSTANCE_ID", type=_INSTANCE_ID)
        p.add_argument(
            "--timeout",
            metavar="SECONDS",
            type=_seconds("the timeout"),
            default=settings.WAIT_TIMEOUT,
            help="give up (exit 1) after this long (default: %(default)g)",
        )
    ls = command(Command.LS, "list the workspaces on this node", " [--json]")
    ls.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    inspect = command(
        Command.INSPECT,
        "print one workspace (by instance or container id) with its task and image as JSON",
        " ID",
    )
    inspect.add_argument("instance_id", metavar="ID", type=_INSTANCE_ID)
    demo = command(
        Command.DEMO, "a private containerd, some workspace pods, the watcher live (root)"
    )
    demo.epilog = (
        "Leaves the node as it found it, but for packages: containerd, runc and "
        "busybox-static are installed with apt-get when missing (before the story, a minute "
        "or two) and stay installed (it prints the apt-get purge line that removes them); "
        "the distribution's containerd.service is neither started nor enabled by that "
        "install. Its pods' cgroups live under a parent of its own, /ws-watcher-demo-<random>, "
        "never under a kubelet's /kubepods; containerd, pods, mounts and cgroups are removed "
        "at the end, also on Ctrl-C."
    )
    return parser


def parse(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Options:
    """Parse `argv` (without the program name). Exits 2 with usage and one line on a mistake."""
    env = os.environ if env is None else env
    parser = build_parser(env)
    ns = parser.parse_args(list(argv))
    try:
        path_map = PathMap.parse(ns.path_map)
    except PathMapError as exc:  # a prefix given twice
        parser.error(str(exc))
    if not os.path.isdir(ns.proc):
        parser.error(f"--proc {ns.proc}: not a directory")
    try:
        schemes = _schemes(ns.schemes, gitpod=not ns.no_gitpod_schemes)
    except UsageError as exc:
        parser.error(str(exc))
    return Options(
        command=Command(ns.command),
        address=ns.address,
        namespace=ns.namespace,
        proc=ns.proc,
        path_map=path_map,
        log_level=ns.log_level,
        initial=getattr(ns, "initial", False),
        relist_interval=getattr(ns, "relist_interval", settings.RELIST_INTERVAL),
        instance_id=getattr(ns, "instance_id", ""),
        timeout=getattr(ns, "timeout", settings.WAIT_TIMEOUT),
        json=getattr(ns, "json", False),
        disclosure=Disclosure.with_extra(ns.show_annotation),
        schemes=schemes,
    )
