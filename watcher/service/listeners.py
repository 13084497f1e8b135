"""The sockets `ws-watcher serve` listens on: made here, handed to hypercorn by descriptor.

Made here rather than by hypercorn (`bind = "unix:..."`) for what a node service needs:

* the unix socket gets its mode (0660) and group *before* anyone can connect: it is bound
  under a temporary name, given its mode and group, listening, and only then renamed over
  the final path (an atomic replace: a client never finds a socket with the wrong mode,
  nor none at all while a stale one is replaced);
* a stale socket left by a killed server is replaced; a live one (another server answers
  on it) and anything that is not a socket are left alone, with a `UsageError` saying so;
* the socket file is removed on exit — only if it is still ours (a newer server may have
  replaced it);
* mistakes (a port in use, an address not on this node, a group we may not give the socket
  to) are `UsageError`s with one line each, before the watcher connects anywhere;
* the backlog is large: a hundred clients connecting at once must queue, not be refused (a
  unix socket refuses a non-blocking connect at once when its backlog is full).

`cut_connections`: hypercorn writes to a client with its cancellation shielded, so a
client that stops reading (its socket buffer full) holds its connection's task forever —
and with it the server's shutdown. At shutdown we shut the connections of our listeners
down ourselves: the blocked write fails, and the task ends.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from watcher.errors import UsageError
from watcher.settings import SERVICE_BACKLOG, SERVICE_DIR_MODE, Endpoint, ServiceSettings

__all__ = ["Listener", "Listeners", "bound", "cut_connections"]

log = logging.getLogger("watcher.service")

_LOOPBACK = ("127.", "::1", "localhost")


@dataclass(slots=True)
class Listener:
    """One listening socket; `name` as people read it (`unix:/run/...`, `127.0.0.1:9102`)."""

    sock: socket.socket
    name: str
    #: the local address its connections report (`getsockname()`): how they are found
    local: object


@dataclass(slots=True)
class Listeners:
    """The API's listeners (the unix socket first), and the metrics-only one if asked."""

    api: list[Listener] = field(default_factory=list)
    metrics: list[Listener] = field(default_factory=list)

    def all(self) -> list[Listener]:
        return [*self.api, *self.metrics]


@contextmanager
def bound(settings: ServiceSettings) -> Iterator[Listeners]:
    """Every socket `settings` asks for, listening; closed (and the unix socket's file
    removed, if still ours) when the block ends. Raises `UsageError` for one that cannot be."""
    made = Listeners()
    inode: tuple[int, int] | None = None
    try:
        unix, inode = _unix(settings)
        made.api.append(unix)
        if settings.listen is not None:
            made.api.append(_tcp(settings.listen, "--listen", api=True))
        if settings.metrics_listen is not None:
            made.metrics.append(_tcp(settings.metrics_listen, "--metrics-listen", api=False))
        yield made
    finally:
        for listener in made.all():
            listener.sock.close()
        if inode is not None:
            _remove_if_ours(settings.socket, inode)


def _unix(settings: ServiceSettings) -> tuple[Listener, tuple[int, int]]:
    path = settings.socket
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, mode=SERVICE_DIR_MODE, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot make the socket's directory {parent}: {exc.strerror}") from exc
    _check_replaceable(path)
    temporary = f"{path}.{os.getpid()}.new"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _unlink_quietly(temporary)  # left by a server of our pid that was killed (a container)
        sock.bind(temporary)
        if settings.socket_group is not None:
            try:
                os.chown(temporary, -1, settings.socket_group)
            except OSError as exc:
                raise UsageError(
                    f"cannot give the socket to group {settings.socket_group}: {exc.strerror}"
                ) from exc
        os.chmod(temporary, settings.socket_mode)
        sock.listen(SERVICE_BACKLOG)
        local = sock.getsockname()
        os.rename(temporary, path)  # atomic: mode and group are right from the first connect
        info = os.stat(path)
    except OSError as exc:
        sock.close()
        _unlink_quietly(temporary)
        raise UsageError(f"cannot listen on {path}: {exc.strerror}") from exc
    except BaseException:
        sock.close()
        _unlink_quietly(temporary)
        raise
    return Listener(sock, f"unix:{path}", local), (info.st_dev, info.st_ino)


def _check_replaceable(path: str) -> None:
    """A stale socket may be replaced; a live one or anything else may not."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise UsageError(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)  # a live server with a full backlog makes connect wait
    try:
        probe.connect(path)
    except TimeoutError:
        pass  # it listens, too busy to accept: in use all the same
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            log.info("replacing the stale socket %s", path)
            return
        raise UsageError(f"cannot tell whether {path} is in use: {exc.strerror}") from exc
    finally:
        probe.close()
    raise UsageError(f"another server is listening on {path}")


def _tcp(endpoint: Endpoint, option: str, *, api: bool) -> Listener:
    host, port = endpoint
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise UsageError(f"{option} {host}:{port}: {exc.strerror}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(SERVICE_BACKLOG)
    except OSError as exc:
        sock.close()
        raise UsageError(f"{option} {host}:{port}: {exc.strerror}") from exc
    local = sock.getsockname()
    shown = f"[{local[0]}]:{local[1]}" if family == socket.AF_INET6 else f"{local[0]}:{local[1]}"
    if api and not host.startswith(_LOOPBACK):  # the probes tell nothing about a workspace
        log.warning(
            "%s %s is reachable from off the node; the API has no authentication of its own",
            option,
            shown,
        )
    return Listener(sock, shown, local)


def cut_connections(listeners: list[Listener]) -> int:
    """Shut down every connection accepted on `listeners` (found among this process's file
    descriptors by their local address); how many. For shutdown: see the module's doc."""
    wanted = {(listener.sock.family, _key(listener.local)) for listener in listeners}
    cut = 0
    for fd in _socket_fds():
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue  # closed meanwhile
        try:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                continue  # a listener, ours or not
            if (sock.family, _key(sock.getsockname())) in wanted:
                sock.shutdown(socket.SHUT_RDWR)  # the original fd's writes fail from now on
                cut += 1
        except OSError:
            pass  # gone meanwhile, or not connected
        finally:
            sock.close()  # our duplicate only
    return cut


def _key(local: object) -> object:
    # an IPv6 address comes with flow info and scope id; the host and port are enough
    return tuple(local[:2]) if isinstance(local, tuple) else local


def _socket_fds() -> list[int]:
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                fds.append(int(name))
        except OSError:
            continue  # the directory's own descriptor, or one closed meanwhile
    return fds


def _remove_if_ours(path: str, inode: tuple[int, int]) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if (info.st_dev, info.st_ino) == inode:
        _unlink_quietly(path)
    else:
        log.info("%s is another server's socket now; leaving it", path)


def _unlink_quietly(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)
