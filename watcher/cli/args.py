"""The command line, parsed: argv and the environment in, one frozen `Options` out.

No I/O beyond checking that `--proc` is a directory, reading the `--schemes` file and the
package's metadata (`--version`), no trio, no watcher: every mistake a user can make on the
command line ends here as argparse's usage line plus one error line and exit status 2,
before anything connects anywhere.

Common options are accepted before and after the command (`ws-watcher --address A watch`
and `ws-watcher watch --address A`); the top-level parser holds the defaults, the
subcommands' copies default to "not given" so they only override what the user typed. A
subcommand takes only the options it uses: the demo (its own containerd) only the logging
ones, `completion` none.
"""

from __future__ import annotations

import argparse
import enum
import functools
import grp
import importlib.metadata
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from watcher import settings
from watcher.disclosure import Disclosure, DisclosureError, check_entry
from watcher.durations import parse_seconds
from watcher.errors import UsageError
from watcher.labels import GITPOD_SCHEMES, LabelScheme, schemes_from_toml
from watcher.pathmap import PathMap, PathMapError

from .completion import SHELLS
from .logs import LOG_FORMATS, LOG_LEVELS
from .output import Format

__all__ = ["Command", "Options", "build_parser", "parse"]

PROG = "ws-watcher"
#: the name `--version` looks up in the installed package's metadata
DISTRIBUTION = "ws-watcher"


class Command(enum.Enum):
    WATCH = "watch"
    WAIT = "wait"
    WAIT_STOP = "wait-stop"
    LS = "ls"
    INSPECT = "inspect"
    DEMO = "demo"
    COMPLETION = "completion"
    SERVE = "serve"


#: what `-o` offers, per command (a workspace's forms; `watch`: its lines' forms)
_WORKSPACE_FORMATS = (Format.JSON, Format.YAML, Format.WIDE, Format.NAME)
OUTPUTS: dict[Command, tuple[Format, ...]] = {
    Command.LS: _WORKSPACE_FORMATS,
    Command.WAIT: _WORKSPACE_FORMATS,
    Command.INSPECT: _WORKSPACE_FORMATS,
    Command.WATCH: (Format.JSON, Format.TEXT),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What the user asked for, validated. Built once by `parse`."""

    command: Command
    address: str = settings.ADDRESS
    namespace: str = settings.NAMESPACE
    proc: str = settings.PROC_ROOT
    path_map: PathMap = field(default_factory=PathMap)
    log_level: str = "warning"
    #: stderr's logs: "text" for people, "json" for log pipelines
    log_format: str = "text"
    #: watch: print the workspaces found by the initial sync
    initial: bool = False
    #: watch: seconds between safety relists (0: never)
    relist_interval: float = settings.RELIST_INTERVAL
    #: watch, serve: the NRI socket to observe beside the event stream (None: the stream alone)
    nri_socket: str | None = None
    #: wait, wait-stop
    instance_id: str = ""
    timeout: float = settings.WAIT_TIMEOUT
    #: inspect: an instance id or a container id
    target: str = ""
    #: ls, wait, inspect, watch (-o): how to print; ls's default is its table
    output: Format = Format.JSON
    #: completion: bash, zsh or fish
    shell: str = ""
    #: what makes a pod a workspace: --schemes, then Gitpod's (unless --no-gitpod-schemes)
    schemes: tuple[LabelScheme, ...] = GITPOD_SCHEMES
    #: which annotations may be printed (the default allow-list plus --show-annotation)
    disclosure: Disclosure = field(default_factory=Disclosure.with_extra)
    #: wait, wait-stop, ls, inspect, watch: ask this `ws-watcher serve` (its socket's path or
    #: an http:// URL) instead of containerd (`--server`, else $WS_WATCHER_SERVER)
    server: str | None = None
    #: serve: where and how the API is served
    service: settings.ServiceSettings = field(default_factory=settings.ServiceSettings)

    @property
    def json(self) -> bool:
        """The output is JSON (`ls --json`, `-o json`, and `wait`'s and `inspect`'s default)."""
        return self.output is Format.JSON


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
    """Seconds, or a duration (`90s`, `2m`, `1h30m`, `500ms`): `watcher.durations`."""

    def parse_arg(text: str) -> float:
        try:
            return parse_seconds(name, text, zero=zero)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_arg


@functools.cache
def version() -> str:
    """The installed package's version (from its metadata: written once, in pyproject)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # a source tree never installed
        return "unknown"


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
    """Every common option: containerd and host, workspaces, logging."""
    _add_containerd(parser, env, top=top)
    _add_workspaces(parser, env, top=top)
    _add_logging(parser, env, top=top)


def _defaults(*, top: bool) -> Callable[[object], object]:
    """The top level holds the defaults; a subcommand's copy only overrides what was typed."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    return default


def _add_containerd(parser: argparse.ArgumentParser, env: Mapping[str, str], *, top: bool) -> None:
    default = _defaults(top=top)
    group = parser.add_argument_group("containerd and host")
    group.add_argument(
        "-a",
        "--address",
        metavar="PATH",
        type=_nonempty("the containerd address"),
        default=default(env.get("CONTAINERD_ADDRESS") or settings.ADDRESS),
        help=f"containerd's socket (default: $CONTAINERD_ADDRESS, else {settings.ADDRESS})",
    )
    group.add_argument(
        "-n",
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


def _add_workspaces(parser: argparse.ArgumentParser, env: Mapping[str, str], *, top: bool) -> None:
    default = _defaults(top=top)
    group = parser.add_argument_group("workspaces")
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


def _add_logging(parser: argparse.ArgumentParser, env: Mapping[str, str], *, top: bool) -> None:
    default = _defaults(top=top)
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.lower,
        default=default("warning"),
        help="what to log on stderr (default: warning)",
    )
    group.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        type=str.lower,
        default=default("text"),
        help="text for people, or json: one object per line (ts, level, logger, message) "
        "for log pipelines (default: text)",
    )


def _add_relist_interval(parser: argparse.ArgumentParser) -> None:
    """`--relist-interval`, of the commands that keep a watcher running (`watch`, `serve`)."""
    parser.add_argument(
        "--relist-interval",
        metavar="DURATION",
        type=_seconds("the interval", zero=True),
        default=settings.RELIST_INTERVAL,
        help="relist containerd this often to catch missed events: seconds or a duration "
        "(5m); 0 turns it off (default: %(default)gs)",
    )


def _add_output(parser: argparse.ArgumentParser, command: Command, default: Format) -> None:
    choices = OUTPUTS[command]
    parser.add_argument(
        "-o",
        "--output",
        metavar="FORMAT",
        choices=[f.value for f in choices],
        default=default.value,
        help=f"print as {', '.join(f.value for f in choices)} (default: {default.value})",
    )


class AddOptions(Protocol):
    """Adds a group of common options (`_add_containerd`, `_add_workspaces`, `_add_logging`)."""

    def __call__(
        self, parser: argparse.ArgumentParser, env: Mapping[str, str], *, top: bool
    ) -> None: ...


#: the common options of a subcommand that talks to containerd
COMMON: tuple[AddOptions, ...] = (_add_containerd, _add_workspaces, _add_logging)


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [options] COMMAND [command options]",
        description="Watch the Kubernetes workspace pods on this node, through containerd.",
        epilog="Exit status: 0 done (also `watch` and `serve` ended by Ctrl-C or SIGTERM), 1 "
        "timed out or not found, 2 a usage error, 130 interrupted by Ctrl-C (143 by SIGTERM). "
        "Durations: seconds, or such as 90s, 2m, 1h30m, 500ms.",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {version()}", help="print the version"
    )
    _add_common(parser, env, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: Command, help: str, usage: str = "", *, common: Sequence[AddOptions] = COMMON
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name.value,
            prog=f"{PROG} {name.value}",
            help=help,
            description=help,
            usage=f"{PROG} {name.value} [options]{usage}",
        )
        for add in common:
            add(p, env, top=False)
        return p

    watch = command(
        Command.WATCH,
        "print each workspace change as a JSON line (or -o text), until interrupted",
        " [--initial] [-o json|text]",
    )
    _add_output(watch, Command.WATCH, Format.JSON)
    _add_nri(watch)
    watch.add_argument(
        "--initial",
        action="store_true",
        help="first print the workspaces already there (as running or exited)",
    )
    _add_relist_interval(watch)
    for name, help, usage in (
        (
            Command.WAIT,
            "wait until the instance's workspace runs; print it (JSON, or -o)",
            " INSTANCE_ID [--timeout DURATION] [-o FORMAT]",
        ),
        (
            Command.WAIT_STOP,
            "wait until the instance's workspace container is gone",
            " INSTANCE_ID [--timeout DURATION]",
        ),
    ):
        p = command(name, help, usage)
        p.add_argument("instance_id", metavar="INSTANCE_ID", type=_INSTANCE_ID)
        p.add_argument(
            "--timeout",
            metavar="DURATION",
            type=_seconds("the timeout"),
            default=settings.WAIT_TIMEOUT,
            help="give up (exit 1) after this long: seconds or a duration such as 90s, 2m, "
            "1h30m (default: %(default)gs)",
        )
        if name is Command.WAIT:
            _add_output(p, name, Format.JSON)
    ls = command(Command.LS, "list the workspaces on this node", " [-o FORMAT]")
    _add_output(ls, Command.LS, Format.TABLE)
    ls.add_argument(
        "--json",
        action="store_const",
        dest="output",
        const=Format.JSON.value,
        help="the same as -o json: a JSON array",
    )
    inspect = command(
        Command.INSPECT,
        "print one workspace (by instance or container id) with its task and image (JSON, or -o)",
        " ID [-o FORMAT]",
    )
    inspect.add_argument("target", metavar="ID", type=_INSTANCE_ID)
    _add_output(inspect, Command.INSPECT, Format.JSON)
    demo = command(
        Command.DEMO,
        "a private containerd, some workspace pods, the watcher live (root)",
        common=(_add_logging,),  # it runs its own containerd: nothing to point it at
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
    completion = command(
        Command.COMPLETION,
        "print a shell completion script (bash: source <(ws-watcher completion bash))",
        " bash|zsh|fish",
        common=(),
    )
    completion.add_argument("shell", metavar="SHELL", choices=SHELLS)
    _add_serve(command)
    _add_server(sub.choices, env)
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
        log_format=ns.log_format,
        initial=getattr(ns, "initial", False),
        relist_interval=getattr(ns, "relist_interval", settings.RELIST_INTERVAL),
        nri_socket=_nri_socket(ns),
        instance_id=getattr(ns, "instance_id", ""),
        timeout=getattr(ns, "timeout", settings.WAIT_TIMEOUT),
        target=getattr(ns, "target", ""),
        output=Format(getattr(ns, "output", Format.JSON.value)),
        shell=getattr(ns, "shell", ""),
        disclosure=Disclosure.with_extra(ns.show_annotation),
        schemes=schemes,
        server=getattr(ns, "server", None),
        service=_service(ns, parser),
    )


# --- `serve`, and `--server` for the commands a service answers ------------------------------

#: the commands that ask a running `ws-watcher serve` when given `--server`
SERVED = (Command.WATCH, Command.WAIT, Command.WAIT_STOP, Command.LS, Command.INSPECT)


def _add_serve(command: Callable[..., argparse.ArgumentParser]) -> None:
    serve = command(
        Command.SERVE,
        "serve the node's workspaces over HTTP (a unix socket; TCP if asked) until interrupted",
        " [--socket PATH] [--socket-group GROUP] [--listen [HOST:]PORT]"
        " [--metrics-listen [HOST:]PORT]",
    )
    serve.add_argument(
        "--socket",
        metavar="PATH",
        default=settings.SERVICE_SOCKET,
        help=f"the API's unix socket, mode {settings.SERVICE_SOCKET_MODE:o}; its directory is "
        "made if missing (default: %(default)s)",
    )
    serve.add_argument(
        "--socket-group",
        metavar="GROUP",
        type=_group,
        help="give the socket to this group (a name or a number): its members may connect",
    )
    serve.add_argument(
        "--listen",
        metavar="[HOST:]PORT",
        type=_endpoint("--listen"),
        help="also serve the API on TCP (only a port: on loopback). It has no authentication",
    )
    serve.add_argument(
        "--metrics-listen",
        metavar="[HOST:]PORT",
        type=_endpoint("--metrics-listen"),
        help="serve only /healthz, /readyz and /metrics on TCP here (for probes and "
        "Prometheus: no workspace data)",
    )
    _add_relist_interval(serve)
    _add_nri(serve)
    serve.epilog = (
        "The API: GET /v1/workspaces, /v1/workspaces/ID, /v1/workspaces/ID/wait?for=running|"
        "gone&timeout=60s, /v1/watch?since=N, /healthz, /readyz, /metrics (see the README). "
        "Ends on SIGINT/SIGTERM (exit 0), removing its socket."
    )


def _add_server(parsers: Mapping[str, argparse.ArgumentParser], env: Mapping[str, str]) -> None:
    for name in SERVED:
        parsers[name.value].add_argument_group("service").add_argument(
            "--server",
            metavar="SOCKET|URL",
            type=_nonempty("--server"),
            default=env.get(settings.SERVER_ENV) or None,
            help="ask this `ws-watcher serve` (its socket, or http://HOST:PORT) instead of "
            f"containerd; the service's own options apply (default: ${settings.SERVER_ENV})",
        )


def _group(text: str) -> int:
    """A group name or number, as its number (looked up now: a typo is exit 2)."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no group {text!r}") from None


def _endpoint(option: str) -> Callable[[str], settings.Endpoint]:
    def parse_arg(text: str) -> settings.Endpoint:
        try:
            return settings.check_listen(text, option)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_arg


def _service(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> settings.ServiceSettings:
    """`serve`'s settings (the defaults for any other command)."""
    if ns.command != Command.SERVE.value:
        return settings.ServiceSettings()
    try:
        return settings.ServiceSettings(
            socket=os.path.abspath(ns.socket),
            socket_group=ns.socket_group,
            listen=ns.listen,
            metrics_listen=ns.metrics_listen,
            disclosure=Disclosure.with_extra(ns.show_annotation),
        )
    except UsageError as exc:
        parser.error(str(exc))


# --- NRI beside the event stream (watch, serve) ---------------------------------------------


def _add_nri(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("NRI (containerd >= 1.7)")
    group.add_argument(
        "--nri-socket",
        metavar="PATH",
        help="observe containerd's NRI here too: workspaces known before containerd publishes "
        f"them (default: {settings.NRI_SOCKET} when --address is containerd's default; none "
        "otherwise, so that a watcher of another containerd never hears this one's)",
    )
    group.add_argument(
        "--no-nri", action="store_true", help="the event stream alone, even at the default address"
    )


def _nri_socket(ns: argparse.Namespace) -> str | None:
    if ns.command not in (Command.WATCH.value, Command.SERVE.value) or ns.no_nri:
        return None
    if ns.nri_socket is not None:
        return str(os.path.abspath(ns.nri_socket))
    return settings.NRI_SOCKET if ns.address == settings.ADDRESS else None
