"""`/healthz`, `/readyz`, `/metrics`: what a kubelet's probes and Prometheus ask.

Served on the API's sockets and, alone, on `--metrics-listen`: none of them says anything
about a workspace, so they may be reachable where the API is not.

* `/healthz` — 200 whenever the process and its trio loop answer: that this handler ran is
  the proof (a liveness probe restarts a wedged process, never one that merely lost
  containerd);
* `/readyz` — 200 while the watcher is connected to containerd and synced
  (`Watcher.is_ready()`), else 503: a readiness probe takes the pod out of service while
  containerd is down and back in once the watcher has resynced;
* `/metrics` — the watcher's registry in Prometheus' text format (OpenMetrics when the
  scraper's `Accept` asks for it): `watcher.metrics.render`.
"""

from __future__ import annotations

from hypercorn.typing import ASGISendCallable

from watcher.metrics import render
from watcher.watcher import Watcher
from watcher.wire import JSON

from .asgi import Request, answer, answer_json
from .protocol import STATUS, ErrorCode, error_body

__all__ = ["healthz", "metrics", "readyz"]


async def healthz(watcher: Watcher, request: Request, send: ASGISendCallable) -> None:
    await answer_json(send, {"ok": True})


async def readyz(watcher: Watcher, request: Request, send: ASGISendCallable) -> None:
    if await watcher.is_ready():
        await answer_json(send, {"ready": True})
        return
    code = ErrorCode.NOT_READY
    body: JSON = {
        "ready": False,
        **error_body(code, "not connected to containerd, or not synced yet"),
    }
    await answer_json(send, body, STATUS[code])


async def metrics(watcher: Watcher, request: Request, send: ASGISendCallable) -> None:
    body, content_type = render(watcher.metrics, request.headers.get("accept"))
    await answer(send, 200, body, content_type)
