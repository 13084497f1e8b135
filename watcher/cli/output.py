"""What the CLI prints besides JSON: the other forms of `watch`, `wait`, `ls` and `inspect`
(`-o yaml|wide|name`, `watch -o text`), the `ls` table and the demo's human-readable lines.

The JSON itself — field names and order, path maps, what the disclosure rule lets out — is
`watcher.wire`'s, the contract shared with the service's API and its client; it is
re-exported here for the commands. YAML is that JSON as a document; the tables, names and
text lines show ids, names, the PID and paths (mapped as the JSON maps them), never a label
or annotation map, so nothing the disclosure rule holds back.

Pure functions from records to strings: no I/O, no clock (the caller passes `now`), no trio.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Sequence

from watcher.pathmap import PathMap
from watcher.published import Change, Disconnected, Lagged, Synced, Workspace
from watcher.wire import (  # the JSON contract, shared with the service's API
    JSON,
    JSONValue,
    change_json,
    dumps,
    inspect_json,
    mapped,
    workspace_json,
)

__all__ = [
    "JSON",
    "Format",
    "JSONValue",
    "change_json",
    "dumps",
    "format_age",
    "inspect_json",
    "pretty_change",
    "render",
    "table",
    "workspace_json",
    "yaml_document",
]

SHORT_ID = 12
"""Characters of a container id in the table, as `docker ps` and `crictl ps` show them."""


# --- for people --------------------------------------------------------------------------


def format_age(seconds: float | None) -> str:
    """kubectl-style ages: 42s, 7m, 3h, 12d ("-" when unknown)."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


_HEADERS = ("INSTANCE", "POD", "CONTAINER", "PID", "STATE", "AGE")
#: `-o wide`: the same columns first (a script that cuts fields keeps working), then these
_WIDE_HEADERS = (*_HEADERS, "WORKSPACE", "OWNER", "SCHEME", "IMAGE")


def _cell(value: str | None) -> str:
    """A table cell is one word: a blank or a line break in a value (label values come from
    whoever made the pod) would shift the columns or forge a row."""
    if not value:
        return "-"
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in value)


def table(workspaces: Iterable[Workspace], now: float, *, wide: bool = False) -> str:
    """The `ls` table: a header and one aligned row per workspace, without a final newline.

    `wide` adds the workspace and owner ids, the scheme and the image (`-o wide`).
    """
    headers = _WIDE_HEADERS if wide else _HEADERS
    rows: list[tuple[str, ...]] = [headers]
    for ws in workspaces:
        row: tuple[str | None, ...] = (
            ws.instance_id,
            f"{ws.pod_namespace}/{ws.pod_name}",
            ws.container_id[:SHORT_ID],
            "-" if ws.pid is None else str(ws.pid),
            ws.state.value,
            format_age(None if ws.created_at is None else now - ws.created_at),
        )
        if wide:
            row += (ws.workspace_id, ws.owner_id, ws.scheme, ws.image)
        rows.append(tuple(_cell(value) for value in row))
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


class Format(enum.Enum):
    """How a command prints what it found (`-o`)."""

    #: `ls` without `-o`: the table for people
    TABLE = "table"
    JSON = "json"
    #: a YAML document per object
    YAML = "yaml"
    #: the table with more columns
    WIDE = "wide"
    #: one instance id per line, for `xargs` and shell loops
    NAME = "name"
    #: `watch -o text`: a line for people per change (`pretty_change`)
    TEXT = "text"


def yaml_document(obj: JSON) -> str:
    """One YAML document (`---` first), the keys in the JSON contract's order, no final
    newline. ASCII only and no line folding, as the JSON lines."""
    import yaml  # only for `-o yaml`: every other command starts without it

    text: str = yaml.safe_dump(
        obj, sort_keys=False, explicit_start=True, allow_unicode=False, width=float("inf")
    )
    return text.rstrip("\n")


def render(
    found: Sequence[Workspace],
    fmt: Format,
    *,
    now: float,
    as_json: Callable[[Workspace], JSON],
    array: bool,
) -> list[str]:
    """The lines that print `found` as `fmt` says.

    `as_json` makes each object of the JSON and YAML forms (`workspace_json`, or
    `inspect_json` with the task and image). `array`: JSON is one line holding an array
    (`ls`), else one line per object (`wait`, `inspect`).
    """
    if fmt is Format.JSON:
        objects: list[JSONValue] = [as_json(ws) for ws in found]
        return [dumps(objects)] if array else [dumps(obj) for obj in objects]
    if fmt is Format.YAML:
        return [yaml_document(as_json(ws)) for ws in found]
    if fmt is Format.NAME:
        return [_cell(ws.instance_id) for ws in found]
    if fmt in (Format.TABLE, Format.WIDE):
        return [table(found, now, wide=fmt is Format.WIDE)]
    raise ValueError(f"workspaces are not printed as {fmt.value}")


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def pretty_change(change: Change | Lagged, path_map: PathMap | None = None) -> str:
    """A `watch` line for people: time, event, instance, pod and what the event tells."""
    if isinstance(change, Lagged):
        return f"{_clock(change.ts)}  {'lagged':<12}  missed {change.missed} changes"
    if isinstance(change, Synced):
        return f"{_clock(change.ts)}  {'synced':<12}  {change.workspaces} workspaces"
    if isinstance(change, Disconnected):
        return f"{_clock(change.ts)}  {'disconnected':<12}  {change.error}"
    ws = change.workspace
    pm = path_map or PathMap()
    event = change.kind.value
    head = (
        f"{_clock(change.ts)}  {event:<12}  {ws.instance_id:<14}  "
        f"{ws.pod_namespace}/{ws.pod_name}  container {ws.container_id[:SHORT_ID]}"
    )
    if event == "created":
        return f"{head}  ({ws.scheme}: workspace {ws.workspace_id}, owner {ws.owner_id})"
    if event == "running":
        return f"{head}  pid {ws.pid}  upperdir {mapped(ws.upperdir, pm)}"
    if event == "exited":
        return f"{head}  exit status {ws.exit_status}"
    return head
