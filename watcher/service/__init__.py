"""`ws-watcher serve`: one watcher per node, its state served over HTTP to other processes.

One concern per module:

* `protocol` — the API's contract, shared by the server and its client (`watcher.remote`):
  routes, query parameters, error codes and their statuses, the feed's own lines (pure);
* `feed` — the resumable feed: every change with a sequence number, a bounded history for
  followers that reconnect (pure);
* `fanout` — the feed kept in step with the watcher, and followers woken when it grows (trio);
* `asgi` — the little of ASGI the handlers need: a request, JSON answers, a stream, a
  client's disconnect as a cancellation;
* `api` — the routes and their handlers; `probes` — /healthz, /readyz, /metrics;
* `metrics` — the service's own metrics (its followers and what they lost, its long polls,
  its requests), scraped with the watcher's;
* `listeners` — the unix socket (mode, group, stale sockets) and TCP sockets;
* `server` — runs the watcher, the feed and hypercorn's trio worker over those sockets.

Importing this package loads nothing of the server (no hypercorn): the client imports
`watcher.service.protocol` from here.
"""
