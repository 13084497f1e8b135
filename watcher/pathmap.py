"""Host paths and where this process sees them: `PathMap` for a watcher in a pod.

Paths containerd and the mount table report are in the host's mount namespace; a watcher
whose pod mounts the host's directories elsewhere (`/var/lib/containerd` at
`/host/containerd`) rewrites them by prefix before handing them out.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from watcher.errors import UsageError

__all__ = ["PathMap", "PathMapError"]


class PathMapError(UsageError, ValueError):
    """A `HOST=LOCAL` path mapping that cannot be used (a configuration mistake)."""


@dataclass(frozen=True, slots=True)
class PathMap:
    """Host path prefixes and where this process sees them, e.g. `/var/lib/containerd` at
    `/host/containerd` in a watcher pod.

    `map` rewrites a host path to a local one, `unmap` the reverse; the longest matching
    prefix wins and prefixes only match whole path components, so `/var/lib/containerd2`
    is not under `/var/lib/containerd`. A path under no prefix is returned as it is, which
    is right when the watcher shares the host's mount namespace (the empty map).
    """

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, specs: Iterable[str]) -> PathMap:
        """Build a map from `HOST=LOCAL` strings (as given on the command line).

        The first `=` separates the two sides. Both must be absolute; they are
        normalised (`/a/b/` → `/a/b`).

        Raises:
            PathMapError: a spec without `=`, with an empty or relative side, or a host or
                local prefix given twice (which would make `map` or `unmap` ambiguous).
        """
        pairs: list[tuple[str, str]] = []
        for spec in specs:
            host, sep, local = spec.partition("=")
            if not sep:
                raise PathMapError(f"path mapping {spec!r} is not HOST=LOCAL")
            pairs.append((_absolute(host, spec), _absolute(local, spec)))
        for side, name in ((0, "host"), (1, "local")):
            seen = [pair[side] for pair in pairs]
            duplicates = sorted({path for path in seen if seen.count(path) > 1})
            if duplicates:
                raise PathMapError(f"{name} prefix mapped more than once: {duplicates[0]}")
        return cls(tuple(pairs))

    def map(self, path: str) -> str:
        """Rewrite a host path to the local path that shows the same file."""
        return _rewrite(path, self.pairs)

    def unmap(self, path: str) -> str:
        """Rewrite a local path back to the host's path for it."""
        return _rewrite(path, tuple((local, host) for host, local in self.pairs))


def _absolute(path: str, spec: str) -> str:
    if not path:
        raise PathMapError(f"path mapping {spec!r} has an empty side")
    if not path.startswith("/"):
        raise PathMapError(f"path mapping {spec!r}: {path!r} is not absolute")
    return "/" + posixpath.normpath(path).lstrip("/")


def _rewrite(path: str, pairs: tuple[tuple[str, str], ...]) -> str:
    best: tuple[str, str] | None = None
    for source, target in pairs:
        if _is_under(path, source) and (best is None or len(source) > len(best[0])):
            best = (source, target)
    if best is None:
        return path
    source, target = best
    rest = path[len(source) :].lstrip("/")
    return posixpath.join(target, rest) if rest else target


def _is_under(path: str, prefix: str) -> bool:
    if prefix == "/":
        return path.startswith("/")
    return path == prefix or path.startswith(prefix + "/")
