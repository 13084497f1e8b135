"""What may leave the process: the rule every printed map of strings goes through.

Annotations carry credentials in the wild: Gitpod puts the workspace owner's bearer token in
the pod annotation `gitpod/ownerToken`, and operators put API keys, registry auth and
pre-signed URLs in annotations too. A node daemon's output ends up in log pipelines readable
by many, so nothing is printed unless it is known to be harmless:

* **annotations** are printed only for keys on an allow-list (`DEFAULT_ANNOTATIONS`, which
  the user may extend with exact keys or `prefix*` patterns); every other annotation is left
  out, key and value;
* **any key that looks like a credential** (a word such as token, secret, password, auth,
  key, cookie in it: `ownerToken`, `db-password`, `x-api-key`) is never printed, whatever the
  allow-list says, in annotations, labels and image metadata alike.

Environment variables are never read in the first place (the decode module skips them).

Pure: no I/O. The CLI builds one `Disclosure` from its options; the library's published
records keep everything (in-process code may need it), but their `repr` hides annotations so
a logged record leaks nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import UsageError

__all__ = [
    "DEFAULT",
    "DEFAULT_ANNOTATIONS",
    "Disclosure",
    "DisclosureError",
    "check_entry",
    "looks_like_credential",
    "without_credentials",
]

#: Annotations that tell an operator something and carry nothing secret: the kubelet's
#: bookkeeping on containers and pods, and Gitpod's public workspace coordinates.
#: Deliberately absent: handler and initializer specs (`…preStopHandler`,
#: `gitpod/contentInitializer`, `gitpod/imageSpec`), which embed commands, URLs and tokens.
DEFAULT_ANNOTATIONS: tuple[str, ...] = (
    "io.kubernetes.container.hash",
    "io.kubernetes.container.restartCount",
    "io.kubernetes.container.terminationMessagePath",
    "io.kubernetes.container.terminationMessagePolicy",
    "io.kubernetes.pod.terminationGracePeriod",
    "kubernetes.io/config.seen",
    "kubernetes.io/config.source",
    "gitpod/id",
    "gitpod/servicePrefix",
    "gitpod/url",
)

#: Words that make a key look like a credential. Compared with the key's whole words (split at
#: punctuation and camelCase): `ownerToken` and `x-api-key` match; `monkey` and `authorName`
#: do not.
_CREDENTIAL_WORDS = frozenset(
    {
        "token", "tokens", "secret", "secrets", "password", "passwords", "passwd", "pwd",
        "passphrase", "credential", "credentials", "creds", "auth", "authorization",
        "apikey", "key", "keys", "privatekey", "cookie", "cookies", "session", "bearer",
        "jwt", "otp", "signature", "sig", "salt", "kubeconfig", "dockerconfigjson",
    }
)  # fmt: skip
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def looks_like_credential(key: str) -> bool:
    """True when a word of `key` names a credential (`gitpod/ownerToken`, `x-api-key`)."""
    return any(word.lower() in _CREDENTIAL_WORDS for word in _WORD.findall(key))


class DisclosureError(UsageError, ValueError):
    """An allow-list entry that can never be honoured (empty, or a credential's key)."""


@dataclass(frozen=True, slots=True)
class Disclosure:
    """Which annotation keys may be printed: exact keys and `prefix*` patterns.

    >>> d = Disclosure.with_extra(["example.com/*"])
    >>> d.annotations({"example.com/team": "a", "gitpod/ownerToken": "t", "other": "x"})
    {'example.com/team': 'a'}
    """

    exact: frozenset[str]
    prefixes: tuple[str, ...] = ()

    @classmethod
    def with_extra(cls, extra: Iterable[str] = (), *, defaults: bool = True) -> Disclosure:
        """The default allow-list (unless `defaults` is False) plus `extra` entries.

        Raises:
            DisclosureError: an entry is empty, a bare `*`, or names a credential-like key
                (it would never be printed: better to say so than to ignore it).
        """
        exact: set[str] = set(DEFAULT_ANNOTATIONS if defaults else ())
        prefixes: list[str] = []
        for entry in extra:
            check_entry(entry)
            if entry.endswith("*"):
                prefixes.append(entry[:-1])
            else:
                exact.add(entry)
        return cls(frozenset(exact), tuple(prefixes))

    def allows(self, key: str) -> bool:
        if looks_like_credential(key):
            return False
        return key in self.exact or any(key.startswith(p) for p in self.prefixes)

    def annotations(self, values: Mapping[str, str]) -> dict[str, str]:
        """The annotations that may be printed, in their order."""
        return {k: v for k, v in values.items() if self.allows(k)}


def check_entry(entry: str) -> str:
    """Validate one allow-list entry (`KEY` or `PREFIX*`); returns it unchanged."""
    stem = entry[:-1] if entry.endswith("*") else entry
    if not stem.strip():
        raise DisclosureError(f"not an annotation key or prefix: {entry!r}")
    if "*" in stem:
        raise DisclosureError(f"{entry!r}: '*' is allowed only at the end (a prefix)")
    if looks_like_credential(stem):
        raise DisclosureError(
            f"annotation {entry!r} looks like a credential; such annotations are never printed"
        )
    return entry


def without_credentials(values: Mapping[str, str]) -> dict[str, str]:
    """`values` without the keys that look like credentials (labels, image metadata)."""
    return {k: v for k, v in values.items() if not looks_like_credential(k)}


DEFAULT = Disclosure.with_extra()
"""The default rule: the default allow-list, nothing else."""
