"""The little of ASGI the API's handlers need: a parsed request, JSON answers, a stream of
lines, and a client's disconnect turned into a cancellation.

HTTP itself is hypercorn's (h11, h2); this module only speaks ASGI messages to it. Rules:

* a handler answers with `answer`/`answer_json` once, or opens a `LineStream`;
* a handler that waits runs inside `cancelled_on_disconnect(receive)`: a client that goes
  away cancels what it waited for (hypercorn tells us with an `http.disconnect` message);
* the mistakes of a request raise `Refusal` (its `code` says the status): the app turns it
  into an error body; anything else is a bug, logged, and a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from watcher.errors import UsageError
from watcher.wire import JSONValue, dumps

from .protocol import JSON_TYPE, LINES_TYPE, STATUS, ErrorCode, error_body

__all__ = [
    "Client",
    "LineStream",
    "Refusal",
    "Request",
    "answer",
    "answer_error",
    "answer_json",
    "cancelled_on_disconnect",
    "request_of",
]

Headers = Iterable[tuple[bytes, bytes]]
#: never cached: every answer is the node's state at that moment
_NO_STORE = (b"cache-control", b"no-store")


class Refusal(UsageError):
    """A request the API cannot answer as asked; `code` says how it is answered."""

    def __init__(self, code: ErrorCode, message: str, *, headers: Headers = ()) -> None:
        super().__init__(message)
        self.code = code
        self.headers = tuple(headers)


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    method: str
    #: the path's segments, each percent-decoded on its own (an id may hold an encoded "/")
    path: tuple[str, ...]
    query: Mapping[str, str] = field(default_factory=dict)
    #: header names in lower case (the last of repeated ones)
    headers: Mapping[str, str] = field(default_factory=dict)


def request_of(scope: HTTPScope) -> Request:
    """The request of an HTTP scope. Raises `Refusal` for a query that names a parameter
    twice (which one would count?) or a path that is not UTF-8."""
    raw = scope["raw_path"] or scope["path"].encode()
    try:
        path = tuple(unquote(part, errors="strict") for part in raw.decode("ascii").split("/"))
    except (UnicodeDecodeError, ValueError):
        raise Refusal(ErrorCode.BAD_REQUEST, "the path is not percent-encoded UTF-8") from None
    path = path[1:] if path[:1] == ("",) else path  # the leading "/"
    if len(path) > 1 and path[-1] == "":  # a trailing "/"
        path = path[:-1]
    query: dict[str, str] = {}
    for key, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
        if key in query:
            raise Refusal(ErrorCode.BAD_REQUEST, f"the query names {key!r} twice")
        query[key] = value
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    return Request(method=scope["method"], path=path, query=query, headers=headers)


async def answer(
    send: ASGISendCallable, status: int, body: bytes, content_type: str, headers: Headers = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
                _NO_STORE,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def answer_json(
    send: ASGISendCallable, obj: JSONValue, status: int = 200, headers: Headers = ()
) -> None:
    """`obj` as one line of JSON (with a final newline, for curl in a terminal)."""
    await answer(send, status, (dumps(obj) + "\n").encode("ascii"), JSON_TYPE, headers)


async def answer_error(
    send: ASGISendCallable, code: ErrorCode, message: str, headers: Headers = ()
) -> None:
    await answer_json(send, error_body(code, message), STATUS[code], headers)


class LineStream:
    """A streamed answer of JSON lines (chunked in HTTP/1.1): `open`, `write`..., `close`."""

    def __init__(self, send: ASGISendCallable) -> None:
        self._send = send

    async def open(self, headers: Headers = ()) -> None:
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", LINES_TYPE.encode()), _NO_STORE, *headers],
            }
        )

    async def write(self, lines: Iterable[bytes]) -> None:
        """Lines in one write (one chunk): a burst costs one system call, not one a line."""
        body = b"".join(lines)
        if body:
            await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def close(self) -> None:
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})


@dataclass(slots=True)
class Client:
    """Whether the client went away (its request's block was then cancelled)."""

    gone: bool = False


@asynccontextmanager
async def cancelled_on_disconnect(receive: ASGIReceiveCallable) -> AsyncIterator[Client]:
    """Run the block until it ends or the client disconnects; then `client.gone` is true.

    The request's own messages (its body: empty for our GETs) are read and dropped, so
    that the disconnect behind them is seen.
    """
    client = Client()
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            client.gone = True
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        yield client
        nursery.cancel_scope.cancel()
