"""Durations as people write them: `60s`, `2m`, `1h30m`, `500ms`, or a plain number of seconds.

Pure text → seconds (core: no I/O). The grammar is Go's `time.ParseDuration` (what kubectl,
ctr and crictl accept) less its sub-millisecond units: one or more `<number><unit>` with the
units `h`, `m`, `s`, `ms`, added up; a plain number is seconds, as `--timeout 2.5` always was.
Whether the value is allowed (positive, or 0 for "off") is `settings.check_seconds`'s rule,
so the command line and the library refuse the same values in the same words.

Anything else is a `UsageError` whose message is one short line: it names the mistake and
quotes at most `QUOTED` characters of its `repr`, whatever was typed.
"""

from __future__ import annotations

import math
import re
from typing import Final

from .errors import UsageError
from .settings import check_seconds

__all__ = ["MAX_LENGTH", "UNITS", "parse_seconds"]

#: seconds per unit; `ms` is tried before `m` (see `_PART`)
UNITS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
#: no honest duration is longer (`1h59m59s999ms` is 13); longer text is refused unread
MAX_LENGTH: Final = 64
#: how many characters of a bad value's `repr` an error message quotes (an escape such as
#: `\U0001eebc` is ten of them: the cut is made after escaping, so the line stays short)
QUOTED: Final = 40
#: ASCII digits only: `\d` and `float` also take other scripts' digits, which nobody means
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_PART = re.compile(rf"({_NUMBER})(ms|h|m|s)")
_DURATION = re.compile(rf"([+-]?)((?:{_NUMBER}(?:ms|h|m|s))+)")
_PLAIN = re.compile(rf"[+-]?(?:{_NUMBER}(?:e[+-]?[0-9]+)?|nan|inf|infinity)")  # seen lowercased

EXAMPLES: Final = "60s, 2m, 1h30m, 500ms"


def _quoted(text: str) -> str:
    shown = repr(text)
    if len(shown) <= QUOTED:
        return shown
    return f"{shown[:QUOTED]}... ({len(text)} characters)"


def seconds_of(text: str) -> float:
    """The seconds `text` says, unchecked (may be negative, 0, inf or NaN); `UsageError` when
    it is neither a number nor a duration."""
    value = text.strip()
    if len(value) <= MAX_LENGTH:
        if _PLAIN.fullmatch(value.lower()):
            return float(value)  # nan and inf too: `check_seconds` names them
        if match := _DURATION.fullmatch(value):
            sign, parts = match.groups()
            total = math.fsum(float(n) * UNITS[u] for n, u in _PART.findall(parts))
            return -total if sign == "-" else total
    raise UsageError(f"not a number of seconds or a duration ({EXAMPLES}): {_quoted(text)}")


def parse_seconds(name: str, text: str, *, zero: bool = False) -> float:
    """`text` as seconds, checked as `settings.check_seconds(name, ..., zero=zero)` checks.

    >>> parse_seconds("the timeout", "1h30m")
    5400.0
    >>> parse_seconds("the timeout", "2.5")
    2.5
    """
    # + 0.0: "-0s" is 0 seconds, not a -0 that prints as "-0"
    return check_seconds(name, seconds_of(text), zero=zero) + 0.0
