"""Logs on stderr, for people (`--log-format text`) or for log pipelines (`json`).

`json` writes one object per record and line — `ts` (seconds since the epoch, a float, as
the `ts` of `watch` lines), `level`, `logger`, `message`, and `exception` when the record
carries one — which Fluent Bit, Vector or Loki take without a parsing rule. What a record
says is the library's business; no secret reaches one (records' `repr` leaves annotations
out, and nothing logs the environment), and this module adds nothing to it.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Final

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "configure", "stderr_handler"]

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One line of JSON per record (ASCII only: any consumer's decoder reads it)."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            obj["exception"] = record.exc_text
        return json.dumps(obj, ensure_ascii=True)


def stderr_handler(fmt: str = "text") -> logging.Handler:
    """A handler that writes records to stderr in `fmt` (one of `LOG_FORMATS`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure(level: str, fmt: str = "text") -> None:
    """Send the process's logs to stderr at `level` in `fmt`."""
    # a no-op where the root logger has handlers already: a program (or pytest) that calls
    # `main` keeps its own logging
    logging.basicConfig(level=level.upper(), handlers=[stderr_handler(fmt)])
