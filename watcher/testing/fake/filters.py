"""containerd's filter language, enough of it for the fake containerd (Events.Subscribe,
Containers.List and ListStream take such filters).

containerd filters objects (events, containers) with strings such as::

    namespace=="k8s.io"
    topic~="^/tasks/",namespace=="k8s.io"
    labels."io.cri-containerd.kind"==sandbox

A filter string is a comma-separated list of selectors that must *all* match; the strings of
one request are alternatives (any may match); no strings at all matches everything. A selector
is `fieldpath [op value]` with op `==`, `!=` or `~=` (a regular expression, searched); without
an operator it tests that the field is present. Field path components and values may be
quoted (`"..."` with Go/JSON escapes, or `/.../` for regular expressions as containerd allows).

The fake evaluates these against an *adaptor*: a function from a field path to the field's
value, `None` when the object has no such field, or `UNSUPPORTED` when the fake does not model
the field — such a selector is accepted and ignored (it matches), so a watcher that filters on
something exotic still receives its events instead of silently nothing.

Pure: no grpc, no I/O. Parse errors raise `FilterError` (the fake answers INVALID_ARGUMENT,
as containerd does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final


class FilterError(ValueError):
    """A filter string containerd would reject (the fake answers INVALID_ARGUMENT)."""


class Unsupported:
    """Type of `UNSUPPORTED`: the adaptor does not model this field."""

    def __repr__(self) -> str:
        return "UNSUPPORTED"


#: what an adaptor returns for a field it does not model: the selector then matches
UNSUPPORTED: Final = Unsupported()

Adaptor = Callable[[tuple[str, ...]], "str | Unsupported | None"]

_OPERATORS = ("==", "!=", "~=")
_FIELD_START = re.compile(r"[A-Za-z_]")
_FIELD_CHAR = re.compile(r"[A-Za-z0-9_\-]")


@dataclass(frozen=True, slots=True)
class Selector:
    """One `fieldpath [op value]` term."""

    path: tuple[str, ...]
    op: str | None
    value: str = ""
    pattern: re.Pattern[str] | None = None

    def matches(self, adaptor: Adaptor) -> bool:
        found = adaptor(self.path)
        if isinstance(found, Unsupported):
            return True
        if self.op is None:
            return found is not None
        if self.op == "==":
            return found == self.value
        if self.op == "!=":
            return found != self.value
        assert self.pattern is not None
        return found is not None and self.pattern.search(found) is not None


@dataclass(frozen=True, slots=True)
class Filter:
    """Alternatives of conjunctions: `matches` if any alternative has all selectors true."""

    alternatives: tuple[tuple[Selector, ...], ...]

    def matches(self, adaptor: Adaptor) -> bool:
        if not self.alternatives:
            return True
        return any(all(s.matches(adaptor) for s in alt) for alt in self.alternatives)


#: the filter of a request without filter strings
MATCH_ALL: Final = Filter(())


def parse_all(filters: Sequence[str]) -> Filter:
    """The filter of a request's `filters` field: any string may match; empty strings are
    skipped (containerd ignores them too)."""
    return Filter(tuple(parse(f) for f in filters if f.strip()))


def parse(text: str) -> tuple[Selector, ...]:
    """One filter string → its selectors (all must match)."""
    return _Parser(text).selectors()


class _Parser:
    """A hand-written scanner: the grammar is four rules, a parser generator would be noise."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> FilterError:
        return FilterError(f"filter {self.text!r}: {why} at offset {self.pos}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.text)

    def selectors(self) -> tuple[Selector, ...]:
        found = [self.selector()]
        while not self.at_end():
            if self.text[self.pos] != ",":
                raise self.fail("expected ','")
            self.pos += 1
            found.append(self.selector())
        return tuple(found)

    def selector(self) -> Selector:
        path = [self.field()]
        while self.pos < len(self.text) and self.text[self.pos] == ".":
            self.pos += 1
            path.append(self.field())
        self.skip_space()
        op = self.text[self.pos : self.pos + 2]
        if op not in _OPERATORS:
            return Selector(tuple(path), None)
        self.pos += 2
        value = self.value()
        pattern = None
        if op == "~=":
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise self.fail(f"bad regular expression {value!r} ({exc})") from None
        return Selector(tuple(path), op, value, pattern)

    def field(self) -> str:
        self.skip_space()
        if self.pos < len(self.text) and self.text[self.pos] == '"':
            return self.quoted()
        start = self.pos
        if start >= len(self.text) or not _FIELD_START.match(self.text[start]):
            raise self.fail("expected a field name")
        self.pos += 1
        while self.pos < len(self.text) and _FIELD_CHAR.match(self.text[self.pos]):
            self.pos += 1
        return self.text[start : self.pos]

    def value(self) -> str:
        self.skip_space()
        if self.pos < len(self.text) and self.text[self.pos] in '"/':
            return self.quoted()
        start = self.pos
        while self.pos < len(self.text) and not (
            self.text[self.pos].isspace() or self.text[self.pos] == ","
        ):
            self.pos += 1
        if start == self.pos:
            raise self.fail("expected a value")
        return self.text[start : self.pos]

    def quoted(self) -> str:
        quote = self.text[self.pos]
        end = self.pos + 1
        while end < len(self.text) and self.text[end] != quote:
            end += 2 if self.text[end] == "\\" else 1
        if end >= len(self.text):
            raise self.fail("unterminated quote")
        raw = self.text[self.pos : end + 1]
        self.pos = end + 1
        if quote == "/":
            return raw[1:-1].replace("\\/", "/")
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise self.fail(f"bad quoted string {raw}") from None
        assert isinstance(decoded, str)
        return decoded


__all__ = [
    "MATCH_ALL",
    "UNSUPPORTED",
    "Adaptor",
    "Filter",
    "FilterError",
    "Selector",
    "Unsupported",
    "parse",
    "parse_all",
]
