"""The API against a real containerd: it answers as the CLI does, waits long-poll and are
cancelled by a client that leaves, errors are JSON with a code, nothing secret leaves, and
`/readyz` follows containerd.

The service runs in the test's process (`serve`), so its counters (`Api.waits`,
`Api.followers`) and the watcher's readiness are awaited as events, never slept for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import httpx
import trio

from watcher.service.server import Serving
from watcher.testing import ContainerSpec, Pod, Pods, PrivateContainerd, mk1_labels, mk2_labels
from watcher.testing.watching import run

DEADLINE = 20.0


def workspace_pod(pods: Pods, iid: str, *, mk: int = 2, **kwargs: Any) -> Pod:
    labels = (mk2_labels if mk == 2 else mk1_labels)(iid, f"ws-{iid}", f"owner-{iid}")
    return pods.run_pod(f"ws-{iid}", labels={**labels, **kwargs.pop("labels", {})}, **kwargs)


async def cli(containerd: PrivateContainerd, *args: str) -> tuple[int, str, str]:
    """`ws-watcher ARGS --address <rig>` run to its end: status, stdout, stderr."""
    done = await trio.run_process(
        [sys.executable, "-m", "watcher", *args, "--address", containerd.address],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def lines_until(
    lines: AsyncIterator[str], done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """JSON lines of a stream until one satisfies `done` (that one last), with a deadline."""
    seen = []
    with trio.fail_after(DEADLINE):
        async for text in lines:
            seen.append(json.loads(text))
            if done(seen[-1]):
                return seen
    raise AssertionError(f"the stream ended first: {seen}")


def synced(obj: dict[str, Any]) -> bool:
    return obj["event"] == "synced"


async def test_list_get_wait_and_watch_answer_as_the_cli_does(
    pods: Pods, containerd: PrivateContainerd, serve: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    a = await run(workspace_pod, pods, "api-a")
    await run(workspace_pod, pods, "api-b", mk=1)
    await run(pods.run_pod, "web-0", labels={"app": "web"})  # not a workspace
    await serve()

    listed = (await http.get("/v1/workspaces")).json()
    status, out, _ = await cli(containerd, "ls", "-o", "json")
    assert status == 0
    assert listed == json.loads(out)
    assert [ws["instance_id"] for ws in listed] == ["api-a", "api-b"]

    got = (await http.get("/v1/workspaces/api-a")).json()
    status, out, _ = await cli(containerd, "inspect", "api-a")
    assert (status, got) == (0, json.loads(out))
    assert got["task_info"]["status"] == "running" and got["image_info"]["name"]
    by_container = (await http.get(f"/v1/workspaces/{a.containers['workspace']}")).json()
    assert by_container == got
    # without the task and image (no call to containerd): the object `ls` lists
    alone = (await http.get("/v1/workspaces/api-a", params={"details": "0"})).json()
    assert alone == listed[0]

    waited = (await http.get("/v1/workspaces/api-a/wait", params={"for": "running"})).json()
    status, out, _ = await cli(containerd, "wait", "api-a")
    assert (status, waited) == (0, json.loads(out))

    async with http.stream("GET", "/v1/watch", params={"initial": "1"}) as response:
        served = await lines_until(response.aiter_lines(), synced)
    printed = await _watch_lines_until_synced(containerd)
    # the same lines, but for the feed's `seq` and `ts` (when each watcher learned it)
    for line in (*served, *printed):
        line.pop("seq", None)
        line.pop("ts")
    assert served == printed


async def _watch_lines_until_synced(containerd: PrivateContainerd) -> list[dict[str, Any]]:
    """`ws-watcher watch --initial`'s lines up to its first `synced`, then SIGTERM."""
    argv = [sys.executable, "-m", "watcher", "watch", "--initial", "--address", containerd.address]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(trio.run_process, argv, stdout=subprocess.PIPE, check=False)
        )
        assert process.stdout is not None
        buffered = b""
        seen: list[dict[str, Any]] = []
        with trio.fail_after(DEADLINE):
            while not seen or not synced(seen[-1]):
                chunk = await process.stdout.receive_some()
                assert chunk, "watch ended its output"
                buffered += chunk
                *complete, buffered = buffered.split(b"\n")
                seen += [json.loads(text) for text in complete]
        process.terminate()
    return seen


async def test_a_wait_long_polls_until_the_workspace_runs_then_until_it_is_gone(
    pods: Pods, serve: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    serving: Serving = await serve()
    answers: dict[str, httpx.Response] = {}

    async def wait(name: str, params: dict[str, str]) -> None:
        answers[name] = await http.get("/v1/workspaces/api-w/wait", params=params)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "running", {"timeout": "30s"})
        with trio.fail_after(DEADLINE):
            await serving.api.waits.wait_value(1)  # pending before the pod exists
        pod = await run(workspace_pod, pods, "api-w")
    running = answers["running"]
    assert running.status_code == 200
    body = running.json()
    assert (body["instance_id"], body["state"]) == ("api-w", "running")
    assert body["container_id"] == pod.containers["workspace"] and body["pid"] > 0

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "gone", {"for": "gone", "timeout": "1m"})
        with trio.fail_after(DEADLINE):
            await serving.api.waits.wait_value(1)
        await run(pods.remove_pod, pod)
    assert answers["gone"].status_code == 200
    assert answers["gone"].json() == {"instance_id": "api-w", "gone": True}
    # gone already: at once
    at_once = await http.get("/v1/workspaces/api-w/wait", params={"for": "gone"})
    assert at_once.json() == {"instance_id": "api-w", "gone": True}


async def test_a_wait_that_times_out_is_a_504_with_its_own_code(
    serve: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    await serve()
    response = await http.get("/v1/workspaces/never/wait", params={"timeout": "200ms"})
    assert response.status_code == 504
    assert response.json() == {
        "error": "timed out after 0.2s waiting for instance never to run",
        "code": "timeout",
    }
    stop = await http.get("/v1/workspaces/never/wait", params={"for": "gone", "timeout": "0.1"})
    assert stop.status_code == 200  # nothing to wait for


async def test_mistakes_are_json_errors_with_a_code(
    serve: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    await serve()
    cases = [
        ("GET", "/v1/workspaces/nope", 404, "unknown_id"),
        ("GET", "/v1/nothing", 404, "not_found"),
        ("POST", "/v1/workspaces", 405, "method_not_allowed"),
        ("DELETE", "/v1/workspaces/nope", 405, "method_not_allowed"),
        ("GET", "/v1/workspaces?limit=1", 400, "bad_request"),
        ("GET", "/v1/workspaces/x/wait?for=ready", 400, "bad_request"),
        ("GET", "/v1/workspaces/x/wait?timeout=-1", 400, "bad_request"),
        ("GET", "/v1/workspaces/x/wait?timeout=soon", 400, "bad_request"),
        ("GET", "/v1/workspaces/x/wait?timeout=1&timeout=2", 400, "bad_request"),
        ("GET", "/v1/watch?since=-1", 400, "bad_request"),
        ("GET", "/v1/watch?initial=maybe", 400, "bad_request"),
        ("GET", "/v1/workspaces/" + "x" * 2000, 400, "bad_request"),
    ]
    for method, path, status, code in cases:
        response = await http.request(method, path)
        assert (response.status_code, response.json()["code"]) == (status, code), path
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]
    assert (await http.post("/v1/workspaces")).headers["allow"] == "GET"
    # an id with a "/" in it is one segment, percent-encoded
    assert (await http.get("/v1/workspaces/a%2Fb")).json()["code"] == "unknown_id"


async def test_a_client_that_disconnects_cancels_its_wait_and_ends_its_stream(
    serve: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    serving: Serving = await serve()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(http.get, "/v1/workspaces/never/wait")  # 60 s by default
            await serving.api.waits.wait_value(1)
            nursery.cancel_scope.cancel()  # the client goes: its connection is closed
        # the service saw the disconnect and cancelled the wait (long before its 60 s)
        await serving.api.waits.wait_value(0)

        async with http.stream("GET", "/v1/watch") as response:
            await lines_until(response.aiter_lines(), synced)
            assert serving.api.followers.value == 1
        await serving.api.followers.wait_value(0)


SECRETS = {
    "pod annotation": "s3cr3t-owner-token",
    "container annotation": "s3cr3t-db-password",
    "label": "s3cr3t-api-key",
    "env": "s3cr3t-env-value",
}


async def test_nothing_secret_leaves_by_any_route(
    pods: Pods, serve: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    serving: Serving = await serve()
    spec = ContainerSpec(
        annotations={"db_password": SECRETS["container annotation"]},
        env={"GITPOD_TOKEN": SECRETS["env"]},
    )
    pod = await run(
        workspace_pod,
        pods,
        "api-s",
        labels={"x-api-key": SECRETS["label"]},
        annotations={"gitpod/ownerToken": SECRETS["pod annotation"], "gitpod/id": "api-s"},
        containers=[spec],
    )
    bodies: list[bytes] = []
    async with http.stream("GET", "/v1/watch", params={"initial": "1"}) as response:
        async for text in response.aiter_lines():
            bodies.append(text.encode())
            if '"running"' in text and "api-s" in text:
                break
    cid = pod.containers["workspace"]
    for path in (
        "/v1/workspaces",
        "/v1/workspaces/api-s",
        f"/v1/workspaces/{cid}",
        "/v1/workspaces/api-s/wait",
        "/metrics",
    ):
        bodies.append((await http.get(path)).content)
    everything = b"\n".join(bodies)
    for where, secret in SECRETS.items():
        assert secret.encode() not in everything, where
    assert b"ownerToken" not in everything and b"x-api-key" not in everything
    # what is allowed does flow: the annotation on the allow-list is there
    assert json.loads(bodies[-4])["pod_annotations"] == {"gitpod/id": "api-s"}
    assert serving.watcher.instance("api-s").pod_annotations["gitpod/ownerToken"]  # in process


async def test_readyz_flips_when_containerd_is_killed_and_back_after_its_restart(
    pods: Pods, containerd: PrivateContainerd, serve: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    serving: Serving = await serve()
    assert (await http.get("/readyz")).json() == {"ready": True}
    killed = trio.current_time()
    await run(containerd.kill9)
    with trio.fail_after(DEADLINE):
        await serving.watcher.wait_ready(False)
    flipped = trio.current_time() - killed
    down = await http.get("/readyz")
    assert down.status_code == 503
    assert down.json()["code"] == "not_ready" and down.json()["ready"] is False
    assert flipped < 5.0, f"/readyz took {flipped:.1f}s to notice"
    assert (await http.get("/healthz")).json() == {"ok": True}  # alive all the same
    # the index is still served while containerd is away (the last known state)
    assert (await http.get("/v1/workspaces")).status_code == 200

    await run(containerd.start)
    with trio.fail_after(DEADLINE):
        await serving.watcher.wait_ready(True)
    assert (await http.get("/readyz")).status_code == 200


async def test_tcp_and_the_metrics_listener_which_serves_probes_only(
    pods: Pods, serve: Callable[..., Any]
) -> None:
    await run(workspace_pod, pods, "api-m")
    serving: Serving = await serve(listen=("127.0.0.1", 0), metrics_listen=("127.0.0.1", 0))
    assert serving.listen and serving.metrics_listen
    async with httpx.AsyncClient(timeout=DEADLINE) as client:
        api = f"http://{serving.listen}"
        assert [ws["instance_id"] for ws in (await client.get(f"{api}/v1/workspaces")).json()] == [
            "api-m"
        ]
        probes = f"http://{serving.metrics_listen}"
        assert (await client.get(f"{probes}/healthz")).status_code == 200
        assert (await client.get(f"{probes}/readyz")).status_code == 200
        metrics = await client.get(f"{probes}/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "ws_watcher_" in metrics.text
        for path in ("/v1/workspaces", "/v1/workspaces/api-m", "/v1/watch"):
            response = await client.get(f"{probes}{path}")
            assert response.status_code == 404
            assert set(response.json()) == {"error", "code"}  # no workspace data
